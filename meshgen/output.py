"""Writing a render into a folder, with a content-hash cache so only what changed is redone.

The cache lives in ROOT/.meshgen/cache/ (one file per output folder, environment and mesh
selection). For every blueprint it keeps the file's stat key and content hash, the
diagnostics and fleet facts it produced, and a hash per output file. A re-render reads
only files whose stat changed, renders only those whose content changed, writes only
output files whose content changed, and removes output files no blueprint produces any
more. meshgen.yaml changing, or a different meshgen version, invalidates everything.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from meshgen import __version__
from meshgen.blueprint.config import Config
from meshgen.blueprint.loading import CONFIG_FILE, digest_bytes, discover, load_config
from meshgen.diagnostics import Diagnostic
from meshgen.pipeline import FileOutcome, _check_selection, assemble, render_file

CACHE_DIR = ".meshgen/cache"
_FORMAT = 1


@dataclass
class RenderStats:
    units: int = 0
    files: int = 0
    written: int = 0
    removed: int = 0
    rendered: int = 0
    reused: int = 0
    warnings: list[Diagnostic] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Entry:
    stat: tuple[int, int, int]
    outcome: FileOutcome  # units carry file hashes, not bytes, once cached


@dataclass
class _Cache:
    key: str
    config_digest: str
    entries: dict[str, _Entry]
    written: dict[str, str]  # output path -> sha256 of what meshgen wrote there


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _cache_path(root: Path, out: Path, env: str | None, mesh: str | None) -> tuple[Path, str]:
    key = hashlib.sha256(f"{_FORMAT}|{__version__}|{out.resolve()}|{env}|{mesh}".encode()).hexdigest()[:24]
    return root / CACHE_DIR / f"render-{key}.pickle", key


def _load_cache(path: Path, key: str, config_digest: str, out: Path) -> _Cache | None:
    try:
        with path.open("rb") as fh:
            cache = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    if not isinstance(cache, _Cache) or cache.key != key or cache.config_digest != config_digest:
        return None
    if not out.is_dir():
        return None  # the output was removed: render everything again
    return cache


def render_to_dir(root: Path, out: Path, *, env: str | None = None, mesh: str | None = None,
                  use_cache: bool = True) -> RenderStats:
    """Render ROOT into OUT. Raises BlueprintError (and writes nothing) when a blueprint is wrong."""
    stats = RenderStats()
    t0 = time.perf_counter()
    config, config_digest = load_config(root)
    _check_selection(config, env, mesh)
    cache_file, key = _cache_path(root, out, env, mesh)
    cache = _load_cache(cache_file, key, config_digest, out) if use_cache else None
    old_entries = cache.entries if cache else {}
    t1 = time.perf_counter()

    entries: dict[str, _Entry] = {}
    todo: list[tuple[str, tuple[int, int, int]]] = []
    for rel in discover(root):
        skey = _stat_key(os.stat(root / rel))
        old = old_entries.get(rel)
        if old is not None and old.stat == skey:
            entries[rel] = old
        elif old is not None and old.outcome.digest == digest_bytes((root / rel).read_bytes()):
            entries[rel] = _Entry(skey, old.outcome)  # touched but not changed
        else:
            todo.append((rel, skey))
    fresh = _render_files(root, [rel for rel, _ in todo], config, env, mesh)
    for (rel, skey), outcome in zip(todo, fresh):
        entries[rel] = _Entry(skey, outcome)
    entries = dict(sorted(entries.items()))
    stats.rendered = len(fresh)
    stats.reused = len(entries) - len(fresh)
    t2 = time.perf_counter()

    result = assemble(config, (e.outcome for e in entries.values()))  # raises on any error
    stats.warnings = result.warnings
    t3 = time.perf_counter()

    written = dict(cache.written) if cache else {}
    writer = _Writer()
    wanted: dict[str, str] = {}
    for unit in result.units:
        for name, data in unit.files.items():
            rel_out = f"{unit.folder}/{name}"
            if isinstance(data, bytes):
                digest = hashlib.sha256(data).hexdigest()
                wanted[rel_out] = digest
                if written.get(rel_out) != digest:
                    writer.write(out / rel_out, data)
                    stats.written += 1
            else:  # a cached unit: the hash of what is already on disk
                wanted[rel_out] = data
        stats.units += 1
    stats.files = len(wanted)
    for rel_out in sorted(set(written) - set(wanted)):
        _remove(out, rel_out)
        stats.removed += 1
    t4 = time.perf_counter()

    if use_cache:
        for outcome in fresh:
            _hash_units(outcome)
        _save(cache_file, _Cache(key, config_digest, entries, wanted))
    t5 = time.perf_counter()
    stats.timings = {"load": t1 - t0, "render": t2 - t1, "check": t3 - t2, "write": t4 - t3, "cache": t5 - t4}
    return stats


PARALLEL_MIN_FILES = 500
"""Below this, starting worker processes costs more than it saves."""


def _render_files(root: Path, rels: list[str], config: Config, env: str | None, mesh: str | None) -> list[FileOutcome]:
    """Render files, spread over the machine's cores when there are many (a cold render)."""
    workers = min(len(os.sched_getaffinity(0)), 8)
    if len(rels) < PARALLEL_MIN_FILES or workers < 2:
        return [render_file(root, rel, config, env=env, mesh=mesh) for rel in rels]
    # Contiguous chunks keep results in input order; a few per worker balance uneven files.
    size = max(1, len(rels) // (workers * 4))
    chunks = [rels[i:i + size] for i in range(0, len(rels), size)]
    # fork: workers inherit the imported modules and the validated config, so start-up is cheap.
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                             initializer=_init_worker, initargs=(root, config, env, mesh)) as pool:
        return [outcome for chunk in pool.map(_render_chunk, chunks) for outcome in chunk]


_WORKER: tuple[Path, Config, str | None, str | None] | None = None


def _init_worker(root: Path, config: Config, env: str | None, mesh: str | None) -> None:
    global _WORKER
    _WORKER = (root, config, env, mesh)


def _render_chunk(rels: list[str]) -> list[FileOutcome]:
    assert _WORKER is not None
    root, config, env, mesh = _WORKER
    return [render_file(root, rel, config, env=env, mesh=mesh) for rel in rels]


def _hash_units(outcome: FileOutcome) -> None:
    """Keep hashes instead of bytes in the cache: small to store, quick to load."""
    for unit in outcome.units:
        unit.files = {n: (hashlib.sha256(d).hexdigest() if isinstance(d, bytes) else d) for n, d in unit.files.items()}


class _Writer:
    """Writes output files; replaces existing ones atomically so readers never see half a file."""

    def __init__(self) -> None:
        self._made: set[Path] = set()

    def write(self, path: Path, data: bytes) -> None:
        parent = path.parent
        if parent not in self._made:
            parent.mkdir(parents=True, exist_ok=True)
            self._made.add(parent)
        try:
            # A new file: nobody can be reading it, write in place (half the system calls).
            with open(path, "xb") as fh:
                fh.write(data)
            return
        except FileExistsError:
            pass
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def _remove(out: Path, rel: str) -> None:
    path = out / rel
    try:
        path.unlink()
    except FileNotFoundError:
        return
    parent = path.parent
    while parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _save(path: Path, cache: _Cache) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(cache, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


__all__ = ["RenderStats", "render_to_dir", "CONFIG_FILE"]
