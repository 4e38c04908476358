"""The writer lock with its fencing token, generations (coalescing) and delivery replay memory."""

from __future__ import annotations

import threading
import time

import pytest
from sync_support import RedisNS

from meshgen.gitops.coordination import (
    Generations,
    LockBusy,
    LockLost,
    WriterLock,
    forget_delivery,
    remember_delivery,
)


def test_one_holder_at_a_time_and_tokens_increase(rns: RedisNS) -> None:
    a = WriterLock(rns.client, rns.prefix, "/env.git", ttl=2, wait=0.2)
    b = WriterLock(rns.client, rns.prefix, "/env.git", ttl=2, wait=0.2)
    with a:
        a.check()
        with pytest.raises(LockBusy, match="another sync"):
            b.acquire()
        first = a.token
    with b:
        assert b.token is not None and first is not None and b.token > first
        b.check()


def test_expired_lock_taken_over_fences_the_old_holder(rns: RedisNS) -> None:
    old = WriterLock(rns.client, rns.prefix, "/env.git", ttl=1, wait=0)
    old.acquire()
    old._stop.set()  # simulate a stalled holder: no more renewals
    time.sleep(1.2)
    new = WriterLock(rns.client, rns.prefix, "/env.git", ttl=5, wait=1)
    new.acquire()
    with pytest.raises(LockLost, match="nothing was half-pushed"):
        old.check()
    new.check()
    new.release()
    with pytest.raises(LockLost):
        old.check()  # even with the lock free again, the counter moved past its token


def test_heartbeat_keeps_a_long_sync_locked(rns: RedisNS) -> None:
    with WriterLock(rns.client, rns.prefix, "/env.git", ttl=1, wait=0) as lock:
        time.sleep(1.6)
        lock.check()


def test_lock_lost_when_redis_forgets_everything(rns: RedisNS) -> None:
    with WriterLock(rns.client, rns.prefix, "/env.git", ttl=5, wait=0) as lock:
        for key in rns.client.scan_iter(match=f"{rns.prefix}*"):
            rns.client.delete(key)  # what a restart without persistence does
        with pytest.raises(LockLost):
            lock.check()


def test_waiting_writer_gets_the_lock_after_release(rns: RedisNS) -> None:
    a = WriterLock(rns.client, rns.prefix, "/env.git", ttl=5, wait=0)
    a.acquire()
    threading.Timer(0.3, a.release).start()
    with WriterLock(rns.client, rns.prefix, "/env.git", ttl=5, wait=5) as b:
        b.check()


def test_generations_cover_a_burst(rns: RedisNS) -> None:
    gens = Generations(rns.client, rns.prefix, "env:*")
    burst = [gens.next() for _ in range(3)]
    assert gens.covered_by(burst[0]) is None
    latest = gens.latest()  # a sync starts: it will render everything up to here
    later = gens.next()
    gens.mark_done(latest, "job-a")
    assert [gens.covered_by(g) for g in burst] == ["job-a"] * 3
    assert gens.covered_by(later) is None  # enqueued after the sync read the state
    gens.mark_done(1, "job-old")  # a slower sync never moves "done" backwards
    assert gens.covered_by(burst[2]) == "job-a"


def test_delivery_ids_are_remembered_once(rns: RedisNS) -> None:
    assert remember_delivery(rns.client, rns.prefix, "github", "d-1", 60)
    assert not remember_delivery(rns.client, rns.prefix, "github", "d-1", 60)
    assert remember_delivery(rns.client, rns.prefix, "gitea", "d-1", 60)  # per forge
    forget_delivery(rns.client, rns.prefix, "github", "d-1")
    assert remember_delivery(rns.client, rns.prefix, "github", "d-1", 60)
    ttl = rns.client.ttl(next(rns.client.scan_iter(match=f"{rns.prefix}webhook:delivery:github:*")))
    assert 0 < ttl <= 60
