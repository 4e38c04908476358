"""GET /healthz, /readyz and /metrics: the process, its dependencies, Prometheus."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from meshgen.api.metrics import exposition
from meshgen.api.models import Check, Health, Readiness
from meshgen.api.security import BEARER_AUTH, problem_responses
from meshgen.api.state import ApiState, AppState, ReadAccess

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness,
            summary="Redis, the environment repository and Argo CD data are reachable and fresh",
            responses={503: {"model": Readiness, "description": "Not ready: a check failed"}})
async def readyz(api: AppState, response: Response) -> Readiness:
    checks = await run_in_threadpool(_readiness, api)
    ok = all(c.ok for c in checks.values())
    response.status_code = 200 if ok else 503
    return Readiness(status="ready" if ok else "not-ready", checks=checks)


@router.get("/metrics", summary="Prometheus metrics (read scope)", response_class=Response, openapi_extra=BEARER_AUTH,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition"}, **problem_responses(401, 403)})
async def metrics(api: ReadAccess) -> Response:
    body = await run_in_threadpool(exposition, api.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _readiness(st: ApiState) -> dict[str, Check]:
    checks: dict[str, Check] = {}
    try:
        st.records.client.ping()
        checks["redis"] = Check(ok=True, detail="ping ok")
    except redis.RedisError as exc:
        checks["redis"] = Check(ok=False, detail=f"{exc}; check MESHGEN_REDIS_URL")
    checks["config"] = Check(ok=st.config is not None,
                             detail="meshgen.yaml loaded" if st.config else f"meshgen.yaml: {st.config_error}")
    mirror = st.mirror()
    if mirror is None:
        checks["env_repo"] = Check(ok=False, detail=f"environment repository mirror: {st.mirror_error()}")
    else:
        branch = st.config.env_repo.branch if st.config else "main"
        tip = mirror.tip(branch)
        checks["env_repo"] = Check(ok=tip is not None, detail=(
            f"mirror at {str(tip)[:12]} ({branch})" if tip else
            f"the mirror has no {branch!r} yet; it is fetched by the poller (meshgen serve --poll or the beat task)"))
    view = st.view
    if not view.argocd_configured:
        checks["argocd"] = Check(ok=True, detail="not configured (no `argocd` in meshgen.yaml)")
    else:
        age = view.age()
        if age is None:
            checks["argocd"] = Check(ok=False, detail="Argo CD was never polled; run meshgen serve --poll "
                                                      "or the Celery beat poll task")
        else:
            fresh = not view.is_stale(age)
            checks["argocd"] = Check(ok=fresh, detail=f"last poll {age:.0f}s ago" + (
                "" if fresh else f", older than argocd.staleAfter ({view.stale_after:.0f}s); see "
                                 "meshgen_argocd_poll_errors_total and the poller's log"))
    checks["snapshot"] = Check(ok=view.last_error is None,
                               detail=view.last_error or f"{len(view.snapshot.entries)} rollouts cached "
                                                       f"(built in {view.snapshot.build_seconds:.2f}s)")
    return checks
