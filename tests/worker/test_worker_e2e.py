"""A real `meshgen worker` process on Redis: webhook to pull request, coalescing, racing workers."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sync_support import Fleet, open_prs, prs_for, running_worker, set_split

from meshgen.api import deps
from meshgen.api.webhooks import router
from meshgen.forges.local import LocalForge
from meshgen.settings import Settings

pytestmark = pytest.mark.slow
SECRET = "whsec_e2e_1c2d3e4f"


def _push_body(sha: str) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "acme/blueprints"},
                       "head_commit": {"id": sha, "author": {"name": "Grace Hopper"}}, "pusher": {"name": "g"}}).encode()


def test_webhook_push_opens_prs_through_the_worker(fleet: Fleet) -> None:
    settings = Settings(**{**fleet.settings().model_dump(), "webhook_secret_github": SECRET})
    app = FastAPI()
    app.include_router(router, prefix="/api/v1/webhooks")
    app.dependency_overrides[deps.get_settings] = lambda: settings
    app.dependency_overrides[deps.get_redis] = lambda: fleet.client
    with running_worker(fleet.env(), fleet.log("worker")), TestClient(app) as http:
        body = _push_body("a" * 40)
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        r = http.post("/api/v1/webhooks/github", content=body,
                      headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "d1", "X-Hub-Signature-256": signature})
        assert r.status_code == 202, r.text
        job = fleet.finished(r.json()["job"])
    assert job.state == "succeeded", job.errors
    assert job.trigger == "webhook:github" and job.blueprint_commit == "a" * 40
    assert job.blueprint_author == "Grace Hopper"
    assert sorted(p.action for p in job.prs) == ["opened", "opened"]
    assert job.started_at and job.finished_at and job.timings["total"] > 0
    assert len(open_prs(fleet.root)) == 2
    pr = prs_for(fleet.root, "cart")[0]
    assert "a" * 12 in LocalForge(fleet.root / ".meshgen" / "env-repo").get(pr.number).body
    unit = fleet.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.pr is not None and unit.pr.number == pr.number
    assert unit.blueprint_commit == "a" * 40 and unit.job_id == job.id


def test_a_burst_of_pushes_coalesces_into_one_pr_update(fleet: Fleet) -> None:
    env = fleet.env(MESHGEN_SYNC_DEBOUNCE="0.5")
    with running_worker(env, fleet.log("worker")):
        first = fleet.finished(fleet.enqueue().id)
        assert first.state == "succeeded"
    # Five pushes arrive before the worker can take any (it is stopped, as if busy or restarting):
    # whatever the machine's speed, they are one burst.
    burst = []
    for step in range(1, 6):
        set_split(fleet.root, "cart", 10 + step)
        burst.append(fleet.enqueue(blueprint_commit=f"{step:040d}").id)
    with running_worker(env, fleet.log("worker-2")):
        jobs = [fleet.finished(j) for j in burst]
    assert all(j.state == "succeeded" for j in jobs)
    synced = [j for j in jobs if not any(w.startswith("coalesced") for w in j.warnings)]
    assert len(synced) == 1, [j.warnings for j in jobs]  # one sync did the work of five pushes
    # (checkout's description is refreshed too: it names the blueprint commit)
    assert {p.branch.rsplit("/", 1)[1]: p.action for p in synced[0].prs}["cart"] == "updated"
    cart = prs_for(fleet.root, "cart")
    assert len(cart) == 1 and cart[0].state == "open"
    forge = LocalForge(fleet.root / ".meshgen" / "env-repo")
    head = forge.repo[cart[0].head_sha]
    vs = next(e for e in head.tree["production/shop/cart"] if e.name.startswith("virtualservice"))
    assert b"weight: 15" in forge.repo[vs.id].data  # the latest state of the burst


def test_two_workers_racing_on_one_service_open_one_pr(fleet: Fleet) -> None:
    env = fleet.env(MESHGEN_SYNC_DEBOUNCE="0")
    with running_worker(env, fleet.log("w1")), running_worker(env, fleet.log("w2")):
        jobs = [fleet.enqueue(blueprint_commit=f"{i:040d}").id for i in range(6)]
        done = [fleet.finished(j) for j in jobs]
    assert all(j.state == "succeeded" for j in done), [j.errors for j in done]
    for service in ("cart", "checkout"):
        prs = prs_for(fleet.root, service)
        assert len(prs) == 1 and prs[0].state == "open", prs
    synced = [j for j in done if not any(w.startswith("coalesced") for w in j.warnings)]
    opened = [p for j in synced for p in j.prs if p.action == "opened"]
    assert sorted(p.branch for p in opened) == ["meshgen/production/shop/cart", "meshgen/production/shop/checkout"]
    logs = (fleet.tmp / "w1.log").read_text() + (fleet.tmp / "w2.log").read_text()
    assert logs.count("succeeded in") == 6
