"""Property-based tests of meshgen's own OpenAPI document with schemathesis, in process (ASGI).

Every operation is called with generated (valid and invalid) inputs; every response must be
documented (status code, content type, schema), and no input may cause a server error.

schemathesis' pytest plugin (`from_fixture` / `parametrize`) does not work with pytest 9, so
operations are driven with its Hypothesis strategies directly: same checks, bounded examples.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from api_support import WRITE, EnvRepoShas, build_app, canary, refreshed, unit
from argo_fakes import ArgoCDServer, application
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from meshgen.argocd.poller import poll_once
from meshgen.blueprint.loading import load_config
from meshgen.records import JobRecord, Records
from meshgen.settings import Settings

MAX_EXAMPLES = 25


@pytest.fixture
def api_schema(settings: Settings, records: Records, argo: ArgoCDServer, env_repo: EnvRepoShas) -> Any:
    for service in ("api", "web"):
        records.save_unit(unit(service=service, pr_state="merged", merge=env_repo.merge))
        argo.put(application(f"{service}-staging", revision=env_repo.later))
    records.save_job(JobRecord(id="j1", state="succeeded"))
    records.save_canary(canary())
    # A ready system (polled, mirror fetched): a 503 from /readyz would count as a server error.
    assert poll_once(load_config(settings.root)[0], settings, records).ok
    app, _ = build_app(settings, records)
    with TestClient(app) as client:  # runs the lifespan (snapshot loaded, refresh task started)
        refreshed(client)
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(schema: Any) -> list[Any]:
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 8, [op.label for op in ops]
    return ops


def _exercise(op: Any, calls: dict[str, int]) -> None:
    @given(case=op.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None)
    def run(case: schemathesis.Case) -> None:
        calls[op.label] = calls.get(op.label, 0) + 1
        case.call_and_validate(headers={**(case.headers or {}), **WRITE})

    run()


def test_api_conforms_to_its_openapi(api_schema: Any) -> None:
    failures: list[str] = []
    calls: dict[str, int] = {}
    for op in _operations(api_schema):
        try:
            _exercise(op, calls)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{op.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert all(n > 0 for n in calls.values()) and len(calls) >= 8


def test_canary_responses_conform(api_schema: Any) -> None:
    """Generated paths rarely name a unit with a canary: call those operations on one explicitly,
    so the `canary` object and the 202 answer are checked against the document."""
    ops = {op.label: op for op in _operations(api_schema)}
    unit_path = {"env": "staging", "namespace": "payments", "service": "api"}
    checked = 0
    statuses: set[int] = set()
    for label, op in ops.items():
        if label == "GET /api/v1/rollouts/{env}/{namespace}/{service}" or "/canary/" in label:
            response = op.Case(path_parameters=unit_path).call_and_validate(headers=WRITE)
            statuses.add(response.status_code)
            checked += 1
        elif label == "GET /api/v1/rollouts":
            response = op.Case().call_and_validate(headers=WRITE)
            assert any("canary" in item for item in response.json()["items"])
            checked += 1
    assert checked == 7
    assert statuses == {200, 202, 409}  # the view, accepted commands, and ones the phase refuses
