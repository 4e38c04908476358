"""Sync jobs on Celery: configuration, enqueueing, and the body of the sync task.

The `worker` package only wires these into a Celery app; everything that decides *what*
happens lives here so it is typed and testable without a worker.

Life of a job:

1. `enqueue_sync` records a JobRecord (queued), takes a generation number, and sends the task
   with a short countdown (debounce), so a burst of pushes arrives while the first is waiting.
2. `run_sync_job` takes the environment repository's writer lock. If a sync that *started
   after* this request was enqueued has already finished, the request is covered: the job is
   marked coalesced into that sync, and nothing is written. Otherwise it notes the newest
   generation, renders the current blueprints (which include every request up to it), syncs,
   and marks that generation done: one PR update for the whole burst. "Current" is ROOT on
   disk, or with MESHGEN_BLUEPRINTS_URL the branch tip fetched after noting the generation
   (meshgen.gitops.blueprints): the pushed commit or newer, recorded as the job's commit.
3. Errors worth retrying (forge, repository, fetch, lock, Redis) leave the job queued and the task
   is retried with backoff; blueprint errors and a pushed commit that is not on the branch fail
   the job at once (a retry would fail the same way).
4. The rule for every job: whatever is raised (retries exhausted, a bug, a RecursionError, an
   interrupt), the record ends in a terminal state with the error (meshgen.records.end_unfinished),
   and the worker goes on with the next task.

Tasks are acknowledged late (after they finish) and re-queued when the worker dies, so a
killed worker's sync runs again; the lifecycle is idempotent (a branch holding the right tree
is not pushed again, an open PR is updated, never duplicated).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery  # type: ignore[import-untyped]

from meshgen.blueprint.loading import load_config
from meshgen.diagnostics import BlueprintError
from meshgen.forges.base import ForgeError
from meshgen.gitops.blueprints import BlueprintsSourceError
from meshgen.gitops.coordination import Generations, LockBusy, WriterLock
from meshgen.gitops.envrepo import EnvRepoError
from meshgen.gitops.sync import env_repo_identity, new_job_id, sync_repository
from meshgen.gitops.transport import GitTransportError
from meshgen.records import JobRecord, Records, end_unfinished
from meshgen.settings import Settings

log = logging.getLogger(__name__)

TASK_NAME = "meshgen.sync"
#: The Argo CD poll (meshgen.argocd.poller.poll_from_settings), scheduled by `celery beat`.
POLL_TASK_NAME = "meshgen.argocd.poll"
POLL_SCHEDULE_ENTRY = "meshgen-argocd-poll"
#: The canary controller's timer (meshgen.canary.controller): a sync pass that also reconciles canaries.
CANARY_TASK_NAME = "meshgen.canary.tick"
CANARY_SCHEDULE_ENTRY = "meshgen-canary-tick"
MAX_RETRIES = 5
#: Failures that may go away on their own: retried with backoff.
RETRYABLE: tuple[type[BaseException], ...] = (EnvRepoError, ForgeError, LockBusy, redis.RedisError)


@dataclass(frozen=True)
class SyncRequest:
    """What a trigger asks for; becomes the JobRecord's trigger/commit/author."""

    trigger: str = "api"
    blueprint_commit: str | None = None
    blueprint_author: str | None = None
    env: str | None = None
    retry_rejected: bool = False  # open pull requests again for renderings reviewers rejected


def redis_client(settings: Settings) -> redis.Redis:
    # Short timeouts: a Redis outage must fail a request or a lock check quickly, not hang it.
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3,
                                health_check_interval=10)


