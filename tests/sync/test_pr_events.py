"""Pull-request events of the environment repository (issue 10, item 3): a merge or close in the forge's UI
reaches the rollout API at once, through the signed webhook; real Redis, the GitHub test server."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from forges._github_fake import GitHubFake
from forges._gitrepo import BareRepo
from forges._schemas import ApiSpec
from sync_support import REDIS_DB_URL, RedisNS, make_root

from meshgen.api.app import create_app
from meshgen.gitops.sync import sync_repository
from meshgen.settings import Settings

SECRET = "whsec_env_repo_0a1b2c3d"
TOKEN = "ghp_envrepo_token_abcdef0123456789"
HOOKS = ApiSpec("github-webhooks.json", "urn:meshgen-test:github-webhooks", openapi3=True)
FAST = {"max_attempts": 3, "max_wait": 5.0, "backoff": 0.01, "timeout": 5.0}


def github_closed_event(fake: GitHubFake, number: int) -> dict[str, Any]:
    """The `pull_request` closed delivery GitHub sends, from the test server's own state, checked
    against the documented webhook schema (pull_request against its `pull-request` part)."""
    schema = copy.deepcopy(HOOKS.schema("webhook-pull-request-closed"))
    payload = HOOKS.skeleton(schema)
    rest = fake.render(fake.prs[number])
    pr = HOOKS.skeleton(HOOKS.schema("pull-request"))
    for key in ("number", "state", "title", "body", "html_url", "merged", "merge_commit_sha", "merged_at",
                "closed_at"):
        pr[key] = rest[key]
    pr["head"].update(ref=rest["head"]["ref"], sha=rest["head"]["sha"])
    pr["base"].update(ref=rest["base"]["ref"], sha=rest["base"]["sha"])
    payload.update(action="closed", number=number, pull_request=pr)
    payload["repository"]["full_name"] = f"{fake.owner}/{fake.name}"
    schema["properties"]["pull_request"] = {"$ref": HOOKS.uri + "#/components/schemas/pull-request"}
    errors = HOOKS.errors(schema, payload)
    assert not errors, errors
    return payload


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rns: RedisNS) -> Any:
    bare = BareRepo(tmp_path / "env.git")
    fake = GitHubFake(bare, TOKEN).start()
    monkeypatch.setenv("MGTEST_FORGE_TOKEN", TOKEN)
    forge = (f"envRepo:\n  url: {tmp_path / 'env.git'}\n  forge: {{kind: github, owner: acme, repo: env, "
             f"baseUrl: {fake.url}, tokenEnv: MGTEST_FORGE_TOKEN}}\n")
    root = make_root(tmp_path / "gh", ["cart", "checkout"], extra_config=forge)
    settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, api_public_reads=True,
                        webhook_secret_github=SECRET)
    try:
        yield root, settings, fake
    finally:
        fake.stop()


def _post(http: TestClient, payload: dict[str, Any], delivery: str, event: str = "pull_request") -> Any:
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return http.post("/api/v1/webhooks/github/env-repo", content=body,
                     headers={"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": sig})


def _rollout(http: TestClient, service: str) -> dict[str, Any]:
    http.app.state.meshgen.view.refresh(force=True)  # type: ignore[attr-defined]
    return http.get(f"/api/v1/rollouts/production/shop/{service}").json()  # type: ignore[no-any-return]


def test_merge_and_close_in_the_forge_ui_update_the_rollout_at_once(world: Any, rns: RedisNS) -> None:
    root, settings, fake = world
    job = sync_repository(root, settings, records=rns.records, forge_options=FAST)
    numbers = {p.branch.rsplit("/", 1)[1]: p.number for p in job.prs}
    with TestClient(create_app(settings)) as http:
        assert _rollout(http, "cart")["state"] == "awaiting-review"
        merge_sha = fake.do_merge(fake.prs[numbers["cart"]])  # someone presses Merge on GitHub
        fake.closed_at[numbers["cart"]] = fake.prs[numbers["cart"]].created
        event = github_closed_event(fake, numbers["cart"])
        # Unsigned or wrongly signed deliveries change nothing.
        forged = http.post("/api/v1/webhooks/github/env-repo", content=json.dumps(event).encode(),
                           headers={"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": "sha256=00"})
        assert forged.status_code == 401 and _rollout(http, "cart")["state"] == "awaiting-review"
        answer = _post(http, event, "d-merge")
        assert answer.status_code == 202 and answer.json()["status"] == "recorded", answer.text
        cart = _rollout(http, "cart")
        assert cart["state"] == "awaiting-sync" and cart["pr"]["merge_sha"] == merge_sha
        assert _post(http, event, "d-merge").json()["status"] == "duplicate"
        # A close without merging: rejected at once.
        fake.prs[numbers["checkout"]].state = "closed"
        fake.closed_at[numbers["checkout"]] = fake.prs[numbers["checkout"]].created
        closed = _post(http, github_closed_event(fake, numbers["checkout"]), "d-close")
        assert closed.json()["status"] == "recorded"
        assert _rollout(http, "checkout")["state"] == "rejected"
        # Another repository's events, and non-meshgen branches, are ignored.
        other = github_closed_event(fake, numbers["cart"])
        other["repository"]["full_name"] = "acme/blueprints"
        assert _post(http, other, "d-other").json()["status"] == "ignored"
    assert not fake.violations, fake.violations
    # The next sync (polling, the fallback) agrees with what the events recorded.
    sync_repository(root, settings, records=rns.records, forge_options=FAST)
    unit = rns.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.pr is not None and unit.pr.merge_sha == merge_sha


@pytest.mark.parametrize("forge", ["gitlab", "gitea"])
def test_gitlab_and_gitea_events_are_verified_and_parsed(tmp_path: Path, rns: RedisNS, forge: str) -> None:
    from meshgen.records import PRRef, UnitRecord

    project = "acme/env"
    kind = (f"envRepo:\n  url: {tmp_path / 'env.git'}\n  forge: {{kind: {forge}, "
            + ("project: acme/env, baseUrl: https://gitlab.example.com}\n" if forge == "gitlab"
               else "owner: acme, repo: env, baseUrl: https://gitea.example.com}\n"))
    root = make_root(tmp_path / "bp", ["cart"], extra_config=kind)
    settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, api_public_reads=True,
                        **{f"webhook_secret_{forge}": SECRET})
    url = f"https://{forge}.example.com/acme/env/" + ("-/merge_requests/4" if forge == "gitlab" else "pulls/4")
    rns.records.save_unit(UnitRecord(env="production", namespace="shop", service="cart", pr=PRRef(
        number=4, url=url, state="open", branch="meshgen/production/shop/cart", head_sha="a" * 40)))
    if forge == "gitlab":
        payload: dict[str, Any] = {
            "object_kind": "merge_request", "event_type": "merge_request", "project": {"path_with_namespace": project},
            "object_attributes": {"iid": 4, "action": "merge", "state": "merged", "merge_commit_sha": "b" * 40,
                                  "source_branch": "meshgen/production/shop/cart", "target_branch": "main",
                                  "last_commit": {"id": "a" * 40}, "url": url, "title": "t", "description": "d"}}
        headers = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": SECRET}
    else:
        payload = {"action": "closed", "number": 4, "repository": {"full_name": project}, "pull_request": {
            "number": 4, "merged": True, "merge_commit_sha": "b" * 40, "state": "closed", "html_url": url,
            "title": "t", "body": "d", "head": {"ref": "meshgen/production/shop/cart", "sha": "a" * 40},
            "base": {"ref": "main", "sha": "c" * 40}}}
    body = json.dumps(payload).encode()
    if forge == "gitea":
        headers = {"X-Gitea-Event": "pull_request",
                   "X-Gitea-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}
    with TestClient(create_app(settings)) as http:
        bad = http.post(f"/api/v1/webhooks/{forge}/env-repo", content=body,
                        headers={**headers, "X-Gitlab-Token": "nope", "X-Gitea-Signature": "00"})
        assert bad.status_code == 401
        ok = http.post(f"/api/v1/webhooks/{forge}/env-repo", content=body, headers=headers)
        assert ok.status_code == 202 and ok.json() == {"status": "recorded", "number": 4, "state": "merged",
                                                       "units": 1}, ok.text
        assert _rollout(http, "cart")["state"] == "awaiting-sync"


def test_oversized_and_malformed_deliveries_are_refused_before_anything_is_parsed(world: Any, rns: RedisNS) -> None:
    from meshgen.api.limits import MAX_WEBHOOK_BODY as MAX_WEBHOOK_BYTES

    _, settings, _ = world
    chunk = b"x" * (1024 * 1024)

    def stream() -> Any:  # no Content-Length: the limit holds while the body arrives
        for _ in range(MAX_WEBHOOK_BYTES // len(chunk) + 2):
            yield chunk

    with TestClient(create_app(settings)) as http:
        for url in ("/api/v1/webhooks/github/env-repo", "/api/v1/webhooks/github"):
            headers = {"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": "sha256=00"}
            declared = http.post(url, content=b"{" + b" " * MAX_WEBHOOK_BYTES + b"}", headers=headers)
            assert declared.status_code == 413 and "limit" in declared.json()["detail"], declared.text
            streamed = http.post(url, content=stream(), headers=headers)
            assert streamed.status_code == 413, streamed.text
        # Signed but not the documented shape: a clear 400, nothing recorded; unsigned: 401 before parsing.
        for body in (b"[]", b"{\"action\": \"closed\"}", b"not json"):
            bad = _post_raw(http, body, "d-bad")
            assert bad.status_code == 400 and bad.json()["title"] == "Bad Request", bad.text
        assert http.post("/api/v1/webhooks/github/env-repo", content=b"not json",
                         headers={"X-GitHub-Event": "pull_request"}).status_code == 401


def _post_raw(http: TestClient, body: bytes, delivery: str) -> Any:
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return http.post("/api/v1/webhooks/github/env-repo", content=body,
                     headers={"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
                              "X-Hub-Signature-256": sig})
