"""Shared by tests/sync and tests/worker: a small blueprints repository, Redis namespaces, processes.

Real parts only: files on disk, the Redis at 127.0.0.1:6379 (database 13, a unique key
prefix per test, removed afterwards), pygit2 repositories, worker subprocesses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from helpers import wait_for  # re-exported: the worker and sync tests import it from here

from meshgen.forges.base import PullRequest
from meshgen.forges.local import LocalForge
from meshgen.gitops.jobs import SyncRequest, enqueue_sync, make_celery
from meshgen.records import JobRecord, Records
from meshgen.settings import Settings

REDIS_DB_URL = "redis://127.0.0.1:6379/13"
REPO_TOP = Path(__file__).resolve().parents[1]

MESHGEN_YAML = """\
environments:
  production: {mesh: istio, path: production}
"""


def blueprint(service: str, v2: int = 10, namespace: str = "shop") -> str:
    return f"""\
service: {service}
namespace: {namespace}
team: {namespace}
versions: {{v1: {{version: v1}}, v2: {{version: v2}}}}
routes:
  - name: default
    to: {{v1: {100 - v2}, v2: {v2}}}
"""


def make_root(root: Path, services: list[str], *, extra_config: str = "") -> Path:
    (root / "blueprints").mkdir(parents=True, exist_ok=True)
    (root / "meshgen.yaml").write_text(MESHGEN_YAML + extra_config)
    for svc in services:
        set_split(root, svc, 10)
    return root


def set_split(root: Path, service: str, v2: int) -> None:
    (root / "blueprints" / f"{service}.yaml").write_text(blueprint(service, v2))


def env_repo(root: Path) -> Path:
    return root / ".meshgen" / "env-repo"


def open_prs(root: Path) -> list[PullRequest]:
    path = env_repo(root)
    return LocalForge(path).list("open") if path.exists() else []


def prs_for(root: Path, service: str, state: str | None = None) -> list[PullRequest]:
    path = env_repo(root)
    if not path.exists():
        return []
    return [p for p in LocalForge(path).list(state) if p.branch.endswith(f"/{service}")]  # type: ignore[arg-type]


def unique(tag: str) -> str:
    return f"mgtest:{tag}:{uuid.uuid4().hex[:8]}:"


def redis_client(url: str = REDIS_DB_URL) -> redis.Redis:
    return redis.Redis.from_url(url)


def clean_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@contextmanager
def redis_namespace(tag: str) -> Iterator[RedisNS]:
    """A RedisNS under a fresh prefix in the test database; its keys are removed afterwards."""
    client = redis_client()
    prefix = unique(tag)
    try:
        yield RedisNS(client, prefix)
    finally:
        clean_prefix(client, prefix)
        client.close()




def worker_env(root: Path, prefix: str, *, redis_url: str = REDIS_DB_URL, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHGEN_")}
    env.update({
        "MESHGEN_REDIS_URL": redis_url,
        "MESHGEN_REDIS_PREFIX": prefix,
        "MESHGEN_QUEUE": prefix.rstrip(":").replace(":", "-"),
        "MESHGEN_ROOT": str(root),
        "MESHGEN_SYNC_DEBOUNCE": "0.2",
        "MESHGEN_LOCK_TTL": "3",
        "MESHGEN_VISIBILITY_TIMEOUT": "4",
        "MESHGEN_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class WorkerProcess:
    """`meshgen worker` (solo pool) as a subprocess; its log goes to a file the test can read."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._handle = open(log, "ab")  # noqa: SIM115 - lives as long as the process; closed in kill/stop
        # With MESHGEN_TEST_PAUSE_AT, the same worker with a pause wrapped around its pushes.
        command = ([str(Path(__file__).parent / "worker" / "pausing_worker.py")] if "MESHGEN_TEST_PAUSE_AT" in env
                   else ["-m", "meshgen"])
        self.proc = subprocess.Popen([sys.executable, *command, "worker", "--hostname",
                                      f"w{uuid.uuid4().hex[:6]}@%h", "--without-mingle", "--without-gossip"],
                                     env=env, cwd=str(REPO_TOP), stdout=self._handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            return " ready." in self.text()

        wait_for(ready, timeout, "the worker to be ready", interval=0.1)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._handle.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._handle.close()


@contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(env, log)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@dataclass
class RedisNS:
    client: redis.Redis
    prefix: str

    @property
    def records(self) -> Records:
        return Records(self.client, self.prefix)


@dataclass
class Fleet:
    """One test's world: root, Redis namespace, worker environment, and a producer."""

    root: Path
    prefix: str
    client: redis.Redis
    tmp: Path
    redis_url: str = REDIS_DB_URL
    logs: list[Path] = field(default_factory=list)

    @property
    def records(self) -> Records:
        return Records(self.client, self.prefix)

    def env(self, **extra: str) -> dict[str, str]:
        return worker_env(self.root, self.prefix, redis_url=self.redis_url, **extra)

    def settings(self) -> Settings:
        env = self.env()
        return Settings(root=self.root, redis_url=self.redis_url, redis_prefix=self.prefix,
                        queue=env["MESHGEN_QUEUE"], sync_debounce=float(env["MESHGEN_SYNC_DEBOUNCE"]))

    def log(self, name: str) -> Path:
        path = self.tmp / f"{name}.log"
        self.logs.append(path)
        return path

    def enqueue(self, **kwargs: str | None) -> JobRecord:
        settings = self.settings()
        app = make_celery(settings)
        try:
            return enqueue_sync(app, settings, self.records, SyncRequest(**kwargs))  # type: ignore[arg-type]
        finally:
            app.close()

    def finished(self, job_id: str, timeout: float = 30.0) -> JobRecord:
        def done() -> JobRecord | None:
            job = self.records.get_job(job_id)
            return job if job is not None and job.state in ("succeeded", "partial", "failed") else None

        return wait_for(done, timeout, f"job {job_id} to finish")  # type: ignore[return-value]
