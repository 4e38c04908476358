"""The rollout API and status page: "is my change live?" per (environment, namespace, service).

`create_app(settings)` builds everything from Settings and ROOT/meshgen.yaml. Requests are
answered from the in-process snapshot (meshgen.api.view); nothing here calls Argo CD or a
forge. Routes:

    GET  /api/v1/rollouts                            list, filtered and paginated
    GET  /api/v1/rollouts/{env}/{namespace}/{service} one rollout ("-" is the empty namespace of _mesh)
    GET  /api/v1/jobs/{id}                           a sync job record
    POST /api/v1/syncs                               queue a sync (write scope)
    POST /api/v1/rollouts/{env}/{namespace}/{service}/canary/{pause,resume,abort,promote,retry}
                                                     a person's canary command (write scope)
    POST /api/v1/webhooks/{github,gitlab,gitea}      forge webhooks (meshgen.api.webhooks)
    GET  /healthz /readyz /metrics                   process, dependencies, Prometheus
    GET  /                                           the status page
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
import redis
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from meshgen import __version__
from meshgen.api import deps
from meshgen.api.limits import BodyLimitMiddleware
from meshgen.api.metrics import JobTally, MeshgenCollector, exposition
from meshgen.api.models import (
    CanaryCommandAccepted,
    Check,
    Health,
    Readiness,
    Rollout,
    RolloutPage,
    SyncAccepted,
    sync_request_body,
)
from meshgen.api.security import Problem, Scope, TokenAuth, install_problem_handlers, problem_responses
from meshgen.api.view import RolloutView, canary_view, page_after
from meshgen.argocd.mirror import Containment, env_repo_remote, try_open_mirror
from meshgen.blueprint.config import Config
from meshgen.canary.commands import COMMANDS, refusal
from meshgen.diagnostics import BlueprintError
from meshgen.gitops.envrepo import EnvRepo
from meshgen.records import CanaryCommand, JobRecord, Records
from meshgen.rollout import STATES, State
from meshgen.settings import Settings

log = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PAGE_REFRESH_SECONDS = 15
PAGE_MAX_ROWS = 2000
#: OpenAPI: operations that need a token declare this scheme (checked in-handler, see _authorize).
_SECURITY: dict[str, Any] = {"security": [{"bearerAuth": []}]}


@dataclass
class ApiState:
    settings: Settings
    config: Config | None
    config_error: str | None
    auth: TokenAuth
    records: Records
    view: RolloutView
    registry: CollectorRegistry
    _mirror: EnvRepo | None = None
    _mirror_error: str | None = None

    def mirror(self) -> EnvRepo | None:
        if self._mirror is None and self.config is not None:
            self._mirror, self._mirror_error = try_open_mirror(self.config, self.settings)
        return self._mirror

    def mirror_error(self) -> str:
        return self._mirror_error or "meshgen.yaml could not be read"


def _state(request: Request) -> ApiState:
    return request.app.state.meshgen  # type: ignore[no-any-return]


def _authorize(request: Request, scope: Scope) -> ApiState:
    """Check the bearer token; the app state on success, a 401/403 Problem otherwise.

    A plain call rather than a FastAPI dependency: dependency resolution is a measurable part of
    a request that otherwise costs a dict lookup (see bench/results/api.md).
    """
    state: ApiState = request.app.state.meshgen
    state.auth.check(request.headers.get("authorization"), scope)
    return state


def _load_config(settings: Settings) -> tuple[Config | None, str | None]:
    from meshgen.blueprint.loading import load_config

    try:
        return load_config(settings.root)[0], None
    except BlueprintError as exc:
        return None, "; ".join(str(d) for d in exc.diagnostics)


def create_app(settings: Settings | None = None, *, records: Records | None = None,
               enqueue: deps.Enqueue | None = None) -> FastAPI:
    """The API. `records` and `enqueue` replace Redis and the Celery queue (`meshgen up` runs
    jobs in-process and may keep records in memory); by default both come from settings."""
    settings = settings or deps.get_settings()
    config, config_error = _load_config(settings)
    injected = records is not None
    records = records if records is not None else deps.get_records(settings, deps.get_redis(settings))
    holder: dict[str, ApiState] = {}
    containment = Containment(lambda: holder["state"].mirror())
    view = RolloutView(records, config, containment,
                       env_repo_url=env_repo_remote(config, settings) if config else None)
    registry = CollectorRegistry(auto_describe=False)
    state = ApiState(settings, config, config_error, TokenAuth(settings), records, view, registry)
    holder["state"] = state
    registry.register(MeshgenCollector(records, JobTally(records), lambda: view.snapshot.counts(),
                                       view.argocd_configured))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with contextlib.suppress(Exception):  # Redis down at start: /readyz says so, requests retry
            await asyncio.to_thread(view.refresh)
        task = asyncio.create_task(view.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="meshgen rollout API",
        version=__version__,
        description="Is my change live? Rollout state per (environment, namespace, service), joining the "
                    "render job, the pull request and Argo CD's view of the cluster.",
        lifespan=lifespan,
        docs_url=None,  # served below from local assets
        redoc_url=None,
    )
    _offline_docs(app)
    app.state.meshgen = state
    if settings != deps.get_settings():
        # Routers written elsewhere (webhooks) resolve settings through deps; point them at ours.
        # Only when they differ: any override makes FastAPI re-inspect every dependency of every
        # request, which costs a third of the rollout endpoint's throughput.
        app.dependency_overrides[deps.get_settings] = lambda: settings
    if injected:
        app.dependency_overrides[deps.get_records] = lambda: records
        app.dependency_overrides[deps.get_redis] = lambda: records.client
    if enqueue is not None:
        app.dependency_overrides[deps.get_enqueue] = lambda: enqueue
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware)  # before any route reads a body (meshgen.api.limits)
    _routes(app, list(config.environments) if config else [])
    from meshgen.api.webhooks import router as webhooks_router

    app.include_router(webhooks_router, prefix="/api/v1/webhooks")
    from meshgen.api.prhooks import router as prhooks_router
    from meshgen.api.prpages import router as prpages_router

    app.include_router(prhooks_router, prefix="/api/v1/webhooks")
    app.include_router(prpages_router)
    _problem_openapi(app)
    return app


DOCS_ASSETS = "/docs/assets"


def _offline_docs(app: FastAPI) -> None:
    """/docs and /redoc with their JavaScript and CSS served by meshgen itself (from the
    fastapi-offline package), not from a CDN: they work on a network without internet access."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


