"""Writing a render into a folder, with a content-hash cache so only what changed is redone.

The cache lives in ROOT/.meshgen/cache/<key>/ (one per output folder, environment and mesh
selection). For every blueprint it keeps the file's stat key and content hash, the fleet
facts and warnings it produced, and the output files it wrote with their hashes. A
re-render stats every blueprint, reads only files whose stat changed, renders only those
whose content changed, runs the fleet checks on the cached facts, writes only output files
whose content changed and removes outputs no blueprint produces any more.

Everything in the cache is tuples of strings, ints and bytes (fast to load), kept as a base
file plus a small journal of changed entries, so a one-file change writes a few hundred
bytes instead of the whole cache. meshgen.yaml changing, another meshgen version or a
missing output folder invalidates it.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from meshgen import __version__
from meshgen.blueprint.analysis import Facts, check_fleet
from meshgen.blueprint.loading import CONFIG_FILE, StatKey, load_config, scan
from meshgen.diagnostics import BlueprintError, Diagnostic
from meshgen.pipeline import check_selection, render_files

CACHE_DIR = ".meshgen/cache"
_FORMAT = 4
_JOURNAL_LIMIT = 256  # entries in the journal before it is folded into the base


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


class _Entry(NamedTuple):
    """One blueprint file as the cache remembers it."""

    stat: StatKey
    digest: str
    facts: tuple[Facts, ...]
    warnings: tuple[Diagnostic, ...]
    outputs: bytes  # pickled ((output path, blake2b-128 of content), ...): decoded only when the file changes
    files: int
    units: int

    def output_hashes(self) -> dict[str, bytes]:
        return dict(pickle.loads(self.outputs))


def _content_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class _Cache:
    def __init__(self, folder: Path, stamp: str) -> None:
        self.folder = folder
        self.stamp = stamp  # format, version, config digest
        self.base: dict[str, _Entry] = {}
        self.journal: dict[str, _Entry | None] = {}

    @classmethod
    def load(cls, folder: Path, stamp: str) -> _Cache:
        # Unpickling ~10^5 small tuples triggers the cyclic GC again and again for nothing:
        # tuples of strings cannot form cycles. Pausing it halves the load time.
        gc.disable()
        try:
            return cls._load(folder, stamp)
        finally:
            gc.enable()

    @classmethod
    def _load(cls, folder: Path, stamp: str) -> _Cache:
        cache = cls(folder, stamp)
        try:
            base_stamp, base = pickle.loads((folder / "base.pickle").read_bytes())
            if base_stamp != stamp:
                return cache
            cache.base = base
            try:
                j_stamp, journal = pickle.loads((folder / "journal.pickle").read_bytes())
                if j_stamp == stamp:
                    cache.journal = journal
            except FileNotFoundError:
                pass
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError):
            cache.base, cache.journal = {}, {}  # unreadable cache: render everything
        return cache

    def entries(self) -> dict[str, _Entry]:
        merged = dict(self.base)
        for rel, entry in self.journal.items():
            if entry is None:
                merged.pop(rel, None)
            else:
                merged[rel] = entry
        return merged

    def save(self, entries: dict[str, _Entry], changed: dict[str, _Entry | None]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        journal = {**self.journal, **changed}
        if not self.base or len(journal) > _JOURNAL_LIMIT:
            _atomic(self.folder / "base.pickle", pickle.dumps((self.stamp, entries), protocol=pickle.HIGHEST_PROTOCOL))
            journal = {}
        _atomic(self.folder / "journal.pickle", pickle.dumps((self.stamp, journal), protocol=pickle.HIGHEST_PROTOCOL))


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def render_to_dir(root: Path, out: Path, *, env: str | None = None, mesh: str | None = None,
                  use_cache: bool = True) -> RenderStats:
    """Render ROOT into OUT. Raises BlueprintError (and writes nothing) when a blueprint is wrong."""
    try:
        return _render_to_dir(root, out, env=env, mesh=mesh, use_cache=use_cache)
    finally:
        gc.unfreeze()


def _render_to_dir(root: Path, out: Path, *, env: str | None, mesh: str | None, use_cache: bool) -> RenderStats:
    stats = RenderStats()
    t0 = time.perf_counter()
    config, config_digest = load_config(root)
    check_selection(config, env, mesh)
    key = hashlib.sha256(f"{out.resolve()}|{env}|{mesh}".encode()).hexdigest()[:24]
    stamp = f"{_FORMAT}|{__version__}|{config_digest}"
    cache = _Cache.load(root / CACHE_DIR / key, stamp) if use_cache and out.is_dir() else _Cache(root / CACHE_DIR / key, stamp)
    old = cache.entries()
    # The cache is ~10^5 long-lived tuples; keep the cyclic GC from rescanning them on every
    # collection this run triggers (undone in render_to_dir).
    gc.freeze()
    t1 = time.perf_counter()

    current = scan(root)
    entries: dict[str, _Entry] = {}
    todo: list[str] = []
    for rel, skey in current.items():
        prev = old.get(rel)
        if prev is not None and prev.stat == skey:
            entries[rel] = prev
        elif prev is not None and prev.digest == hashlib.sha256((root / rel).read_bytes()).hexdigest():
            entries[rel] = prev._replace(stat=skey)  # touched, not changed
        else:
            todo.append(rel)
    fresh = render_files(root, todo, config, env=env, mesh=mesh)
    stats.rendered, stats.reused = len(fresh), len(current) - len(fresh)
    t2 = time.perf_counter()

    # Every error of the run, fresh files and fleet checks alike, before anything is written.
    diagnostics = [d for o in fresh for d in o.diagnostics]
    all_facts = [f for rel in current for f in (entries[rel].facts if rel in entries else ())]
    all_facts += [f for o in fresh for f in o.facts]
    diagnostics += check_fleet(all_facts)
    if any(d.severity == "error" for d in diagnostics):
        raise BlueprintError(diagnostics)
    t3 = time.perf_counter()

    writer = _Writer(out)
    changed: dict[str, _Entry | None] = {}
    # Paths the re-rendered files produce now. An output can move between blueprint files
    # (a renamed file); two current files never share one (that is a fleet-check error).
    produced: set[str] = set()
    for outcome in fresh:
        prev = old.get(outcome.path)
        before = prev.output_hashes() if prev else {}
        outputs: list[tuple[str, bytes]] = []
        for unit in outcome.units:
            for name, data in unit.files.items():
                rel_out, digest = f"{unit.folder}/{name}", _content_hash(data)
                outputs.append((rel_out, digest))
                produced.add(rel_out)
                if before.get(rel_out) != digest:
                    writer.write(rel_out, data)
                    stats.written += 1
        warnings = tuple(d for d in outcome.diagnostics if d.severity == "warning")
        blob = pickle.dumps(tuple(outputs), protocol=pickle.HIGHEST_PROTOCOL)
        entry = _Entry(current[outcome.path], outcome.digest, tuple(outcome.facts), warnings, blob, len(outputs),
                       len(outcome.units))
        entries[outcome.path] = entry
        changed[outcome.path] = entry
    for rel, prev in old.items():
        if rel not in current:
            changed[rel] = None
        if rel in changed:
            for rel_out in prev.output_hashes():
                if rel_out not in produced:
                    _remove(out, rel_out)
                    stats.removed += 1
    stats.units = sum(e.units for e in entries.values())
    stats.files = sum(e.files for e in entries.values())
    # Sorted as plain tuples (compared in C): a large fleet on a partly expressible mesh can
    # carry one warning per feature and service, tens of thousands in all.
    found = {w for e in entries.values() for w in e.warnings}
    found.update(d for d in diagnostics if d.severity == "warning")
    stats.warnings = sorted(found)
    t4 = time.perf_counter()

    if changed or not cache.base:  # --no-cache skips reading the cache, not keeping it current
        cache.save(dict(sorted(entries.items())), changed)
    t5 = time.perf_counter()
    stats.timings = {"load": t1 - t0, "render": t2 - t1, "check": t3 - t2, "write": t4 - t3, "cache": t5 - t4}
    return stats


class _Writer:
    """Writes output files; replaces existing ones atomically so readers never see half a file.

    Plain os calls on str paths: at 10^5 small files, pathlib and buffered IO objects cost
    more than the writes themselves.
    """

    _NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

    def __init__(self, out: Path) -> None:
        self._out = str(out)
        self._made: set[str] = set()

    def write(self, rel: str, data: bytes) -> None:
        path = f"{self._out}/{rel}"
        parent = path.rsplit("/", 1)[0]
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        try:
            # A new file: nobody can be reading it, write in place (half the system calls).
            fd = os.open(path, self._NEW, 0o644)
        except FileExistsError:
            tmp = f"{parent}/.{rel.rsplit('/', 1)[-1]}.tmp"
            _write_all(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), data)
            os.replace(tmp, path)
            return
        _write_all(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


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


__all__ = ["RenderStats", "render_to_dir", "CONFIG_FILE"]
