"""A rejected rendering stays rejected in the worker, and the API's write-scoped retry reopens it (issue 10)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sync_support import Fleet, prs_for, running_worker, set_split

from meshgen.api.app import create_app
from meshgen.forges.local import LocalForge
from meshgen.settings import Settings

pytestmark = pytest.mark.slow
READ, WRITE = "read-token-rej-0123", "write-token-rej-4567"


def test_api_retry_rejected_needs_write_scope_and_reopens(fleet: Fleet) -> None:
    settings = Settings(**{**fleet.settings().model_dump(), "api_read_tokens": READ, "api_write_tokens": WRITE})
    with running_worker(fleet.env(), fleet.log("worker")), TestClient(create_app(settings)) as http:
        first = fleet.finished(fleet.enqueue().id)
        assert first.state == "succeeded", first.errors
        cart = prs_for(fleet.root, "cart")[0]
        LocalForge(fleet.root / ".meshgen" / "env-repo").close(cart.number)
        set_split(fleet.root, "checkout", 40)  # the next push changes another service
        plain = fleet.finished(fleet.enqueue(blueprint_commit="1" * 40).id)
        assert [p.action for p in plain.prs if p.branch.endswith("/cart")] == ["rejected"]
        assert len(prs_for(fleet.root, "cart")) == 1
        denied = http.post("/api/v1/syncs", json={"retry_rejected": True}, headers={"Authorization": f"Bearer {READ}"})
        assert denied.status_code == 403
        accepted = http.post("/api/v1/syncs", json={"retry_rejected": True},
                             headers={"Authorization": f"Bearer {WRITE}"})
        assert accepted.status_code == 202, accepted.text
        retried = fleet.finished(accepted.json()["job_id"])
    assert retried.state == "succeeded", retried.errors
    assert [p.action for p in retried.prs if p.branch.endswith("/cart")] == ["opened"]
    assert [p.state for p in prs_for(fleet.root, "cart")] == ["open", "closed"]
