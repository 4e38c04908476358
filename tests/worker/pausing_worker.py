"""`meshgen worker`, holding every push to the environment repository: the fault tests kill a worker
(or restart Redis) exactly there. Production code carries no hook for it; this wraps the push from
outside, in the worker process, before the worker starts.

MESHGEN_TEST_PAUSE_AT=before-push turns the pause on; MESHGEN_TEST_PAUSE_MARK names a file written
(with the pid) when a push is held; MESHGEN_TEST_PAUSE_SECONDS is how long (default 60).
Run as `python tests/worker/pausing_worker.py worker ARGS...` (sync_support.WorkerProcess does).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pygit2

from meshgen.cli import main
from meshgen.gitops import sync

_push = sync._SyncEnvRepo.push


def _paused_push(self: sync._SyncEnvRepo, branch: str, new: pygit2.Oid, *, expected: pygit2.Oid | None) -> None:
    if os.environ.get("MESHGEN_TEST_PAUSE_AT") == "before-push":
        mark = os.environ.get("MESHGEN_TEST_PAUSE_MARK")
        if mark:
            Path(mark).write_text(f"{os.getpid()}\n")
        time.sleep(float(os.environ.get("MESHGEN_TEST_PAUSE_SECONDS", "60")))
    _push(self, branch, new, expected=expected)


sync._SyncEnvRepo.push = _paused_push  # type: ignore[method-assign]

if __name__ == "__main__":
    main(prog_name="meshgen")