def _problem_openapi(app: FastAPI) -> None:
    """Error responses are application/problem+json in the document too, not application/json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        problem = {"$ref": "#/components/schemas/Problem"}
        for path in doc.get("paths", {}).values():
            for op in path.values():
                responses = op.setdefault("responses", {})
                for code, resp in responses.items():
                    schemas = [c.get("schema", {}).get("$ref", "") for c in (resp.get("content") or {}).values()]
                    if code[0] in "45" and any(s.endswith(("/Problem", "/HTTPValidationError")) for s in schemas):
                        # Our handlers turn FastAPI's validation errors into problems too.
                        resp["content"] = {"application/problem+json": {"schema": problem}}
                        resp["description"] = resp.get("description") or "Problem"
                if not any(code[0] in "45" for code in responses):
                    # Routers that return problems without declaring them (the webhooks): document
                    # what every meshgen endpoint can answer.
                    for code, text in (("400", "Bad request"), ("401", "Missing or wrong credentials"),
                                       ("503", "A dependency is unavailable")):
                        responses[code] = {"description": text, "content": {"application/problem+json": {
                            "schema": problem}}}
                for code, resp in responses.items():
                    for media in (resp.get("content") or {}).values():
                        if code.startswith("2") and media.get("schema") == {}:
                            media["schema"] = {"type": "object", "properties": {"status": {"type": "string"}},
                                               "required": ["status"], "additionalProperties": True}
        doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http", "scheme": "bearer",
            "description": "A read- or write-scope token (MESHGEN_API_READ_TOKENS / MESHGEN_API_WRITE_TOKENS); "
                           "a write token also reads."}
        schemas = doc.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused in schemas and f"/{unused}\"" not in json.dumps(doc["paths"]):
                del schemas[unused]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _ensure_view(state: ApiState) -> None:
    try:
        state.view.ensure_loaded()
    except redis.RedisError as exc:
        raise Problem(503, "Service Unavailable", f"Redis is unreachable ({exc}); check MESHGEN_REDIS_URL",
                      slug="redis-unavailable") from exc


def _namespace(value: str) -> str:
    return "" if value == "-" else value


def _operations_routes(app: FastAPI) -> None:
    """/healthz, /readyz and /metrics."""

    @app.get("/healthz", response_model=Health, tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, tags=["operations"],
             summary="Redis, the environment repository and Argo CD data are reachable and fresh",
             responses={503: {"model": Readiness, "description": "Not ready: a check failed"}})
    async def readyz(request: Request, response: Response) -> Readiness:
        checks = await run_in_threadpool(_readiness, _state(request))
        ok = all(c.ok for c in checks.values())
        response.status_code = 200 if ok else 503
        return Readiness(status="ready" if ok else "not-ready", checks=checks)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (read scope)",
             response_class=Response, openapi_extra=_SECURITY,
             responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition"}, **problem_responses(401, 403)})
    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(exposition, _authorize(request, "read").registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _routes(app: FastAPI, environments: list[str]) -> None:
    _operations_routes(app)
    SyncBody = sync_request_body(environments)
    @app.get("/api/v1/rollouts", response_model=RolloutPage, tags=["rollouts"], openapi_extra=_SECURITY,
             summary="Rollouts, filtered, sorted by env/namespace/service, paginated by cursor",
             responses=problem_responses(401, 403, 422, 503))
    async def list_rollouts(
        request: Request,
        env: Annotated[str | None, Query(description="Only this environment.", max_length=63)] = None,
        team: Annotated[str | None, Query(description="Only this team.", max_length=63)] = None,
        state: Annotated[State | None, Query(description="Only this state.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page (the last key served).",
                                            max_length=512)] = None,
    ) -> Response:
        st = _authorize(request, "read")
        _ensure_view(st)
        view = st.view
        snap = view.snapshot
        keys = snap.matching(env, team, state)
        page, next_cursor = page_after(keys, cursor or None, limit)
        tail_argo, tail_plain = view.tails()
        entries = snap.entries
        items = b",".join(entries[k].head + (tail_argo if entries[k].used_argocd else tail_plain) for k in page)
        nxt = json.dumps(next_cursor)
        body = b'{"items":[' + items + f'],"total":{len(keys)},"limit":{limit},"next_cursor":{nxt}}}'.encode()
        return Response(body, media_type="application/json")

    @app.get("/api/v1/rollouts/{env}/{namespace}/{service}", response_model=Rollout, tags=["rollouts"],
             openapi_extra=_SECURITY, summary="Is the change to this service in this environment live?",
             responses=problem_responses(401, 403, 404, 422, 503))
    async def get_rollout(request: Request, env: str, namespace: str, service: str) -> Response:
        st = _authorize(request, "read")
        if not st.view.snapshot.entries:
            _ensure_view(st)
        view = st.view
        entry = view.snapshot.entries.get(f"{env}/{_namespace(namespace)}/{service}")
        if entry is None:
            raise Problem(404, "Not Found", f"meshgen has no rollout for {env}/{namespace}/{service}; check the "
                          "names (GET /api/v1/rollouts lists them) or wait for the first sync", slug="no-rollout")
        tail_argo, tail_plain = view.tails()
        return Response(entry.head + (tail_argo if entry.used_argocd else tail_plain), media_type="application/json")

    @app.get("/api/v1/jobs/{job_id}", response_model=JobRecord, tags=["jobs"], openapi_extra=_SECURITY,
             summary="A sync job: state, timings, pull requests, warnings and errors",
             responses=problem_responses(401, 403, 404, 422, 503))
    def get_job(request: Request, job_id: str, records: Annotated[Records, Depends(deps.get_records)]) -> JobRecord:
        _authorize(request, "read")
        try:
            job = records.get_job(job_id) if len(job_id) <= 128 else None
        except redis.RedisError as exc:
            raise Problem(503, "Service Unavailable", f"Redis is unreachable ({exc})", slug="redis-unavailable") from exc
        if job is None:
            raise Problem(404, "Not Found", f"no job {job_id!r}; job ids come from POST /api/v1/syncs or webhooks, "
                          "and old jobs may have expired", slug="no-job")
        return job

    async def post_sync(
        request: Request,
        response: Response,
        enqueue: Annotated[deps.Enqueue, Depends(deps.get_enqueue)],
    ) -> SyncAccepted:
        from meshgen.gitops.jobs import SyncRequest

        # Authenticate first: the body is read and validated only for a caller with write scope
        # (its errors name the environments of meshgen.yaml).
        _authorize(request, "write")
        raw = await request.body()
        try:
            body = SyncBody.model_validate_json(raw) if raw.strip() not in (b"", b"null") else SyncBody()
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

    # The body is read by hand (after authentication), so the document gets its schema here. The
    # model is built per app: its env enum comes from meshgen.yaml.
    body_schema = SyncBody.model_json_schema(ref_template="#/components/schemas/{model}")
    app.post("/api/v1/syncs", status_code=202, response_model=SyncAccepted, tags=["jobs"],
             openapi_extra={**_SECURITY, "requestBody": {
                 "required": False, "content": {"application/json": {"schema": body_schema}}}},
             summary="Queue a sync of the blueprints repository (write scope)",
             responses=problem_responses(401, 403, 413, 422, 503))(post_sync)

    for command in COMMANDS:
        _canary_route(app, command)

    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True)
    templates.filters["pr_link"] = _pr_link

    @app.get("/", response_class=HTMLResponse, tags=["status page"], openapi_extra=_SECURITY,
             summary="Status page: services x environments",
             responses=problem_responses(401, 403, 422, 503))
    async def status_page(
        request: Request,
        team: Annotated[str | None, Query(max_length=63, description="Only this team.")] = None,
    ) -> HTMLResponse:
        st: ApiState = request.app.state.meshgen
        # A browser logged in at /login (meshgen.api.prpages) carries its token in a cookie.
        from meshgen.api.prpages import COOKIE

        cookie = request.cookies.get(COOKIE)
        header = request.headers.get("authorization") or (f"Bearer {cookie}" if cookie else None)
        st.auth.check(header, "read")
        _ensure_view(st)
        html = _render_page(templates, st, team or None)
        return HTMLResponse(html)


_COMMAND_SUMMARIES: dict[str, str] = {
    "pause": "Pause the canary at its current step (write scope)",
    "resume": "Resume a paused canary (write scope)",
    "abort": "Abort the canary: roll back to stable with a rollback pull request (write scope)",
    "promote": "Promote now: the next step pull request sets the new version to 100% (write scope)",
    "retry": "Start a rolled-back canary again from its first step (write scope)",
}


def _canary_route(app: FastAPI, command: CanaryCommand) -> None:
    """POST .../canary/<command>: one route per command, so the token is checked before anything
    in the request is (an enum path parameter would be validated first)."""

    def post_command(request: Request, response: Response, env: str, namespace: str, service: str,
                     enqueue: Annotated[deps.Enqueue, Depends(deps.get_enqueue)]) -> CanaryCommandAccepted:
        from meshgen.gitops.jobs import SyncRequest

        st = _authorize(request, "write")
        ns = _namespace(namespace)
        try:
            record = st.records.get_canary(env, ns, service) if max(map(len, (env, ns, service))) <= 253 else None
        except redis.RedisError as exc:
            raise Problem(503, "Service Unavailable", f"Redis is unreachable ({exc}); check MESHGEN_REDIS_URL",
                          slug="redis-unavailable") from exc
        if record is None:
            raise Problem(404, "Not Found", f"{env}/{namespace}/{service} has no canary; a blueprint with a `canary` "
                          "section starts one at the next sync (GET /api/v1/rollouts shows which have one)",
                          slug="no-canary")
        why = refusal(record.phase, command)
        if why is not None:
            raise Problem(409, "Conflict", why, slug="canary-command-conflict")
        try:
            st.records.request_canary_command(env, ns, service, command)
            # The controller reconciles canaries on every sync: queue one for this environment
            # so the command applies now rather than at the next timer tick.
            job = enqueue(SyncRequest(trigger="api", env=env))
        except (redis.RedisError, OSError) as exc:
            raise Problem(503, "Service Unavailable", f"could not record the command or queue the sync ({exc}); "
                          "check Redis (MESHGEN_REDIS_URL) and retry", slug="queue-unavailable") from exc
        url = f"/api/v1/jobs/{job.id}"
        response.headers["Location"] = url
        return CanaryCommandAccepted(command=command, canary=canary_view(record), job_id=job.id, url=url)

    post_command.__name__ = f"canary_{command}"
    app.post(f"/api/v1/rollouts/{{env}}/{{namespace}}/{{service}}/canary/{command}", status_code=202,
             response_model=CanaryCommandAccepted, tags=["canaries"], openapi_extra=_SECURITY,
             summary=_COMMAND_SUMMARIES[command],
             description="Records the command for the canary controller and queues a sync of the environment, "
                         "whose reconciliation pass applies it. 409 when the command cannot apply in the "
                         "canary's phase (e.g. retry when it is not rolled back).",
             responses=problem_responses(401, 403, 404, 409, 422, 503))(post_command)


def _pr_link(url: str) -> str:
    """Local-forge pull requests (`file://...#pr-N`) open on this server's /prs/N; others as they are."""
    if url.startswith("file://") and "#pr-" in url:
        number = url.rsplit("#pr-", 1)[1]
        if number.isdigit():
            return f"/prs/{number}"
    return url


def _render_page(templates: jinja2.Environment, st: ApiState, team: str | None) -> str:
    view = st.view
    snap = view.snapshot
    keys = snap.matching(None, team, None)
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for key in keys:
        e = snap.entries[key]
        row = rows.setdefault((e.namespace, e.service), {})
        row[e.env] = e.data
        if len(rows) > PAGE_MAX_ROWS:
            rows.pop((e.namespace, e.service))
            break
    age = view.age()
    counts: dict[str, int] = dict.fromkeys(STATES, 0)
    for key in keys:
        counts[snap.entries[key].state] += 1
    return templates.get_template("status.html").render(
        envs=snap.envs, teams=snap.teams, team=team, rows=sorted(rows.items()), counts=counts,
        total=len(keys), truncated=len(rows) >= PAGE_MAX_ROWS, max_rows=PAGE_MAX_ROWS,
        age=age, stale=view.is_stale(age), argocd=view.argocd_configured, refresh=PAGE_REFRESH_SECONDS,
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )


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
