"""Writing a render into a folder, with a content-hash cache so only what changed is redone.

The cache lives in ROOT/.meshgen/cache/<key>/ (one per output folder, environment and mesh
selection). For every blueprint it keeps the file's stat key and content hash, the fleet
facts and warnings it produced, and the output files it wrote with their hashes. A
re-render stats every blueprint, reads only files whose stat changed, renders only those
whose content changed, runs the fleet checks on the cached facts, writes only output files
whose content changed and removes outputs no blueprint produces any more.

Everything in the cache is plain JSON (strings, numbers, arrays; decoded by msgspec into
tuples of the declared shape, which also validates it), kept as a base file plus a
small journal of changed entries, so a one-file change writes a few hundred bytes instead of
the whole cache. meshgen.yaml changing, another meshgen version or a missing output folder
invalidates it.

The cache sits inside the blueprints repository, where anyone who can open a pull request can
put a file (`git add -f`). So it is data, never code (no pickle), and it is authenticated: each
file carries an HMAC-SHA256 under a key kept outside the repository (see _cache_key). A cache
meshgen did not write itself, one that does not parse, or one of another format is ignored and
rebuilt; a forged one could otherwise make meshgen skip a blueprint, hide its findings or keep
stale output files.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import os
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from meshgen import __version__
from meshgen.blueprint.analysis import Facts, check_fleet
from meshgen.blueprint.loading import CONFIG_FILE, StatKey, load_config, scan
from meshgen.bootstrap import application_names
from meshgen.diagnostics import BlueprintError, Diagnostic, DiagnosticRow, from_rows, to_rows
from meshgen.files import output_digest, remove_output
from meshgen.pipeline import Summary, check_selection, output_hashes, render_batch

CACHE_DIR = ".meshgen/cache"
# 9: Facts carry ports, mesh and edge route ports; 8: authenticated JSON (issue 13);
# 7: kind: Ingress facts, overlay and Argo CD name checks
_FORMAT = 9
_MAGIC = b"meshgen-cache-v9\n"
_KEY_BYTES = 32
_JOURNAL_LIMIT = 256  # entries in the journal before it is folded into the base
_SEVERITY = Diagnostic._fields.index("severity")


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
    facts: tuple[tuple[Any, ...], ...]  # Facts as plain tuples (see _as_facts)
    warnings: tuple[DiagnosticRow, ...]
    outputs: str  # see pipeline.encode_outputs: decoded only when the file changes
    files: int
    units: int

    def output_hashes(self) -> dict[str, bytes]:
        return output_hashes(self.outputs)


# The cache holds plain tuples, decoded by msgspec straight into tuples of the declared shape
# (a file of another shape fails to decode). These turn rows back into the named types without
# a Python call per row, as NamedTuple._make does.
_as_entry = partial(tuple.__new__, _Entry)
_as_facts = partial(tuple.__new__, Facts)

# The shape of a cache file, checked while decoding: [stamp, {blueprint path: row or null}].
_FactsRow = tuple[str, str, str, str, tuple[str, ...], tuple[tuple[str, tuple[int, int]], ...],
                  tuple[tuple[str, str, str], ...], tuple[str, ...], str | None, str | None, str,
                  tuple[int, ...], str, tuple[int, ...]]
_Row = tuple[tuple[int, int, int], str, tuple[_FactsRow, ...], tuple[tuple[str, int, int, str, str, str, str], ...],
             str, int, int]
_DECODE = msgspec.json.Decoder(tuple[str, dict[str, _Row | None]])
_ENCODE = msgspec.json.Encoder()


def _cache_key() -> bytes:
    """The key that authenticates render caches: made once per user, kept outside every repository
    ($XDG_CACHE_HOME/meshgen/render-cache.key, mode 0600), so a cache file committed to a
    blueprints repository never verifies. Where it cannot be kept privately, a key for this process
    only: caches are then not reused across runs (slower, never wrong)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "meshgen")
    path = os.path.join(folder, "render-cache.key")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not _private_folder(folder):
            return _PROCESS_KEY
        key = _read_key(path)
        if key is not None:
            return key
        key = os.urandom(_KEY_BYTES)
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        try:
            os.link(tmp, path)  # first writer wins; a racing process reads the winner's key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return _read_key(path) or _PROCESS_KEY
    except OSError:
        return _PROCESS_KEY


def _private_folder(folder: str) -> bool:
    """The key's folder is a real folder (not a symlink) of this user that nobody else can write to,
    inside a folder whose entries others cannot replace (not world-writable, or sticky like /tmp).
    Otherwise another user could plant a key they know (and forge caches that verify) or a symlink."""
    own = os.lstat(folder)
    if not stat.S_ISDIR(own.st_mode) or own.st_uid != os.getuid() or own.st_mode & 0o022:
        return False
    parent = os.stat(os.path.dirname(folder))  # $XDG_CACHE_HOME itself may be a symlink: its target counts
    return not parent.st_mode & 0o002 or bool(parent.st_mode & stat.S_ISVTX)


