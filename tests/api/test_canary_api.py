"""Canaries in the rollout API: the `canary` view, people's commands (write scope, 404, 409, the
command recorded and a sync queued on the real broker queue in Redis) and the /metrics families."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_support import READ, WRITE, build_app, canary, make_settings, refreshed, unit
from fastapi.testclient import TestClient

from meshgen.api.app import create_app
from meshgen.records import CanaryStep, GateValue, Records
from meshgen.settings import Settings

BASE = "/api/v1/rollouts/staging/payments/api"


@pytest.fixture
def client(settings: Settings, records: Records) -> Any:
    records.save_unit(unit())
    records.save_unit(unit(service="web"))
    records.save_canary(canary())
    app, enqueue = build_app(settings, records)
    with TestClient(app) as c:
        c.enqueue = enqueue  # type: ignore[attr-defined]
        yield refreshed(c)


def test_rollout_shows_its_canary_and_others_have_none(client: TestClient) -> None:
    one = client.get(BASE, headers=READ).json()
    c = one["canary"]
    assert (c["phase"], c["stable"], c["to"], c["step"], c["steps"], c["weight"]) == (
        "measuring", "v1", "v2", 1, [10, 50, 100], 50)
    assert c["reason"] == "measuring step 2 of 3 for 2m"
    assert c["gates"][0] == {"name": "successRate", "value": 99.5, "threshold": ">= 99%", "ok": True,
                             "at": 1_700_000_100.0}
    assert c["gates"][1]["value"] is None and c["gates"][1]["ok"] is None
    assert [(h["step"], h["weight"], h["pr"], h["result"]) for h in c["history"]] == [
        (0, 10, 7, "passed"), (1, 50, 8, "pending")]
    assert c["history"][0]["gates"][0]["value"] == 100.0
    # the controller's internals stay out of the API
    assert "spec_hash" not in c and "healthy_since" not in c
    web = client.get("/api/v1/rollouts/staging/payments/web", headers=READ).json()
    assert "canary" not in web
    listed = {i["service"]: i for i in client.get("/api/v1/rollouts", headers=READ).json()["items"]}
    assert listed["api"]["canary"] == c and "canary" not in listed["web"]


def test_canary_changes_reach_the_api_without_a_restart(client: TestClient, records: Records) -> None:
    records.save_canary(canary("rolled-back", weight=0, step=-1, reason="successRate 91% < 99%"))
    client.app.state.meshgen.view.refresh()  # type: ignore[attr-defined]  # the version counter moved
    c = client.get(BASE, headers=READ).json()["canary"]
    assert (c["phase"], c["weight"], c["reason"]) == ("rolled-back", 0, "successRate 91% < 99%")


@pytest.mark.parametrize("command", ["pause", "resume", "abort", "promote", "retry"])
def test_commands_need_a_write_token_before_anything(client: TestClient, records: Records, command: str) -> None:
    for path in (f"{BASE}/canary/{command}", f"/api/v1/rollouts/staging/payments/nothing/canary/{command}"):
        assert client.post(path).status_code == 401
        assert client.post(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        denied = client.post(path, headers=READ)
        assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
    assert records.take_canary_command("staging", "payments", "api") is None
    assert client.enqueue.requests == []  # type: ignore[attr-defined]


def test_a_command_is_recorded_and_a_sync_queued(client: TestClient, records: Records) -> None:
    resp = client.post(f"{BASE}/canary/pause", headers=WRITE)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["command"] == "pause" and body["canary"]["phase"] == "measuring"
    assert body["url"] == f"/api/v1/jobs/{body['job_id']}" == resp.headers["location"]
    (request,) = client.enqueue.requests  # type: ignore[attr-defined]
    assert (request.trigger, request.env) == ("api", "staging")
    assert records.take_canary_command("staging", "payments", "api") == "pause"
    assert client.get(body["url"], headers=READ).json()["state"] == "queued"


def test_no_canary_is_404(client: TestClient, records: Records) -> None:
    for path in ("staging/payments/web", "production/payments/api", "staging/-/_mesh"):
        resp = client.post(f"/api/v1/rollouts/{path}/canary/abort", headers=WRITE)
        assert resp.status_code == 404 and "has no canary" in resp.json()["detail"]
    assert records.take_canary_command("staging", "payments", "web") is None
    assert client.enqueue.requests == []  # type: ignore[attr-defined]


ALLOWED: dict[str, set[str]] = {
    "waiting": {"pause", "abort", "promote"}, "progressing": {"pause", "abort", "promote"},
    "measuring": {"pause", "abort", "promote"}, "awaiting-approval": {"pause", "abort", "promote"},
    "inconclusive": {"pause", "abort", "promote"}, "paused": {"resume", "abort", "promote"},
    "promoted": set(), "rolled-back": {"retry"},
}


@pytest.mark.parametrize("phase", sorted(ALLOWED))
def test_commands_that_make_no_sense_in_the_phase_are_409(client: TestClient, records: Records, phase: str) -> None:
    records.save_canary(canary(phase))  # type: ignore[arg-type]
    for command in ("pause", "resume", "abort", "promote", "retry"):
        resp = client.post(f"{BASE}/canary/{command}", headers=WRITE)
        if command in ALLOWED[phase]:
            assert resp.status_code == 202, (phase, command, resp.text)
            assert records.take_canary_command("staging", "payments", "api") == command
        else:
            assert resp.status_code == 409, (phase, command, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            assert phase in resp.json()["detail"]
            assert records.take_canary_command("staging", "payments", "api") is None


def test_the_real_enqueue_puts_one_sync_on_the_broker_queue(root: Any, records: Records, prefix: str) -> None:
    settings = make_settings(root, prefix, queue=prefix.replace(":", "-") + "q", sync_debounce=0)
    records.save_unit(unit())
    records.save_canary(canary("rolled-back"))
    with TestClient(create_app(settings)) as http:
        resp = http.post(f"{BASE}/canary/retry", headers=WRITE)
    assert resp.status_code == 202, resp.text
    job = records.get_job(resp.json()["job_id"])
    assert job is not None and job.state == "queued" and job.trigger == "api"
    messages = records.client.lrange(f"{prefix}{settings.queue}", 0, -1)
    assert len(messages) == 1
    envelope = json.loads(messages[0])
    assert envelope["headers"]["id"] == job.id and "'env': 'staging'" in envelope["headers"]["kwargsrepr"]
    assert records.take_canary_command("staging", "payments", "api") == "retry"


def test_metrics_scrape_shows_canaries(client: TestClient, records: Records) -> None:
    other = canary("rolled-back", service="web", weight=0, step=-1,
                   gates=[GateValue(name="successRate", value=91.25, threshold=">= 99%", ok=False, at=1.0)],
                   history=[CanaryStep(step=0, weight=10, pr=3, result="passed"),
                            CanaryStep(step=1, weight=50, pr=4, result="failed"),
                            CanaryStep(step=-1, weight=0, pr=5, result="rolled-back")])
    records.save_canary(other)
    text = client.get("/metrics", headers=READ).text
    for line in ('meshgen_canary_weight{env="staging",namespace="payments",service="api"} 50.0',
                 'meshgen_canary_weight{env="staging",namespace="payments",service="web"} 0.0',
                 'meshgen_canary_gate_value{env="staging",gate="successRate",namespace="payments",service="api"} 99.5',
                 'meshgen_canary_gate_value{env="staging",gate="successRate",namespace="payments",service="web"} 91.25',
                 'meshgen_canary_transitions_total{result="passed"} 2.0',
                 'meshgen_canary_transitions_total{result="failed"} 1.0',
                 'meshgen_canary_transitions_total{result="rolled-back"} 1.0',
                 'meshgen_canary_transitions_total{result="promoted"} 0.0'):
        assert line in text, line
    assert 'gate="latencyP99"' not in text  # no data: no sample, rather than a made-up 0
    # Counted from the records, so a fresh API process (a restart) exports the same totals.
    settings = client.app.state.meshgen.settings  # type: ignore[attr-defined]
    app, _ = build_app(settings, records)
    with TestClient(app) as fresh:
        assert 'meshgen_canary_transitions_total{result="passed"} 2.0' in fresh.get("/metrics", headers=READ).text
