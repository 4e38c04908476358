"""Auth (scopes, negative cases), jobs, syncs, health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import READ, TOKENS, WRITE, EnvRepoShas, build_app, make_settings, refreshed, unit
from argo_fakes import ArgoCDServer, application
from fastapi.testclient import TestClient

from meshgen.argocd.poller import poll_once
from meshgen.blueprint.loading import load_config
from meshgen.records import JobPR, JobRecord, Records
from meshgen.settings import Settings

READ_ENDPOINTS = ["/api/v1/rollouts", "/api/v1/rollouts/staging/payments/api", "/api/v1/jobs/j1", "/metrics", "/"]


@pytest.fixture
def client(settings: Settings, records: Records) -> Any:
    records.save_unit(unit())
    records.save_job(JobRecord(id="j1", state="succeeded"))
    app, enqueue = build_app(settings, records)
    with TestClient(app) as c:
        c.enqueue = enqueue  # type: ignore[attr-defined]
        yield refreshed(c)


def _is_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert set(body) == {"type", "title", "status", "detail"} and body["status"] == status and body["detail"]
    return body  # type: ignore[no-any-return]


# ---- auth -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", READ_ENDPOINTS)
def test_reads_need_a_token(client: TestClient, path: str) -> None:
    problem = _is_problem(client.get(path), 401)
    assert "Authorization: Bearer" in problem["detail"]
    assert client.get(path).headers["www-authenticate"].startswith("Bearer")
    _is_problem(client.get(path, headers={"Authorization": "Bearer wrong-token"}), 401)
    _is_problem(client.get(path, headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)
    _is_problem(client.get(path, headers={"Authorization": f"Bearer {TOKENS['read']}x"}), 401)  # prefix match
    assert client.get(path, headers=READ).status_code == 200
    assert client.get(path, headers={"Authorization": "Bearer another-read-token"}).status_code == 200
    assert client.get(path, headers=WRITE).status_code == 200  # write implies read


def test_writes_need_a_write_token(client: TestClient) -> None:
    _is_problem(client.post("/api/v1/syncs", json={}), 401)
    _is_problem(client.post("/api/v1/syncs", json={}, headers={"Authorization": "Bearer nope"}), 401)
    problem = _is_problem(client.post("/api/v1/syncs", json={}, headers=READ), 403)
    assert "write-scope" in problem["detail"] and problem["type"].endswith("insufficient-scope")
    assert client.enqueue.requests == []  # type: ignore[attr-defined]


def test_public_reads(settings: Settings, records: Records) -> None:
    records.save_unit(unit())
    public = make_settings(settings.root, records.prefix, api_public_reads=True)
    app, _ = build_app(public, records)
    with TestClient(app) as client:
        refreshed(client)
        for path in ("/api/v1/rollouts", "/api/v1/rollouts/staging/payments/api", "/"):
            assert client.get(path).status_code == 200
        _is_problem(client.post("/api/v1/syncs", json={}), 401)
        _is_problem(client.post("/api/v1/syncs", json={}, headers=READ), 403)


def test_no_tokens_configured_says_which_variable(settings: Settings, records: Records) -> None:
    bare = make_settings(settings.root, records.prefix, api_read_tokens=None, api_write_tokens=None)
    app, _ = build_app(bare, records)
    with TestClient(app) as client:
        assert "MESHGEN_API_READ_TOKENS" in _is_problem(client.get("/api/v1/rollouts", headers=READ), 401)["detail"]
        assert "MESHGEN_API_WRITE_TOKENS" in _is_problem(client.post("/api/v1/syncs", headers=WRITE), 401)["detail"]


def test_health_needs_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code in (200, 503)
    assert client.get("/openapi.json").status_code == 200


# ---- jobs and syncs ----------------------------------------------------------------------


def test_get_job(client: TestClient) -> None:
    body = client.get("/api/v1/jobs/j1", headers=READ).json()
    assert body["id"] == "j1" and body["state"] == "succeeded"
    assert "POST /api/v1/syncs" in _is_problem(client.get("/api/v1/jobs/nope", headers=READ), 404)["detail"]


def test_post_sync_queues_a_job(client: TestClient) -> None:
    resp = client.post("/api/v1/syncs", json={"env": "staging", "blueprint_commit": "abc"}, headers=WRITE)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["state"] == "queued" and body["url"] == f"/api/v1/jobs/{body['job_id']}"
    assert resp.headers["location"] == body["url"]
    request = client.enqueue.requests[0]  # type: ignore[attr-defined]
    assert (request.trigger, request.env, request.blueprint_commit) == ("api", "staging", "abc")
    assert client.get(body["url"], headers=READ).json()["state"] == "queued"
    assert client.post("/api/v1/syncs", headers=WRITE).status_code == 202  # no body: everything
    assert client.enqueue.requests[1].env is None  # type: ignore[attr-defined]


def test_post_sync_rejects_bad_input(client: TestClient) -> None:
    problem = _is_problem(client.post("/api/v1/syncs", json={"env": "moon"}, headers=WRITE), 422)
    assert "staging" in problem["detail"] and "production" in problem["detail"]
    _is_problem(client.post("/api/v1/syncs", json={"surprise": 1}, headers=WRITE), 422)
    _is_problem(client.post("/api/v1/syncs", content=b"{not json", headers={**WRITE, "content-type": "application/json"}), 422)


def test_redis_down_is_a_503_problem(settings: Settings, records: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from meshgen.api import deps

    # Nothing listens on port 1; no retries, so the test does not wait out a backoff.
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(deps, "get_redis", lambda _settings: dead)
    app, _ = build_app(make_settings(settings.root, records.prefix, redis_url="redis://127.0.0.1:1/0"), records)
    with TestClient(app) as client:
        problem = _is_problem(client.get("/api/v1/rollouts", headers=READ), 503)
        assert "MESHGEN_REDIS_URL" in problem["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False
        assert "meshgen_redis_up 0.0" in client.get("/metrics", headers=READ).text


# ---- readiness and metrics ---------------------------------------------------------------


def test_readyz_after_a_poll(settings: Settings, records: Records, argo: ArgoCDServer, env_repo: EnvRepoShas) -> None:
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        before = client.get("/readyz")
        assert before.status_code == 503
        assert "never polled" in before.json()["checks"]["argocd"]["detail"]
        records.save_unit(unit())
        argo.put(application("api-staging", revision=env_repo.later))
        assert poll_once(load_config(settings.root)[0], settings, records).ok  # also fetches the mirror
        refreshed(client)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json()
        checks = ready.json()["checks"]
        assert set(checks) == {"redis", "config", "env_repo", "argocd", "snapshot"}
        assert env_repo.later[:12] in checks["env_repo"]["detail"]


def test_metrics(client: TestClient, records: Records) -> None:
    records.save_job(JobRecord(id="j2", state="failed", timings={"render": 0.3, "push": 1.2},
                               prs=[JobPR(env="staging", branch="b", action="opened"),
                                    JobPR(env="staging", branch="c", action="updated")]))
    records.save_job(JobRecord(id="j3", state="running"))
    first = client.get("/metrics", headers=READ)
    assert first.headers["content-type"].startswith("text/plain")
    text = first.text
    for line in ('meshgen_jobs_total{state="succeeded"} 1.0', 'meshgen_jobs_total{state="failed"} 1.0',
                 'meshgen_jobs_in_progress{state="running"} 1.0', "meshgen_render_duration_seconds_count 1.0",
                 'meshgen_push_duration_seconds_bucket{le="2.5"} 1.0', 'meshgen_pull_requests_total{action="opened"} 1.0',
                 'meshgen_pull_requests_total{action="updated"} 1.0', 'meshgen_rollouts{state="unknown"} 1.0',
                 "meshgen_argocd_poll_errors_total 0.0"):
        assert line in text, line
    # The running job finishes: counted once, on the next scrape, and never again.
    records.save_job(JobRecord(id="j3", state="succeeded", timings={"render": 0.1}, created_at=1.0))
    for _ in range(2):
        text = client.get("/metrics", headers=READ).text
        assert 'meshgen_jobs_total{state="succeeded"} 2.0' in text
        assert "meshgen_render_duration_seconds_count 2.0" in text
        assert 'meshgen_jobs_in_progress{state="running"} 0.0' in text


# ---- the OpenAPI document -----------------------------------------------------------------


def test_openapi_is_complete(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    ops = {(path, method): op for path, item in doc["paths"].items() for method, op in item.items()}
    expected = {("/api/v1/rollouts", "get"), ("/api/v1/rollouts/{env}/{namespace}/{service}", "get"),
                ("/api/v1/jobs/{job_id}", "get"), ("/api/v1/syncs", "post"), ("/healthz", "get"),
                ("/readyz", "get"), ("/metrics", "get"), ("/", "get")}
    assert expected <= set(ops)
    assert any(p.startswith("/api/v1/webhooks/") for p, _ in ops), "the webhooks router is mounted"
    for (path, method), op in ops.items():
        responses = op["responses"]
        ok = [c for c in responses if c.startswith("2")]
        assert ok, f"{method} {path} has no success response"
        for code in ok:
            content = responses[code].get("content", {})
            if path not in ("/", "/metrics") and not path.startswith("/api/v1/webhooks"):
                assert content["application/json"]["schema"], f"{method} {path} {code} has no schema"
        for code, resp in responses.items():
            if code[0] in "45" and path != "/readyz":
                assert list(resp["content"]) == ["application/problem+json"], (path, code)
                assert resp["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
        if not path.startswith(("/healthz", "/readyz", "/openapi", "/api/v1/webhooks")):
            assert "401" in responses, f"{method} {path} does not document 401"
            assert op.get("security"), f"{method} {path} does not declare bearer auth"
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    rollout = doc["components"]["schemas"]["Rollout"]
    assert {"state", "pr", "argocd", "blueprint", "timestamps", "stale", "age_seconds"} <= set(rollout["properties"])
