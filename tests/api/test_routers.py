"""The routers of meshgen.api.routes: module-level, shared by every app, so nothing of one app's
state may stick to them; the token is a dependency, checked before any parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api_support import READ, WRITE, EnvRepoShas, build_app, make_settings, write_config
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from meshgen.api.routes import canary
from meshgen.canary.commands import COMMANDS
from meshgen.records import Records
from meshgen.settings import Settings

INVALID_PARAMETERS = ["/api/v1/rollouts?limit=5000", "/api/v1/rollouts?state=nope", "/?team=" + "x" * 64]


@pytest.mark.parametrize("path", INVALID_PARAMETERS)
def test_the_token_is_checked_before_the_parameters(settings: Settings, records: Records, path: str) -> None:
    """An anonymous caller learns nothing about what the endpoint accepts: 401 whatever it sends."""
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        anonymous = client.get(path)
        assert anonymous.status_code == 401 and anonymous.json()["type"].endswith("/missing-token")
        assert client.get(path, headers=READ).status_code == 422


def test_one_canary_route_per_command() -> None:
    routes = [r for r in canary.router.routes if isinstance(r, APIRoute)]
    assert sorted(r.path.rsplit("/", 1)[1] for r in routes) == sorted(COMMANDS)
    assert all(r.name == "canary_" + r.path.rsplit("/", 1)[1] for r in routes)  # operationIds as before


def test_each_app_validates_syncs_against_its_own_environments(
        settings: Settings, records: Records, tmp_path: Path, env_repo: EnvRepoShas, prefix: str) -> None:
    other_root = tmp_path / "other"
    other_root.mkdir()
    write_config(other_root, env_repo.path, None, environments={"moon": {}, "mars": {}})
    first, _ = build_app(settings, records)
    second, _ = build_app(make_settings(other_root, prefix), records)

    def env_enum(doc: Any) -> list[str]:
        schema = doc["paths"]["/api/v1/syncs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return list(schema["properties"]["env"]["anyOf"][0]["enum"])

    assert env_enum(second.openapi()) == ["mars", "moon"]
    assert env_enum(first.openapi()) == ["production", "staging"]
    with TestClient(first) as one, TestClient(second) as two:
        assert one.post("/api/v1/syncs", json={"env": "moon"}, headers=WRITE).status_code == 422
        assert two.post("/api/v1/syncs", json={"env": "moon"}, headers=WRITE).status_code == 202
        assert two.post("/api/v1/syncs", json={"env": "staging"}, headers=WRITE).status_code == 422
