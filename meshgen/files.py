"""Writing and removing rendered files in an output folder.

Plain os calls on str paths: at 10^5 small files, pathlib and buffered IO objects cost more
than the writes themselves. Used by the process that rendered a file, so a render spread
over several processes writes in parallel too (see pipeline.render_batch).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def output_digest(data: bytes) -> bytes:
    """What the render cache compares output files by."""
    return hashlib.blake2b(data, digest_size=16).digest()


class OutputWriter:
    """Writes output files; replaces existing ones atomically so readers never see half a file."""

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


def remove_output(out: Path, rel: str) -> None:
    """Remove one output file, and the folders it leaves empty (up to OUT)."""
    path = out / rel
    try:
        path.unlink()
    except FileNotFoundError:
        return
    parent = path.parent
    while parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