def _read_key(path: str) -> bytes | None:
    """The stored key if it is a regular file of this user readable by nobody else (never through a symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise OSError(f"{path} is not a private key file of this user")
        key = fh.read(_KEY_BYTES + 1)
    return key if len(key) == _KEY_BYTES else None


_PROCESS_KEY = os.urandom(_KEY_BYTES)


def _seal(key: bytes, stamp: str, rows: dict[str, Any]) -> bytes:
    body = _ENCODE.encode((stamp, rows))
    return _MAGIC + hmac.new(key, body, hashlib.sha256).digest() + body


def _rows(key: bytes, data: bytes, stamp: str) -> dict[str, Any]:
    """{path: row} of a cache file meshgen wrote with KEY for STAMP; ValueError for anything else
    (another writer, a changed byte, another shape, format, meshgen version or meshgen.yaml)."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a render cache written by meshgen")
    head = len(_MAGIC)
    mac, body = data[head:head + 32], memoryview(data)[head + 32:]
    # The MAC is computed on another core while msgspec decodes (hashlib lets go of the GIL on
    # large inputs): a 10k-blueprint cache loads in about the time of the decode alone. Decoding
    # before the MAC is checked is safe: msgspec builds only the declared tuples, strings and
    # numbers, and the result is thrown away unless the MAC matches.
    digest: list[bytes] = []
    mac_thread = threading.Thread(target=lambda: digest.append(hmac.new(key, body, hashlib.sha256).digest()))
    mac_thread.start()
    try:
        decoded: tuple[str, dict[str, Any]] | None = _DECODE.decode(body)
    except msgspec.DecodeError:  # includes ValidationError: another shape
        decoded = None
    finally:
        mac_thread.join()
    if not digest or not hmac.compare_digest(mac, digest[0]):
        raise ValueError("not a render cache written by meshgen for this user")
    if decoded is None:
        raise ValueError("a render cache of another shape")
    file_stamp, rows = decoded
    if file_stamp != stamp:
        raise ValueError("another cache format, meshgen version or meshgen.yaml")
    return rows


class _Cache:
    def __init__(self, folder: Path, stamp: str) -> None:
        self.folder = folder
        self.stamp = stamp  # format, version, config digest
        self.base: dict[str, _Entry] = {}
        self.journal: dict[str, _Entry | None] = {}
        self._key = _cache_key()

    @classmethod
    def load(cls, folder: Path, stamp: str) -> _Cache:
        # Decoding ~10^5 small tuples triggers the cyclic GC again and again for nothing: tuples
        # of strings cannot form cycles. Pausing it halves the load time.
        gc.disable()
        try:
            return cls._load(folder, stamp)
        finally:
            gc.enable()

    @classmethod
    def _load(cls, folder: Path, stamp: str) -> _Cache:
        cache = cls(folder, stamp)
        try:
            base = _rows(cache._key, (folder / "base.json").read_bytes(), stamp)
            if any(row is None for row in base.values()):
                raise ValueError("a removed entry in the base")
            cache.base = dict(zip(base, map(_as_entry, base.values())))
            try:
                journal = _rows(cache._key, (folder / "journal.json").read_bytes(), stamp)
                cache.journal = {rel: None if row is None else _as_entry(row) for rel, row in journal.items()}
            except FileNotFoundError:
                pass
        except (OSError, ValueError):
            cache.base, cache.journal = {}, {}  # unreadable, foreign or stale cache: render everything
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
        try:
            if not self.base or len(journal) > _JOURNAL_LIMIT:
                _atomic(self.folder / "base.json", _seal(self._key, self.stamp, entries))
                journal = {}
            _atomic(self.folder / "journal.json", _seal(self._key, self.stamp, journal))
            stale: tuple[str, ...] = ("base.pickle", "journal.pickle")  # format 6 and before: never read again
        except (msgspec.EncodeError, UnicodeEncodeError):
            # A file name that is not valid UTF-8 cannot be kept in JSON: no cache rather than a
            # stale one (the next render renders everything).
            stale = ("base.json", "journal.json", "base.pickle", "journal.pickle")
        for name in stale:
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                pass


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def render_to_dir(root: Path, out: Path, *, env: str | None = None, mesh: str | None = None,
                  use_cache: bool = True, jobs: int | None = None) -> RenderStats:
    """Render ROOT into OUT. Raises BlueprintError (and writes nothing) when a blueprint is wrong.

    `jobs`: processes to render with (see pipeline.render_batch)."""
    try:
        return _render_to_dir(root, out, env=env, mesh=mesh, use_cache=use_cache, jobs=jobs)
    finally:
        gc.unfreeze()


