"""Faults with real processes: a worker SIGKILLed inside the push step, Redis restarted mid-run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pygit2
import pytest
import redis
from helpers import free_port
from sync_support import Fleet, WorkerProcess, env_repo, prs_for, redis_client, running_worker, wait_for

pytestmark = pytest.mark.slow


def _meshgen_branches(root: Path) -> list[str]:
    if not env_repo(root).exists():
        return []
    return [r for r in pygit2.Repository(str(env_repo(root))).references if r.startswith("refs/heads/meshgen/")]


def test_worker_killed_before_push_redelivers_into_exactly_one_pr(fleet: Fleet) -> None:
    mark = fleet.tmp / "paused"
    paused_env = fleet.env(MESHGEN_TEST_PAUSE_AT="before-push", MESHGEN_TEST_PAUSE_MARK=str(mark),
                           MESHGEN_TEST_PAUSE_SECONDS="120")
    first = WorkerProcess(paused_env, fleet.log("killed"))
    try:
        first.wait_ready()
        job = fleet.enqueue(blueprint_commit="b" * 40)
        wait_for(mark.exists, 30, "the sync to reach the push step")
    finally:
        first.kill()  # SIGKILL: no warm shutdown, the message stays unacknowledged
    assert _meshgen_branches(fleet.root) == []  # died before pushing anything
    with running_worker(fleet.env(), fleet.log("restarted")):
        done = fleet.finished(job.id, timeout=60)  # visibility timeout (4 s) + lock expiry (3 s)
    assert done.state == "succeeded", done.errors
    for service in ("cart", "checkout"):
        assert len(prs_for(fleet.root, service)) == 1
    assert done.blueprint_commit == "b" * 40



class PrivateRedis:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                                      "--save", "", "--appendonly", "no", "--daemonize", "no",
                                      "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis_client(f"redis://127.0.0.1:{self.port}/0")

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, "the private redis-server")
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_restarted_mid_run_completes_without_half_pushing(fleet: Fleet) -> None:
    with private_redis(fleet.tmp) as server:
        fleet.redis_url = f"redis://127.0.0.1:{server.port}/0"
        fleet.client = redis_client(fleet.redis_url)
        mark = fleet.tmp / "paused"
        env = fleet.env(MESHGEN_TEST_PAUSE_AT="before-push", MESHGEN_TEST_PAUSE_MARK=str(mark),
                        MESHGEN_TEST_PAUSE_SECONDS="3")
        with running_worker(env, fleet.log("worker")) as worker:
            job = fleet.enqueue(blueprint_commit="c" * 40)
            wait_for(mark.exists, 30, "the sync to reach the push step")
            mark.unlink()
            server.stop()  # everything Redis knew is gone: queue, lock, fencing counter, records
            server.start()
            # The paused sync resumes, finds its lock gone, and stops before writing.
            wait_for(lambda: "LockLost" in worker.text(), 20, "the sync to notice the lost lock")
            assert _meshgen_branches(fleet.root) == []  # nothing half-pushed
            done = fleet.finished(job.id, timeout=60)  # the retry runs against the new Redis
        assert done.state == "succeeded", done.errors
        assert any("lost the writer lock" in w for w in done.warnings)
        assert done.blueprint_commit == "c" * 40  # the trigger survived the lost record
        for service in ("cart", "checkout"):
            assert len(prs_for(fleet.root, service)) == 1
        fleet.client.close()
