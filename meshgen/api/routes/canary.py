"""POST /api/v1/rollouts/{env}/{namespace}/{service}/canary/{pause,resume,abort,promote,retry}.

A person's canary command (write scope): recorded for the canary controller, with a sync of the
environment queued so that its reconciliation pass applies the command now rather than at the
next timer tick. One route per command rather than an enum path parameter: each has its own
summary in the document, and an unknown command is a plain 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, Response

from meshgen.api.deps import Enqueue, EnqueueDep
from meshgen.api.models import CanaryCommandAccepted
from meshgen.api.routes.rollouts import path_namespace
from meshgen.api.security import BEARER_AUTH, Problem, problem_responses
from meshgen.api.state import ApiState, WriteAccess
from meshgen.api.view import canary_view
from meshgen.canary.commands import refusal
from meshgen.records import CanaryCommand, CanaryRecord

router = APIRouter(tags=["canaries"])
_PATH = "/api/v1/rollouts/{env}/{namespace}/{service}/canary/"
_ROUTE: dict[str, Any] = {
    "status_code": 202, "response_model": CanaryCommandAccepted, "openapi_extra": BEARER_AUTH,
    "description": "Records the command for the canary controller and queues a sync of the environment, "
                   "whose reconciliation pass applies it. 409 when the command cannot apply in the "
                   "canary's phase (e.g. retry when it is not rolled back).",
    "responses": problem_responses(401, 403, 404, 409, 422, 503),
}


@dataclass(frozen=True)
class _Canary:
    api: ApiState
    env: str
    namespace: str  # as stored ("" for the _mesh folder)
    service: str
    record: CanaryRecord


def _canary(api: WriteAccess, env: str, namespace: str, service: str) -> _Canary:
    """The canary the path names, looked up once the token has write scope (404 when there is none)."""
    ns = path_namespace(namespace)
    try:
        record = api.records.get_canary(env, ns, service) if max(map(len, (env, ns, service))) <= 253 else None
    except redis.RedisError as exc:
        raise Problem(503, "Service Unavailable", f"Redis is unreachable ({exc}); check MESHGEN_REDIS_URL",
                      slug="redis-unavailable") from exc
    if record is None:
        raise Problem(404, "Not Found", f"{env}/{namespace}/{service} has no canary; a blueprint with a `canary` "
                      "section starts one at the next sync (GET /api/v1/rollouts shows which have one)",
                      slug="no-canary")
    return _Canary(api, env, ns, service, record)


Canary = Annotated[_Canary, Depends(_canary)]


@router.post(_PATH + "pause", summary="Pause the canary at its current step (write scope)", **_ROUTE)
def canary_pause(canary: Canary, response: Response, enqueue: EnqueueDep) -> CanaryCommandAccepted:
    return _command(canary, "pause", response, enqueue)


@router.post(_PATH + "resume", summary="Resume a paused canary (write scope)", **_ROUTE)
def canary_resume(canary: Canary, response: Response, enqueue: EnqueueDep) -> CanaryCommandAccepted:
    return _command(canary, "resume", response, enqueue)


@router.post(_PATH + "abort", summary="Abort the canary: roll back to stable with a rollback pull request "
                                      "(write scope)", **_ROUTE)
def canary_abort(canary: Canary, response: Response, enqueue: EnqueueDep) -> CanaryCommandAccepted:
    return _command(canary, "abort", response, enqueue)


@router.post(_PATH + "promote", summary="Promote now: the next step pull request sets the new version to 100% "
                                        "(write scope)", **_ROUTE)
def canary_promote(canary: Canary, response: Response, enqueue: EnqueueDep) -> CanaryCommandAccepted:
    return _command(canary, "promote", response, enqueue)


@router.post(_PATH + "retry", summary="Start a rolled-back canary again from its first step (write scope)", **_ROUTE)
def canary_retry(canary: Canary, response: Response, enqueue: EnqueueDep) -> CanaryCommandAccepted:
    return _command(canary, "retry", response, enqueue)


def _command(canary: _Canary, command: CanaryCommand, response: Response, enqueue: Enqueue) -> CanaryCommandAccepted:
    from meshgen.gitops.jobs import SyncRequest

    why = refusal(canary.record.phase, command)
    if why is not None:
        raise Problem(409, "Conflict", why, slug="canary-command-conflict")
    try:
        canary.api.records.request_canary_command(canary.env, canary.namespace, canary.service, command)
        # The controller reconciles canaries on every sync: queue one for this environment
        # so the command applies now rather than at the next timer tick.
        job = enqueue(SyncRequest(trigger="api", env=canary.env))
    except (redis.RedisError, OSError) as exc:
        raise Problem(503, "Service Unavailable", f"could not record the command or queue the sync ({exc}); "
                      "check Redis (MESHGEN_REDIS_URL) and retry", slug="queue-unavailable") from exc
    url = f"/api/v1/jobs/{job.id}"
    response.headers["Location"] = url
    return CanaryCommandAccepted(command=command, canary=canary_view(canary.record), job_id=job.id, url=url)