def _remove_stale(out: Path, old: dict[str, _Entry], current: Mapping[str, object],
                  changed: Mapping[str, object], fresh: list[Summary]) -> int:
    """Remove the outputs no blueprint produces any more; how many. An output can move between
    blueprint files (a renamed file); two current files never share one (a fleet-check error)."""
    removed = 0
    stale = [prev for rel, prev in old.items() if rel not in current or rel in changed]
    if stale:
        produced = {rel_out for s in fresh for rel_out in output_hashes(s.outputs)}
        for prev in stale:
            for rel_out in prev.output_hashes():
                if rel_out not in produced:
                    remove_output(out, rel_out)
                    removed += 1
    return removed


def _render_to_dir(root: Path, out: Path, *, env: str | None, mesh: str | None, use_cache: bool,
                   jobs: int | None) -> RenderStats:
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

    had_output = out.is_dir()
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
    with render_batch(root, todo, config, env=env, mesh=mesh, jobs=jobs) as batch:
        fresh = batch.summaries
        stats.rendered, stats.reused = len(fresh), len(current) - len(fresh)
        t2 = time.perf_counter()

        # Every error of the run, fresh files and fleet checks alike, before anything is written.
        all_facts = list(map(_as_facts, [f for rel in current for f in (entries[rel].facts if rel in entries else ())]))
        all_facts += [f for s in fresh for f in s.facts]
        fleet_findings = check_fleet(all_facts, application_names(config))
        if (any(d.severity == "error" for d in fleet_findings)
                or any(d[_SEVERITY] == "error" for s in fresh for d in s.diagnostics)):
            raise BlueprintError(from_rows(d for s in fresh for d in s.diagnostics) + fleet_findings)
        t3 = time.perf_counter()

        changed: dict[str, _Entry | None] = {}
        to_write: list[str] = []
        unchanged: set[str] = set()  # outputs of re-rendered files whose content is the same
        for summary in fresh:
            prev = old.get(summary.path)
            if prev is None:
                # Not in this cache (a first render, or another --env/--mesh selection over the same
                # folder, which keeps its own cache): what is on disk already may be identical.
                to_write.append(summary.path)
                for rel_out, digest in output_hashes(summary.outputs).items():
                    if had_output and _disk_hash(out, rel_out) == digest:
                        unchanged.add(rel_out)
                    else:
                        stats.written += 1
            elif prev.outputs != summary.outputs:
                before, now = prev.output_hashes(), output_hashes(summary.outputs)
                to_write.append(summary.path)
                for rel_out, digest in now.items():
                    if before.get(rel_out) == digest:
                        unchanged.add(rel_out)
                    else:
                        stats.written += 1
            warnings = tuple(d for d in summary.diagnostics if d[_SEVERITY] == "warning")
            entry = _Entry(current[summary.path], summary.digest, tuple(map(tuple, summary.facts)), warnings,
                           summary.outputs, summary.files, summary.units)
            entries[summary.path] = entry
            changed[summary.path] = entry
        batch.write(out, to_write, unchanged)
    stats.removed += _remove_stale(out, old, current, changed, fresh)
    for rel in old:
        if rel not in current:
            changed[rel] = None
    stats.units = sum(e.units for e in entries.values())
    stats.files = sum(e.files for e in entries.values())
    # Sorted and de-duplicated as plain tuples (in C): a large fleet on a partly expressible
    # mesh can carry one warning per feature and service, tens of thousands in all. Entries
    # come mostly in path order, so the sort mostly finds runs already in order.
    found = [w for e in entries.values() for w in e.warnings]
    found += to_rows(d for d in fleet_findings if d.severity == "warning")
    stats.warnings = from_rows(dict.fromkeys(sorted(found)))
    t4 = time.perf_counter()

    if changed or not cache.base:  # --no-cache skips reading the cache, not keeping it current
        cache.save(dict(sorted(entries.items())), changed)
    t5 = time.perf_counter()
    stats.timings = {"load": t1 - t0, "render": t2 - t1, "check": t3 - t2, "write": t4 - t3, "cache": t5 - t4}
    return stats


def _disk_hash(out: Path, rel: str) -> bytes | None:
    """The content hash of an output file already on disk, None when there is none."""
    try:
        with open(f"{out}/{rel}", "rb") as fh:
            return output_digest(fh.read())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


__all__ = ["CONFIG_FILE", "RenderStats", "render_to_dir"]