def records_for(settings: Settings, client: redis.Redis | None = None) -> Records:
    return Records(client if client is not None else redis_client(settings), settings.redis_prefix)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: Redis broker and result backend, late acks, one task at a time per process."""
    # Every Redis key Celery writes gets our prefix too, so several meshgen installations
    # (or test runs) can share one Redis database without seeing each other's tasks.
    keyprefix = {"global_keyprefix": settings.redis_prefix}
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout, **keyprefix}
    if settings.visibility_timeout < 60:
        # A short timeout only helps if the sweep that re-queues abandoned tasks runs as often.
        transport.update(unacked_restore_interval=1, unacked_restore_throttle=1)
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": keyprefix,
        "result_expires": 86400,
        "task_default_queue": settings.queue,
        "task_acks_late": True,  # a task is done when it finished, not when it was received
        "task_reject_on_worker_lost": True,  # a killed pool process re-queues its task
        "worker_prefetch_multiplier": 1,  # a sync is long and exclusive: do not hoard messages
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }


def make_celery(settings: Settings, *, include: list[str] | None = None) -> Celery:
    app = Celery("meshgen", set_as_current=False, include=include or [])
    app.conf.update(celery_config(settings))
    return app


def _scope(env: str | None, retry_rejected: bool = False) -> str:
    # A retry is never coalesced into (covered by) a plain sync, which would not retry.
    return f"env:{env or '*'}" + (":retry-rejected" if retry_rejected else "")


def enqueue_sync(app: Celery, settings: Settings, records: Records, request: SyncRequest) -> JobRecord:
    """Record a queued job and send the sync task (after the debounce countdown)."""
    job = JobRecord(id=new_job_id(), trigger=request.trigger, state="queued",
                    blueprint_commit=request.blueprint_commit, blueprint_author=request.blueprint_author)
    records.save_job(job)
    gen = Generations(records.client, records.prefix, _scope(request.env, request.retry_rejected)).next()
    kwargs: dict[str, Any] = {"job_id": job.id, "env": request.env, "gen": gen}
    if request.retry_rejected:
        kwargs["retry_rejected"] = True  # only when set: workers of an older release accept the rest
    app.send_task(TASK_NAME, kwargs=kwargs, task_id=job.id,
                  queue=settings.queue, countdown=settings.sync_debounce if settings.sync_debounce > 0 else None)
    return job


def _best_effort(what: str, action: Any) -> Any:
    try:
        return action()
    except redis.RedisError as exc:
        log.warning("could not %s (Redis: %s)", what, exc)
        return None


def _coalesced(records: Records, job: JobRecord, into: str) -> JobRecord:
    other = _best_effort("read the covering job", lambda: records.get_job(into))
    job = job.model_copy(update={
        "state": other.state if other is not None else "succeeded",
        "prs": other.prs if other is not None else [],
        "errors": other.errors if other is not None else [],
        "warnings": [*job.warnings, f"coalesced: job {into} synced this change together with others"],
        "finished_at": other.finished_at if other is not None else None,
    })
    _best_effort("record the coalesced job", lambda: records.save_job(job))
    return job


def writer_lock_resource(root: Path) -> str:
    try:
        config, _ = load_config(root)
    except BlueprintError:
        return f"root:{root.resolve()}"  # the sync fails at rendering; still one writer at a time
    return env_repo_identity(root, config)


def run_sync_job(settings: Settings, records: Records, *, job_id: str, env: str | None = None, gen: int = 0,
                 final_attempt: bool = True, redelivered: bool = False,
                 forge_options: dict[str, Any] | None = None, retry_rejected: bool = False) -> JobRecord:
    """The sync task's body (see the module docstring). Raises a RETRYABLE error to ask for a retry."""
    job = records.get_job(job_id) or JobRecord(id=job_id, trigger="api")  # the record may have been lost
    if redelivered:
        job.warnings.append("redelivered: a previous attempt was interrupted (worker lost)")
    gens = Generations(records.client, records.prefix, _scope(env, retry_rejected))
    if (covering := gens.covered_by(gen)) is not None:
        return _coalesced(records, job, covering)
    root = settings.root
    lock = WriterLock(records.client, records.prefix, writer_lock_resource(root), ttl=settings.lock_ttl,
                      wait=settings.lock_wait)
    try:
        with lock:
            if (covering := gens.covered_by(gen)) is not None:
                return _coalesced(records, job, covering)
            latest = gens.latest()
            try:
                job = sync_repository(root, settings, env=env, trigger=job.trigger, records=records, job=job,
                                      fence=lock.check, forge_options=forge_options, skip_if_synced=True,
                                      retry_rejected=retry_rejected)
            except BlueprintError:
                gens.mark_done(latest, job.id)  # rendering this state fails; only a new push can help
                return records.get_job(job.id) or job
            except BlueprintsSourceError as exc:
                # Nothing was rendered: the generations stay open for the requests it did not cover.
                log.warning("sync job %s refused: %s", job.id, exc)
                return records.get_job(job.id) or job
            except GitTransportError as exc:
                if not exc.permanent:
                    raise  # network: worth a retry
                # Wrong token, missing permission, unknown host key: the job is recorded failed with the
                # fix in its message; retrying would only fail the same way until someone acts.
                log.warning("sync job %s failed: %s", job.id, exc)
                return records.get_job(job.id) or job
            gens.mark_done(latest, job.id)
            return job
    except RETRYABLE as exc:
        if not final_attempt:
            _requeue_record(records, job, exc)
        else:
            end_unfinished(records, job, exc)  # retries exhausted: the job ends here
        raise
    except BaseException as exc:
        # Whatever else was raised (a bug, a RecursionError, an interrupt), the record ends failed
        # with the error; Celery marks the task failed and the worker takes the next one.
        end_unfinished(records, job, exc)
        raise


def run_canary_tick(settings: Settings, records: Records) -> JobRecord | None:
    """The canary timer's body: one sync pass (canaries reconciled) under the writer lock.

    A sync already writing means canaries are being reconciled right now: the tick is skipped (None),
    never queued behind it. The pass is a recorded job (trigger `canary`); with content already synced
    onto the same base it writes no pull request and only runs the canary controller.
    """
    lock = WriterLock(records.client, records.prefix, writer_lock_resource(settings.root), ttl=settings.lock_ttl, wait=0.0)
    job = JobRecord(id=new_job_id(), trigger="canary")
    try:
        with lock:
            return sync_repository(settings.root, settings, trigger="canary", records=records, job=job,
                                   fence=lock.check, skip_if_synced=True)
    except LockBusy:
        return None
    except (BlueprintError, BlueprintsSourceError, GitTransportError) as exc:
        log.warning("canary pass %s did not run: %s", job.id, exc)  # recorded as a failed job already
        return records.get_job(job.id) or job


def _requeue_record(records: Records, fallback: JobRecord, exc: BaseException) -> None:
    def action() -> None:
        # The stored record has the errors of the attempt; if Redis lost it, ours still has the trigger.
        job = records.get_job(fallback.id) or fallback
        job.state = "queued"
        job.warnings.append(f"attempt failed, retrying: {exc}")
        records.save_job(job)

    _best_effort("record the retry", action)
