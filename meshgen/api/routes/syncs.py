"""POST /api/v1/syncs: queue a sync of the blueprints repository (write scope).

The body is read by hand, after the token is checked: it is validated only for a caller with
write scope, against the app's model (ApiState.sync_body), whose `env` enum comes from
meshgen.yaml. FastAPI therefore does not see a body parameter, and the app's OpenAPI document
takes the body's schema from `request_body_openapi`.
"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from meshgen.api.deps import EnqueueDep
from meshgen.api.models import SyncAccepted, SyncRequestBody
from meshgen.api.security import BEARER_AUTH, Problem, problem_responses
from meshgen.api.state import WriteAccess

PATH = "/api/v1/syncs"
router = APIRouter(tags=["jobs"])


@router.post(PATH, status_code=202, response_model=SyncAccepted, openapi_extra=BEARER_AUTH,
             summary="Queue a sync of the blueprints repository (write scope)",
             responses=problem_responses(401, 403, 413, 422, 503))
async def post_sync(api: WriteAccess, request: Request, response: Response, enqueue: EnqueueDep) -> SyncAccepted:
    from meshgen.gitops.jobs import SyncRequest

    raw = await request.body()
    try:
        body = api.sync_body.model_validate_json(raw) if raw.strip() not in (b"", b"null") else api.sync_body()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
    try:
        job = await run_in_threadpool(
            enqueue, SyncRequest(trigger="api", blueprint_commit=body.blueprint_commit, env=body.env,
                                retry_rejected=body.retry_rejected))
    except (redis.RedisError, OSError) as exc:
        raise Problem(503, "Service Unavailable", f"could not queue the sync ({exc}); check Redis "
                      "(MESHGEN_REDIS_URL) and retry", slug="queue-unavailable") from exc
    url = f"/api/v1/jobs/{job.id}"
    response.headers["Location"] = url
    return SyncAccepted(job_id=job.id, state=job.state, url=url)


def request_body_openapi(model: type[SyncRequestBody]) -> dict[str, Any]:
    """The operation's `requestBody` in the OpenAPI document: optional JSON of `model`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"required": False, "content": {"application/json": {"schema": schema}}}
