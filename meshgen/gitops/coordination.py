"""Coordination between sync runs through Redis: one writer per environment repository,
coalescing of bursts, idempotency markers and webhook replay protection.

Key layout (all under the configured prefix, next to the records of meshgen.records):

    <prefix>lock:envrepo:<h>        the writer lock; value = the holder's fencing token
    <prefix>fence:envrepo:<h>       monotonically increasing fencing counter
    <prefix>sync:gen:<scope>        generation counter, +1 per requested sync
    <prefix>sync:done:<scope>       "<generation> <job id>": the newest generation a finished sync covered
    <prefix>sync:idem:<h>           JSON {job, base}: (env repository, branch, content hash) already synced
    <prefix>webhook:delivery:<forge>:<id>   a delivery id seen recently (SET NX with a TTL)

Why a lock *and* a fencing token: a lock with an expiry can be lost while its holder still
runs (a long GC pause, a partitioned worker, a Redis restart). Every sync therefore checks,
right before it moves a ref or changes a pull request, that it still holds the lock and that
no one acquired it since (the counter still equals its token). The remaining window between
that check and the ref update is covered by the environment repository's own
compare-and-swap (force-with-lease): a stale writer can at worst be refused, never overwrite
a newer push it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import Any, Self

import redis

from meshgen.gitops.envrepo import EnvRepoError

log = logging.getLogger(__name__)


class LockBusy(RuntimeError):
    """Another writer held the environment repository for longer than we were willing to wait."""


class LockLost(EnvRepoError):
    """We no longer hold the writer lock (expired, taken over, or Redis lost it); nothing more is written."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


# Acquire only when free, and hand out the next fencing token atomically with the lock.
_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
local token = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], token, 'PX', ARGV[1])
return token
"""
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Still ours, and nobody was handed a newer token since (which would mean we lost it once).
_CHECK = """
if redis.call('get', KEYS[1]) == ARGV[1] and redis.call('get', KEYS[2]) == ARGV[1] then return 1 end
return 0
"""


class WriterLock:
    """One writer per environment repository: SET-if-absent with expiry, a fencing token, a heartbeat.

    Use as a context manager; call `check()` right before every externally visible write.
    """

    def __init__(self, client: redis.Redis, prefix: str, resource: str, *, ttl: float = 30.0,
                 wait: float = 600.0) -> None:
        h = _digest(resource)
        self.client = client
        self.resource = resource
        self.key = f"{prefix}lock:envrepo:{h}"
        self.fence_key = f"{prefix}fence:envrepo:{h}"
        self.ttl_ms = max(int(ttl * 1000), 1000)
        self.wait = wait
        self.token: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> int:
        deadline = time.monotonic() + self.wait
        delay = 0.02
        while True:
            token = int(self.client.eval(_ACQUIRE, 2, self.key, self.fence_key, self.ttl_ms))
            if token:
                self.token = token
                self._start_heartbeat()
                return token
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"another sync has been writing to {self.resource} for over {self.wait:.0f} s; "
                    "the task is retried later (raise MESHGEN_LOCK_WAIT if syncs are legitimately long)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def check(self) -> None:
        """Raise LockLost unless we still hold the lock with the newest token."""
        if self.token is None:
            raise LockLost("the writer lock was never acquired; this is a meshgen bug")
        try:
            ok = self.client.eval(_CHECK, 2, self.key, self.fence_key, str(self.token))
        except redis.RedisError as exc:
            raise LockLost(
                f"cannot confirm the writer lock on {self.resource} (Redis: {type(exc).__name__}); "
                "stopped before writing, so nothing was half-pushed; the sync is retried"
            ) from exc
        if not ok:
            raise LockLost(
                f"lost the writer lock on {self.resource} (expired, taken over, or Redis restarted); "
                "stopped before writing, so nothing was half-pushed; the sync is retried"
            )

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if self.token is not None:
            try:
                self.client.eval(_RELEASE, 1, self.key, str(self.token))
            except redis.RedisError as exc:  # it expires on its own; do not mask the real outcome
                log.warning("could not release the writer lock on %s: %s", self.resource, exc)
        self.token = None

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="meshgen-lock-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        # Renew at a third of the expiry so one slow round trip does not lose the lock. A dead
        # process stops renewing, and the lock frees itself after `ttl`.
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.client.eval(_EXTEND, 1, self.key, str(self.token), self.ttl_ms):
                    log.warning("writer lock on %s was lost; the next write check will stop the sync",
                                self.resource)
                    return
            except redis.RedisError as exc:
                log.warning("could not renew the writer lock on %s: %s", self.resource, exc)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# Keep the larger generation: a slower sync that covered less must not move "done" backwards.
_MARK_DONE = """
local cur = tonumber(string.match(redis.call('get', KEYS[1]) or '0', '^%d+') or '0')
if tonumber(ARGV[1]) > cur then redis.call('set', KEYS[1], ARGV[1] .. ' ' .. ARGV[2]) end
return 1
"""


class Generations:
    """Coalescing: every request takes a generation; a sync covers every generation up to the
    newest one it saw before rendering, so the requests of a burst share one sync."""

    def __init__(self, client: redis.Redis, prefix: str, scope: str) -> None:
        h = _digest(scope)
        self.client = client
        self.gen_key = f"{prefix}sync:gen:{h}"
        self.done_key = f"{prefix}sync:done:{h}"

    def next(self) -> int:
        return int(self.client.incr(self.gen_key))

    def latest(self) -> int:
        return int(self.client.get(self.gen_key) or 0)

    def covered_by(self, gen: int) -> str | None:
        """The job id of a finished sync that covered generation `gen`, if any."""
        raw = self.client.get(self.done_key)
        if not raw:
            return None
        done, _, job = (raw.decode() if isinstance(raw, bytes) else raw).partition(" ")
        return job if int(done) >= gen else None

    def mark_done(self, gen: int, job_id: str) -> None:
        self.client.eval(_MARK_DONE, 1, self.done_key, gen, job_id)


class IdempotencyMarkers:
    """(environment repository, branch, content hash) → the job that synced it and the base it saw."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: int = 86400) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    def _key(self, repository: str, branch: str, content: str) -> str:
        return f"{self.prefix}sync:idem:{_digest(repository, branch, content)}"

    def get(self, repository: str, branch: str, content: str) -> dict[str, Any] | None:
        raw = self.client.get(self._key(repository, branch, content))
        return json.loads(raw) if raw else None

    def put(self, repository: str, branch: str, content: str, *, job: str, base: str | None) -> None:
        self.client.set(self._key(repository, branch, content), json.dumps({"job": job, "base": base}),
                        ex=self.ttl)


def remember_delivery(client: redis.Redis, prefix: str, forge: str, delivery: str, ttl: int) -> bool:
    """True the first time a delivery id is seen (within `ttl` seconds), False for a replay."""
    return bool(client.set(f"{prefix}webhook:delivery:{forge}:{_digest(delivery)}", "1", nx=True, ex=ttl))


def forget_delivery(client: redis.Redis, prefix: str, forge: str, delivery: str) -> None:
    """Undo `remember_delivery` when the delivery could not be queued, so the forge's retry counts."""
    client.delete(f"{prefix}webhook:delivery:{forge}:{_digest(delivery)}")
