"""Is my change live, end to end: blueprints → sync → local pull request → merge → sync →
Argo CD (the fake of tests/api/argo_fakes.py, on loopback HTTP) → poll → the rollout API.

Real parts: files on disk, pygit2 repositories, Redis (DB 13, a unique prefix), the API app from
create_app over httpx's ASGI transport, the `meshgen pr merge` command, the poller.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest
from api_support import READ, TOKENS
from argo_fakes import ArgoCDServer, application
from click.testing import CliRunner
from fastapi import FastAPI
from sync_support import REDIS_DB_URL, RedisNS, env_repo, make_root

from meshgen.api.app import create_app
from meshgen.argocd.poller import poll_once
from meshgen.blueprint.loading import load_config
from meshgen.gitops.commands import pr as pr_command
from meshgen.gitops.sync import sync_repository
from meshgen.settings import Settings

pytestmark = pytest.mark.slow
ROLLOUT = "/api/v1/rollouts/production/shop/cart"


def _get(app: FastAPI, path: str) -> dict[str, Any]:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://meshgen") as http:
            return await http.get(path, headers=READ)

    response = asyncio.run(call())
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _rollout(app: FastAPI, *, changed: bool = True) -> dict[str, Any]:
    """The rollout after the API's snapshot looked at Redis (as its background task does)."""
    # Not forced: the snapshot must notice the change itself (record and Argo CD version counters).
    assert app.state.meshgen.view.refresh() is changed
    return _get(app, ROLLOUT)


def _tip(path: Path) -> str:
    return str(pygit2.Repository(str(path)).references["refs/heads/main"].target)


def _commit_on_main(path: Path, name: str, content: bytes) -> str:
    """Someone else's later commit on the base (outside meshgen's folders)."""
    repo = pygit2.Repository(str(path))
    parent = repo.references["refs/heads/main"].peel(pygit2.Commit)
    builder = repo.TreeBuilder(parent.tree)
    builder.insert(name, repo.create_blob(content), pygit2.GIT_FILEMODE_BLOB)
    sig = pygit2.Signature("ops", "ops@example.com")
    return str(repo.create_commit("refs/heads/main", sig, sig, f"add {name}\n", builder.write(), [parent.id]))


def test_change_goes_from_review_to_healthy(tmp_path: Path, rns: RedisNS, argo: ArgoCDServer) -> None:
    root = make_root(tmp_path / "bp", ["cart"],
                     extra_config=f"argocd: {{mode: rest, url: '{argo.url}', staleAfter: 10m}}\n")
    settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, lock_ttl=2, lock_wait=5,
                        api_read_tokens=TOKENS["read"], argocd_token=TOKENS["argocd"])
    config, _ = load_config(root)
    repo_path = env_repo(root)

    # 1. The first sync opens a pull request; Argo CD runs the base as it was before.
    job = sync_repository(root, settings, records=rns.records, blueprint_commit="b1" * 20)
    assert [(p.branch, p.action) for p in job.prs] == [("meshgen/production/shop/cart", "opened")]
    number = job.prs[0].number
    before = _tip(repo_path)
    app_name = "cart-production"
    argo.put(application(app_name, revision=before, repo_url=str(repo_path)))
    assert poll_once(config, settings, rns.records).apps == 1
    api = create_app(settings)
    rollout = _get(api, ROLLOUT)
    assert rollout["state"] == "awaiting-review", rollout
    assert rollout["pr"]["number"] == number and rollout["pr"]["state"] == "open"
    assert rollout["argocd"]["found"] and rollout["argocd"]["synced_revisions"] == [before]

    # 2. A reviewer merges it (`meshgen pr merge N`; --no-records: the next sync must record it alone).
    merged = CliRunner().invoke(pr_command, ["--repo", str(repo_path), "merge", str(number), "--no-records"])
    assert merged.exit_code == 0, merged.output
    merge_sha = _tip(repo_path)
    assert merge_sha != before and merge_sha[:12] in merged.output

    # 3. The next sync keeps the merged pull request on the unit, with its merge commit.
    job = sync_repository(root, settings, records=rns.records, blueprint_commit="b1" * 20)
    assert job.prs == []  # nothing left to propose
    rollout = _rollout(api)
    assert rollout["state"] == "awaiting-sync", rollout
    assert rollout["pr"]["state"] == "merged" and rollout["pr"]["merge_sha"] == merge_sha
    assert rollout["live"] is False and before[:12] in rollout["reason"]

    # 4. Argo CD synced the merge commit but has not re-assessed health since: not healthy yet.
    argo.put(application(app_name, revision=merge_sha, repo_url=str(repo_path),
                         finished_at="2026-01-01T10:00:00Z", reconciled_at="2026-01-01T09:59:00Z"))
    assert poll_once(config, settings, rns.records).changed
    assert _rollout(api)["state"] == "progressing"

    # 5. Reconciled after the sync finished, Healthy: the change is live.
    argo.put(application(app_name, revision=merge_sha, repo_url=str(repo_path), health="Healthy",
                         finished_at="2026-01-01T10:00:00Z", reconciled_at="2026-01-01T10:05:00Z"))
    assert poll_once(config, settings, rns.records).changed
    rollout = _rollout(api)
    assert rollout["state"] == "healthy" and rollout["live"] is True, rollout
    assert rollout["argocd"]["synced_revisions"] == [merge_sha] and rollout["stale"] is False
    assert _rollout(api, changed=False)["state"] == "healthy"  # nothing moved: no rebuild

    # 6. A later commit on the base contains the merge: Argo CD runs it, the change is still live.
    later = _commit_on_main(repo_path, "README.md", b"ops notes\n")
    argo.put(application(app_name, revision=later, repo_url=str(repo_path), health="Healthy",
                         finished_at="2026-01-01T11:00:00Z", reconciled_at="2026-01-01T11:01:00Z"))
    assert poll_once(config, settings, rns.records).changed  # also fetches `later` into the mirror
    rollout = _rollout(api)
    assert rollout["state"] == "healthy" and rollout["live"] is True, rollout
    assert rollout["argocd"]["synced_revisions"] == [later] and merge_sha[:12] in rollout["reason"]

    # 7. A sync on the moved base changes nothing: the merged pull request stays recorded.
    job = sync_repository(root, settings, records=rns.records, blueprint_commit="b1" * 20)
    assert job.prs == []
    rollout = _rollout(api)
    assert rollout["state"] == "healthy" and rollout["pr"]["merge_sha"] == merge_sha
    listing = _get(api, "/api/v1/rollouts?state=healthy")
    assert [(r["service"], r["state"]) for r in listing["items"]] == [("cart", "healthy")]
