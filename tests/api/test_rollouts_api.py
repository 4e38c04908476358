"""Every rollout state through the whole stack: records in Redis, a real environment repository,
the fake Argo CD on loopback HTTP, poll_once, the snapshot and GET /api/v1/rollouts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from api_support import READ, EnvRepoShas, build_app, make_settings, refreshed, unit, write_config
from argo_fakes import ArgoCDServer, application
from fastapi.testclient import TestClient

from meshgen.api.models import Rollout, RolloutPage
from meshgen.argocd.poller import ArgoKeys, poll_once
from meshgen.blueprint.loading import load_config
from meshgen.records import JobRecord, Records
from meshgen.settings import Settings

ENV_URL = "https://git.example.com/env.git"


def _poll(settings: Settings, records: Records) -> None:
    config, _ = load_config(settings.root)
    result = poll_once(config, settings, records)
    assert result.ok and not result.skipped, result


def _get(client: TestClient, path: str = "/api/v1/rollouts/staging/payments/api") -> dict[str, Any]:
    resp = client.get(path, headers=READ)
    assert resp.status_code == 200, resp.text
    Rollout.model_validate(resp.json())  # the spliced body is a valid Rollout
    return resp.json()  # type: ignore[no-any-return]


def _scenario(settings: Settings, records: Records, argo: ArgoCDServer, u: Any, app: dict[str, Any] | None) -> dict[str, Any]:
    records.save_unit(u)
    if app is not None:
        argo.put(app)
    _poll(settings, records)
    app_, _ = build_app(settings, records)
    with TestClient(app_) as client:
        return _get(refreshed(client))


CASES = {
    # name: (unit kwargs using shas by attribute, app kwargs or None, expected state, live)
    "healthy-merge-commit": ({"pr_state": "merged", "merge": "merge"}, {"revision": "merge"}, "healthy", True),
    "healthy-descendant": ({"pr_state": "merged", "merge": "merge"}, {"revision": "later"}, "healthy", True),
    "awaiting-sync-older": ({"pr_state": "merged", "merge": "merge"}, {"revision": "base"}, "awaiting-sync", False),
    "awaiting-sync-sibling": ({"pr_state": "merged", "merge": "merge"}, {"revision": "sibling"}, "awaiting-sync", False),
    "multi-source": ({"pr_state": "merged", "merge": "merge"},
                     {"revisions": ["1.4.2", "later"], "sources": ["https://charts.example.com", ENV_URL]},
                     "healthy", True),
    "multi-source-not-yet": ({"pr_state": "merged", "merge": "merge"},
                             {"revisions": ["later", "base"], "sources": ["https://git.example.com/other.git", "ENV_REPO"]},
                             "awaiting-sync", False),
    "permanently-out-of-sync": ({"pr_state": "merged", "merge": "merge"}, {"revision": "later", "sync": "OutOfSync"},
                                "healthy", True),
    "comparison-error": ({"pr_state": "merged", "merge": "merge"},
                         {"revision": "later", "conditions": [{"type": "ComparisonError", "message": "repo unreachable"}]},
                         "degraded", True),
    "sync-failed": ({"pr_state": "merged", "merge": "merge"}, {"revision": "merge", "phase": "Failed", "message": "boom"},
                    "degraded", True),
    "suspended": ({"pr_state": "merged", "merge": "merge"}, {"revision": "merge", "health": "Suspended"}, "progressing", True),
    "not-reconciled-since-sync": ({"pr_state": "merged", "merge": "merge"},
                                  {"revision": "merge", "reconciled_at": "2026-01-01T09:00:00Z"}, "progressing", True),
    "degraded": ({"pr_state": "merged", "merge": "merge"}, {"revision": "merge", "health": "Degraded",
                                                             "health_message": "Deployment exceeded its progress deadline"},
                 "degraded", True),
    "app-missing": ({"pr_state": "merged", "merge": "merge"}, None, "unknown", None),
    "awaiting-review": ({"pr_state": "open"}, {"revision": "base"}, "awaiting-review", None),
    "rejected": ({"pr_state": "closed"}, {"revision": "base"}, "rejected", None),
    "up-to-date": ({"up_to_date": True}, {"revision": "later"}, "up-to-date", None),
    "rendering": ({"render_state": "rendering"}, None, "rendering", None),
    "render-failed": ({"render_state": "render-failed", "render_error": "x.yaml:1:1: boom"}, None, "render-failed", None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_state(name: str, settings: Settings, records: Records, argo: ArgoCDServer, env_repo: EnvRepoShas) -> None:
    unit_kw, app_kw, expected, live = CASES[name]
    unit_kw = dict(unit_kw)
    if "merge" in unit_kw:
        unit_kw["merge"] = getattr(env_repo, unit_kw["merge"])
        unit_kw["head"] = env_repo.branch
    app = None
    if app_kw is not None:
        app_kw = dict(app_kw, repo_url=ENV_URL)
        if "revision" in app_kw:
            app_kw["revision"] = getattr(env_repo, app_kw["revision"])
        if "revisions" in app_kw:
            app_kw["revisions"] = [getattr(env_repo, r, r) for r in app_kw["revisions"]]
        if "sources" in app_kw:  # the environment repository's revision is told apart by its repoURL
            app_kw["sources"] = [str(env_repo.path) if s == "ENV_REPO" else s for s in app_kw["sources"]]
        app = application("api-staging", **app_kw)
    body = _scenario(settings, records, argo, unit(**unit_kw), app)
    assert body["state"] == expected, body
    assert body["live"] is live
    assert body["stale"] is False
    if app is not None and body["argocd"]:
        assert body["argocd"]["application"] == "api-staging"
        assert body["argocd"]["found"] is True
    if name == "permanently-out-of-sync":
        assert body["argocd"]["out_of_sync"] is True and body["argocd"]["sync_status"] == "OutOfSync"
        assert any("OutOfSync" in n for n in body["notes"])
    if name == "app-missing":
        assert body["argocd"]["found"] is False and "api-staging" in body["reason"]
    if name == "comparison-error":
        assert body["argocd"]["conditions"] == ["ComparisonError: repo unreachable"]
    if name == "sync-failed":
        assert body["argocd"]["operation_phase"] == "Failed" and body["argocd"]["operation_message"] == "boom"
    if body["pr"]:
        assert body["pr"]["url"].endswith("/pulls/1") and body["pr"]["number"] == 1


def test_response_carries_pr_argocd_blueprint_and_timestamps(settings: Settings, records: Records,
                                                             argo: ArgoCDServer, env_repo: EnvRepoShas) -> None:
    records.save_job(JobRecord(id="j1", state="succeeded", created_at=100.0, finished_at=101.5))
    u = unit(pr_state="merged", merge=env_repo.merge, head=env_repo.branch, job_id="j1")
    body = _scenario(settings, records, argo, u, application("api-staging", revision=env_repo.later, repo_url=ENV_URL))
    assert body["pr"] == {"number": 1, "url": "https://git.example.com/env/pulls/1", "state": "merged",
                          "branch": "meshgen/staging/payments/api", "head_sha": env_repo.branch,
                          "merge_sha": env_repo.merge}
    assert body["argocd"]["synced_revisions"] == [env_repo.later]
    assert body["argocd"]["health"] == "Healthy" and body["argocd"]["sync_status"] == "Synced"
    assert body["argocd"]["reconciled_at"] == "2026-01-01T10:05:00Z"
    assert body["argocd"]["operation_phase"] == "Succeeded"
    assert body["blueprint"] == {"path": "blueprints/payments/api.yaml", "commit": "b" * 40}
    assert body["job"] == {"id": "j1", "state": "succeeded"}
    assert body["timestamps"]["job_created_at"] == 100.0 and body["timestamps"]["job_finished_at"] == 101.5
    assert 0 <= body["age_seconds"] < 30


def test_stale_argocd_data_is_flagged_with_its_age(settings: Settings, records: Records, argo: ArgoCDServer,
                                                   env_repo: EnvRepoShas) -> None:
    u = unit(pr_state="merged", merge=env_repo.merge, head=env_repo.branch)
    records.save_unit(u)
    records.save_unit(unit(service="web", pr_state="open"))
    argo.put(application("api-staging", revision=env_repo.merge))
    _poll(settings, records)
    # The last successful poll was 10 minutes ago (staleAfter is 2m); e.g. Argo CD has been down since.
    records.client.set(ArgoKeys(records.prefix).polled, repr(time.time() - 600))
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        body = _get(refreshed(client))
        assert body["state"] == "healthy" and body["stale"] is True and 595 < body["age_seconds"] < 700
        # A state that does not depend on Argo CD is not stale.
        other = _get(client, "/api/v1/rollouts/staging/payments/web")
        assert other["state"] == "awaiting-review" and other["stale"] is False
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["argocd"]["ok"]


def test_never_polled_is_stale(settings: Settings, records: Records, env_repo: EnvRepoShas) -> None:
    records.save_unit(unit(pr_state="merged", merge=env_repo.merge))
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        body = _get(refreshed(client))
        assert body["state"] == "unknown" and body["stale"] is True and body["age_seconds"] is None


def test_snapshot_follows_redis(settings: Settings, records: Records, argo: ArgoCDServer, env_repo: EnvRepoShas) -> None:
    """The background refresh picks up a new poll (argocd:version) and a finished job (jobs set)."""
    records.save_unit(unit(pr_state="merged", merge=env_repo.merge, head=env_repo.branch))
    argo.put(application("api-staging", revision=env_repo.base))
    _poll(settings, records)
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        assert _get(client)["state"] == "awaiting-sync"
        argo.put(application("api-staging", revision=env_repo.later))
        _poll(settings, records)
        deadline = time.monotonic() + 5
        while _get(client)["state"] != "healthy":
            assert time.monotonic() < deadline, "snapshot did not follow the new poll"
            time.sleep(0.1)
        # A sync job records units, then finishes its job record: that moves the fingerprint.
        records.save_unit(unit(service="api", pr_state="open", number=2))
        records.save_job(JobRecord(id="after", state="succeeded"))
        deadline = time.monotonic() + 5
        while _get(client)["state"] != "awaiting-review":
            assert time.monotonic() < deadline, "snapshot did not follow the new job"
            time.sleep(0.1)


def test_list_filters_and_cursor_pagination(settings: Settings, records: Records, env_repo: EnvRepoShas) -> None:
    for i in range(25):
        records.save_unit(unit(env="staging" if i % 2 else "production", service=f"svc{i:02d}",
                               team="payments" if i < 10 else "search", pr_state="open" if i % 5 else None,
                               up_to_date=not i % 5))
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        refreshed(client)
        seen, cursor, pages = [], None, 0
        while True:
            params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
            resp = client.get("/api/v1/rollouts", params=params, headers=READ)
            assert resp.status_code == 200
            page = RolloutPage.model_validate(resp.json())
            assert page.total == 25 and page.limit == 10
            seen += [f"{r.env}/{r.namespace}/{r.service}" for r in page.items]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == 3 and len(seen) == 25 and seen == sorted(seen)

        def total(**params: Any) -> int:
            resp = client.get("/api/v1/rollouts", params=params, headers=READ)
            assert resp.status_code == 200, resp.text
            items = resp.json()["items"]
            for k, v in params.items():
                assert all(item[k] == v for item in items)
            return resp.json()["total"]  # type: ignore[no-any-return]

        assert total(env="staging") == 12
        assert total(team="payments") == 10
        assert total(state="up-to-date") == 5
        assert total(state="awaiting-review", team="search", env="production") == 6
        assert total(env="nowhere") == 0
        # A cursor is a position: one that names no rollout still continues in key order.
        resp = client.get("/api/v1/rollouts", params={"cursor": "staging/payments/svc10~", "limit": 2}, headers=READ)
        assert [i["service"] for i in resp.json()["items"]] == ["svc11", "svc13"]
        bad = client.get("/api/v1/rollouts", params={"state": "happy"}, headers=READ)
        assert bad.status_code == 422 and bad.json()["title"] == "Unprocessable Content"


def test_unknown_rollout_is_a_problem_and_mesh_unit_uses_dash(settings: Settings, records: Records) -> None:
    records.save_unit(unit(namespace="", service="_mesh", up_to_date=True))
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        refreshed(client)
        assert _get(client, "/api/v1/rollouts/staging/-/_mesh")["state"] == "up-to-date"
        resp = client.get("/api/v1/rollouts/staging/payments/nope", headers=READ)
        assert resp.status_code == 404
        assert resp.headers["content-type"] == "application/problem+json"
        problem = resp.json()
        assert set(problem) == {"type", "title", "status", "detail"} and problem["status"] == 404
        assert "GET /api/v1/rollouts" in problem["detail"]


def test_argocd_not_configured(tmp_path: Path, prefix: str, records: Records, env_repo: EnvRepoShas) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    write_config(root, env_repo.path, None)
    settings = make_settings(root, prefix)
    records.save_unit(unit(pr_state="merged", merge=env_repo.merge))
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        body = _get(refreshed(client))
        assert body["state"] == "awaiting-sync" and body["argocd"] is None and body["stale"] is False
        assert client.get("/readyz").json()["checks"]["argocd"]["ok"] is True
