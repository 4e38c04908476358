"""The tasks: the sync (its body is meshgen.gitops.jobs.run_sync_job; this file only adds Celery's retry)
and the Argo CD poll that beat schedules (meshgen.argocd.poller.poll_from_settings)."""

from __future__ import annotations

import random
from functools import cache
from typing import Any

from celery import Task  # type: ignore[import-untyped]

from meshgen.argocd.poller import poll_from_settings
from meshgen.canary import controller
from meshgen.gitops.jobs import (
    CANARY_TASK_NAME,
    MAX_RETRIES,
    POLL_TASK_NAME,
    RETRYABLE,
    TASK_NAME,
    records_for,
    run_canary_tick,
    run_sync_job,
)
from meshgen.records import Records
from worker.app import app, settings

controller.install()  # every sync this worker runs renders canaries at their step and reconciles them


@cache
def _records() -> Records:
    return records_for(settings)  # one connection pool per worker process


def _backoff(retries: int) -> float:
    # 1, 2, 4, 8, 16 s (+ jitter so racing workers spread out), capped at a minute.
    return min(60.0, 2.0**retries) * random.uniform(0.8, 1.2)


# Celery ships no type hints (no py.typed): its decorators are untyped, hence the ignores on the defs.
@app.task(  # type: ignore[untyped-decorator]
    name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def sync(self: Task, *, job_id: str, env: str | None = None, gen: int = 0,
         retry_rejected: bool = False) -> dict[str, Any]:
    final = self.request.retries >= MAX_RETRIES
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        job = run_sync_job(settings, _records(), job_id=job_id, env=env, gen=gen, final_attempt=final,
                           redelivered=redelivered, retry_rejected=retry_rejected)
    except RETRYABLE as exc:
        if final:
            raise
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    return {"job": job.id, "state": job.state}


@app.task(name=CANARY_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
def canary_tick() -> dict[str, Any]:
    """One canary controller pass (beat schedules it every MESHGEN_CANARY_TICK seconds). Acknowledged late:
    a worker killed mid-pass has the pass run again, which re-reads the step from Git and re-measures."""
    try:
        job = run_canary_tick(settings, _records())
    except RETRYABLE as exc:  # the next tick is the retry
        return {"state": "failed", "error": str(exc)[:500]}
    return {"job": job.id if job else None, "state": job.state if job else "skipped"}


@app.task(name=POLL_TASK_NAME, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]
def poll_argocd() -> dict[str, Any]:
    """One Argo CD poll into Redis (beat schedules it; a lost run is simply the next one)."""
    return poll_from_settings(settings)
