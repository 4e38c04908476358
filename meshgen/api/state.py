"""What one API app holds (`ApiState`) and the typed dependencies its routers receive it through.

`create_app` builds one ApiState from Settings and ROOT/meshgen.yaml and keeps it on
`app.state.meshgen`; an endpoint asks for it by type:

    AppState     the state, no token needed (/readyz)
    ReadAccess   the state, once the bearer token has read scope (401/403 problem otherwise)
    WriteAccess  the state, once the bearer token has write scope

FastAPI resolves dependencies before it validates path, query and body parameters, so a
`ReadAccess` or `WriteAccess` endpoint checks the token before it looks at anything else in the
request. The dependencies are coroutines, so FastAPI awaits them on the event loop instead of
handing them to its thread pool: on the hot path (one rollout, a dict lookup) a thread hop
would cost more than the lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from meshgen.api.metrics import JobTally, MeshgenCollector
from meshgen.api.models import SyncRequestBody, sync_request_body
from meshgen.api.security import Problem, TokenAuth
from meshgen.api.view import RolloutView
from meshgen.argocd.mirror import Containment, env_repo_remote, try_open_mirror
from meshgen.blueprint.config import Config
from meshgen.diagnostics import BlueprintError
from meshgen.gitops.envrepo import EnvRepo
from meshgen.records import Records
from meshgen.settings import Settings


class _Mirror:
    """The environment repository's mirror, opened on first use and retried until it exists:
    the API may start before the worker or the poller has created it."""

    def __init__(self, config: Config | None, settings: Settings) -> None:
        self._config = config
        self._settings = settings
        self.repo: EnvRepo | None = None
        self.error: str | None = None

    def open(self) -> EnvRepo | None:
        if self.repo is None and self._config is not None:
            self.repo, self.error = try_open_mirror(self._config, self._settings)
        return self.repo


@dataclass
class ApiState:
    settings: Settings
    config: Config | None
    config_error: str | None
    auth: TokenAuth
    records: Records
    view: RolloutView
    registry: CollectorRegistry
    #: POST /api/v1/syncs' body: its `env` is an enum of meshgen.yaml's environments.
    sync_body: type[SyncRequestBody]
    _mirror: _Mirror

    def mirror(self) -> EnvRepo | None:
        return self._mirror.open()

    def mirror_error(self) -> str:
        return self._mirror.error or "meshgen.yaml could not be read"

    def loaded_view(self) -> RolloutView:
        """The rollout view, loaded from Redis if it has not been yet (503 problem when Redis is down)."""
        try:
            self.view.ensure_loaded()
        except redis.RedisError as exc:
            raise Problem(503, "Service Unavailable", f"Redis is unreachable ({exc}); check MESHGEN_REDIS_URL",
                          slug="redis-unavailable") from exc
        return self.view


def build_state(settings: Settings, records: Records) -> ApiState:
    config, config_error = _load_config(settings)
    mirror = _Mirror(config, settings)
    view = RolloutView(records, config, Containment(mirror.open),
                       env_repo_url=env_repo_remote(config, settings) if config else None)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeshgenCollector(records, JobTally(records), lambda: view.snapshot.counts(),
                                       view.argocd_configured))
    return ApiState(settings, config, config_error, TokenAuth(settings), records, view, registry,
                    sync_request_body(list(config.environments) if config else []), mirror)


def _load_config(settings: Settings) -> tuple[Config | None, str | None]:
    from meshgen.blueprint.loading import load_config

    try:
        return load_config(settings.root)[0], None
    except BlueprintError as exc:
        return None, "; ".join(str(d) for d in exc.diagnostics)


async def api_state(request: Request) -> ApiState:
    return request.app.state.meshgen  # type: ignore[no-any-return]


async def read_access(request: Request) -> ApiState:
    state: ApiState = request.app.state.meshgen
    state.auth.check(request.headers.get("authorization"), "read")
    return state


async def write_access(request: Request) -> ApiState:
    state: ApiState = request.app.state.meshgen
    state.auth.check(request.headers.get("authorization"), "write")
    return state


AppState = Annotated[ApiState, Depends(api_state)]
ReadAccess = Annotated[ApiState, Depends(read_access)]
WriteAccess = Annotated[ApiState, Depends(write_access)]
