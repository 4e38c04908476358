"""A real `meshgen worker` with MESHGEN_BLUEPRINTS_URL: a push webhook renders the pushed commit."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from forges._gitrepo import BareRepo
from sync_support import (
    MESHGEN_YAML,
    Fleet,
    blueprint,
    prs_for,
    redis_namespace,
    running_worker,
)

from meshgen.api import deps
from meshgen.api.webhooks import router
from meshgen.settings import Settings

pytestmark = pytest.mark.slow
SECRET = "whsec_bp_5a6b7c8d"


@pytest.fixture
def empty_fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """A fleet whose MESHGEN_ROOT holds no blueprints: they come from the blueprints repository."""
    (tmp_path / "ws").mkdir()
    with redis_namespace(request.node.name[:16]) as ns:
        yield Fleet(tmp_path / "ws", ns.prefix, ns.client, tmp_path)


def _push(http: TestClient, sha: str, delivery: str) -> str:
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "acme/blueprints"},
                       "head_commit": {"id": sha, "author": {"name": "Ada"}}}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = http.post("/api/v1/webhooks/github", content=body,
                  headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature})
    assert r.status_code == 202, r.text
    return str(r.json()["job"])


def test_a_pushed_commit_is_fetched_and_rendered_by_the_worker(empty_fleet: Fleet, tmp_path: Path) -> None:
    fleet = empty_fleet
    origin = BareRepo(tmp_path / "blueprints.git")
    first = origin.commit_files("main", {"meshgen.yaml": MESHGEN_YAML, "blueprints/cart.yaml": blueprint("cart", 10)},
                                "cart")
    settings = Settings(**{**fleet.settings().model_dump(), "webhook_secret_github": SECRET})
    app = FastAPI()
    app.include_router(router, prefix="/api/v1/webhooks")
    app.dependency_overrides[deps.get_settings] = lambda: settings
    app.dependency_overrides[deps.get_redis] = lambda: fleet.client
    env = fleet.env(MESHGEN_BLUEPRINTS_URL=f"file://{origin.repo.path}")
    with running_worker(env, fleet.log("worker")), TestClient(app) as http:
        job = fleet.finished(_push(http, first, "d1"))
        assert job.state == "succeeded" and job.blueprint_commit == first, job.errors
        second = origin.commit_files("main", {"blueprints/cart.yaml": blueprint("cart", 35)}, "cart 35")
        job = fleet.finished(_push(http, second, "d2"))
    assert job.state == "succeeded" and job.blueprint_commit == second, job.errors
    [pr] = prs_for(fleet.root, "cart", "open")
    assert second in pr.body
    repo = pygit2.Repository(str(fleet.root / ".meshgen" / "env-repo"))
    tree = repo.references[f"refs/heads/{pr.branch}"].peel(pygit2.Commit).tree
    assert b"weight: 35" in repo[tree["production/shop/cart/virtualservice-cart.yaml"].id].data  # type: ignore[union-attr]
    unit = fleet.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.blueprint_commit == second
