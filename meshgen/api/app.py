"""The rollout API and status page: "is my change live?" per (environment, namespace, service).

`create_app(settings)` builds the app's state from Settings and ROOT/meshgen.yaml
(meshgen.api.state), adds the body limits and the problem+json handlers, includes the routers
and describes errors as problem+json in the OpenAPI document. Requests are answered from the
in-process snapshot (meshgen.api.view); nothing here calls Argo CD or a forge. Routes, by router:

    meshgen.api.routes.operations
    GET  /healthz /readyz /metrics                   process, dependencies, Prometheus
    meshgen.api.routes.rollouts
    GET  /api/v1/rollouts                            list, filtered and paginated
    GET  /api/v1/rollouts/{env}/{namespace}/{service} one rollout ("-" is the empty namespace of _mesh)
    meshgen.api.routes.jobs, meshgen.api.routes.syncs
    GET  /api/v1/jobs/{id}                           a sync job record
    POST /api/v1/syncs                               queue a sync (write scope)
    meshgen.api.routes.canary
    POST /api/v1/rollouts/{env}/{namespace}/{service}/canary/{pause,resume,abort,promote,retry}
                                                     a person's canary command (write scope)
    meshgen.api.routes.status_page
    GET  /                                           the status page
    meshgen.api.routes.docs
    GET  /docs /redoc /docs/assets/...               the OpenAPI document, browsable offline
    meshgen.api.webhooks (pull requests of the blueprints repository: meshgen.api.planhooks)
    POST /api/v1/webhooks/{kind}                     blueprints repository webhooks (a registered forge kind)
    meshgen.api.prhooks
    POST /api/v1/webhooks/{kind}/env-repo            environment repository pull request events
    meshgen.api.prpages
    GET  /login /prs /prs/{n}, POST /login /prs/{n}/{action}  the local forge's pull requests
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import OpenAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from meshgen import __version__
from meshgen.api import deps
from meshgen.api.limits import BodyLimitMiddleware
from meshgen.api.routes import canary, docs, jobs, operations, rollouts, status_page, syncs
from meshgen.api.routes.docs import DOCS_ASSETS
from meshgen.api.routes.status_page import PAGE_REFRESH_SECONDS
from meshgen.api.security import install_problem_handlers
from meshgen.api.state import ApiState, build_state
from meshgen.records import Records
from meshgen.settings import Settings

__all__ = ["DOCS_ASSETS", "PAGE_REFRESH_SECONDS", "create_app"]  # the first two for the tests


def create_app(settings: Settings | None = None, *, records: Records | None = None,
               enqueue: deps.Enqueue | None = None) -> FastAPI:
    """The API. `records` and `enqueue` replace Redis and the Celery queue (`meshgen up` runs
    jobs in-process and may keep records in memory); by default both come from settings."""
    settings = settings or deps.get_settings()
    injected = records is not None
    records = records if records is not None else deps.get_records(settings, deps.get_redis(settings))
    app = FastAPI(
        title="meshgen rollout API",
        version=__version__,
        description="Is my change live? Rollout state per (environment, namespace, service), joining the "
                    "render job, the pull request and Argo CD's view of the cluster.",
        lifespan=_lifespan,
        docs_url=None,  # served by meshgen.api.routes.docs from local assets
        redoc_url=None,
    )
    app.state.meshgen = build_state(settings, records)
    if settings != deps.get_settings():
        # Routers resolve settings, records and enqueue through deps; point them at ours. Only
        # when they differ: any override makes FastAPI re-inspect every dependency of every
        # request, which costs a third of the rollout endpoint's throughput.
        app.dependency_overrides[deps.get_settings] = lambda: settings
    if injected:
        app.dependency_overrides[deps.get_records] = lambda: records
        app.dependency_overrides[deps.get_redis] = lambda: records.client
    if enqueue is not None:
        app.dependency_overrides[deps.get_enqueue] = lambda: enqueue
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware)  # before any route reads a body (meshgen.api.limits)
    docs.mount_assets(app)
    for router in (docs.router, operations.router, rollouts.router, jobs.router, syncs.router, canary.router,
                   status_page.router):
        _include_flat(app, router)
    from meshgen.api.webhooks import router as webhooks_router

    app.include_router(webhooks_router, prefix="/api/v1/webhooks")
    from meshgen.api.prhooks import router as prhooks_router
    from meshgen.api.prpages import router as prpages_router

    app.include_router(prhooks_router, prefix="/api/v1/webhooks")
    app.include_router(prpages_router)
    _problem_openapi(app)
    return app


def _include_flat(app: FastAPI, router: APIRouter) -> None:
    """Add the router's routes to the app as the app's own, as `include_router` did before FastAPI
    0.16x. Since then it adds the router as one nested route, matched again on every request with a
    per-request include context: on GET /api/v1/rollouts/{env}/{namespace}/{service} that costs a
    quarter of the work of the request (callgrind, instructions per request), with the rollouts
    router third in line. Every route argument is carried over by name; the app's dependency
    overrides apply to the copies, as they do to routes declared on the app."""
    arguments = [name for name in inspect.signature(APIRouter.add_api_route).parameters
                 if name not in ("self", "path", "endpoint")]
    for route in router.routes:
        if not isinstance(route, APIRoute):  # a mount, say: create_app adds those itself
            raise TypeError(f"{route!r} in a meshgen.api.routes router is not an API route")
        app.router.add_api_route(route.path, route.endpoint,
                                 **{name: getattr(route, name) for name in arguments if hasattr(route, name)})


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the rollout snapshot, then keep it fresh in a background task while the app serves."""
    view = app.state.meshgen.view
    with contextlib.suppress(Exception):  # Redis down at start: /readyz says so, requests retry
        await asyncio.to_thread(view.refresh)
    task = asyncio.create_task(view.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _problem_openapi(app: FastAPI) -> None:
    """Error responses are application/problem+json in the document too, not application/json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        generated = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        state: ApiState = app.state.meshgen
        generated["paths"][syncs.PATH]["post"]["requestBody"] = syncs.request_body_openapi(state.sync_body)
        # In get_openapi's own form (its field order, no null-valued keywords), as if FastAPI had added it.
        doc: dict[str, Any] = jsonable_encoder(OpenAPI(**generated), by_alias=True, exclude_none=True)
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
