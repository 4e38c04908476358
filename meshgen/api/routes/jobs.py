"""GET /api/v1/jobs/{job_id}: a sync job record (POST /api/v1/syncs and the webhooks queue them)."""

from __future__ import annotations

import redis
from fastapi import APIRouter

from meshgen.api.deps import RecordsDep
from meshgen.api.security import BEARER_AUTH, Problem, problem_responses
from meshgen.api.state import ReadAccess
from meshgen.records import JobRecord

router = APIRouter(tags=["jobs"])


@router.get("/api/v1/jobs/{job_id}", response_model=JobRecord, openapi_extra=BEARER_AUTH,
            summary="A sync job: state, timings, pull requests, warnings and errors",
            responses=problem_responses(401, 403, 404, 422, 503))
def get_job(_: ReadAccess, job_id: str, records: RecordsDep) -> JobRecord:
    try:
        job = records.get_job(job_id) if len(job_id) <= 128 else None
    except redis.RedisError as exc:
        raise Problem(503, "Service Unavailable", f"Redis is unreachable ({exc})", slug="redis-unavailable") from exc
    if job is None:
        raise Problem(404, "Not Found", f"no job {job_id!r}; job ids come from POST /api/v1/syncs or webhooks, "
                      "and old jobs may have expired", slug="no-job")
    return job
