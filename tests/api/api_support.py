"""Helpers shared by the API tests (imported by name: tests/ is on pythonpath)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from meshgen.api import deps
from meshgen.api.app import create_app
from meshgen.records import CanaryPhase, CanaryRecord, CanaryStep, GateValue, JobRecord, PRRef, Records, UnitRecord
from meshgen.settings import Settings

TOKENS = {"read": "read-token-0123456789", "write": "write-token-9876543210", "argocd": "argocd-token-abc"}
READ = {"Authorization": f"Bearer {TOKENS['read']}"}
WRITE = {"Authorization": f"Bearer {TOKENS['write']}"}


@dataclass(frozen=True)
class EnvRepoShas:
    path: Path
    base: str
    branch: str
    merge: str
    later: str
    sibling: str


def write_config(root: Path, env_repo: Path, argocd: dict[str, Any] | None, **extra: Any) -> None:
    config: dict[str, Any] = {
        "environments": {"staging": {}, "production": {}},
        "envRepo": {"url": str(env_repo), "branch": "main"},
        **extra,
    }
    if argocd is not None:
        config["argocd"] = argocd
    (root / "meshgen.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def make_settings(root: Path, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "root": root, "redis_url": "redis://127.0.0.1:6379/12", "redis_prefix": prefix,
        "api_read_tokens": TOKENS["read"] + ",another-read-token", "api_write_tokens": TOKENS["write"],
        "argocd_token": TOKENS["argocd"], **overrides,
    }
    return Settings(**values)


def unit(env: str = "staging", namespace: str = "payments", service: str = "api", *, team: str | None = "payments",
         pr_state: str | None = None, merge: str | None = None, head: str = "", up_to_date: bool = False,
         render_state: str = "rendered", job_id: str | None = None, number: int = 1,
         render_error: str | None = None) -> UnitRecord:
    pr = None
    if pr_state is not None:
        pr = PRRef(number=number, url=f"https://git.example.com/env/pulls/{number}", state=pr_state,  # type: ignore[arg-type]
                   branch=f"meshgen/{env}/{namespace}/{service}", head_sha=head, merge_sha=merge)
    return UnitRecord(env=env, namespace=namespace, service=service, team=team,
                      blueprint_path=f"blueprints/{namespace}/{service}.yaml", blueprint_commit="b" * 40,
                      job_id=job_id, render_state=render_state, render_error=render_error,  # type: ignore[arg-type]
                      up_to_date=up_to_date, pr=pr)


def canary(phase: CanaryPhase = "measuring", **changes: Any) -> CanaryRecord:
    """A canary of staging/payments/api at step 2 of 3 (10, 50, 100), one gate without data."""
    record = CanaryRecord(
        env="staging", namespace="payments", service="api", stable="v1", to="v2", spec_hash="h1", phase=phase,
        step=1, steps=[10, 50, 100], weight=50, failures=0, reason="measuring step 2 of 3 for 2m",
        gates=[GateValue(name="successRate", value=99.5, threshold=">= 99%", ok=True, at=1_700_000_100.0),
               GateValue(name="latencyP99", value=None, threshold="<= 500ms", ok=None, at=1_700_000_100.0)],
        history=[CanaryStep(step=0, weight=10, pr=7, result="passed", at=1_700_000_000.0,
                            gates=[GateValue(name="successRate", value=100.0, threshold=">= 99%", ok=True,
                                             at=1_700_000_050.0)]),
                 CanaryStep(step=1, weight=50, pr=8, result="pending", at=1_700_000_060.0)],
    )
    return record.model_copy(update=changes)


class FakeEnqueue:
    """Stands in for deps.get_enqueue: records the request and saves a queued job."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> JobRecord:
        self.requests.append(request)
        job = JobRecord(id=f"job{len(self.requests):04d}", trigger=request.trigger, state="queued",
                        blueprint_commit=request.blueprint_commit)
        self.records.save_job(job)
        return job


def build_app(settings: Settings, records: Records) -> tuple[FastAPI, FakeEnqueue]:
    app = create_app(settings)
    enqueue = FakeEnqueue(records)
    app.dependency_overrides[deps.get_enqueue] = lambda: enqueue
    return app, enqueue


def refreshed(client: TestClient) -> TestClient:
    """Rebuild the app's snapshot now (tests do not wait for the background refresh)."""
    client.app.state.meshgen.view.refresh(force=True)  # type: ignore[attr-defined]
    return client


