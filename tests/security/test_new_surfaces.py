"""Attacks on what came after the issue 13 hardening: the blueprints pull-request (plan) webhooks,
the environment-repository pull-request webhooks and the local forge's login page.

Each signed payload here is what a forge holding the secret (or anyone who learnt it) could send;
a payload that is not what the forge documents must be a 400 (never a 500), nothing planned or
recorded. The login page must never redirect to another origin and its cookie is HttpOnly and
SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sync_support import REDIS_DB_URL, redis_namespace

from meshgen.api.app import create_app
from meshgen.records import JobRecord
from meshgen.settings import Settings

READ, WRITE, SECRET = "read-token-0123456789", "write-token-0123456789", "whsec_0123456789abcdef"
SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
CONFIG = """\
environments:
  staging: {}
envRepo:
  url: http://127.0.0.1:9/acme/env.git
  forge: {kind: github, owner: acme, repo: env}
"""


def _refuse(request: Any) -> JobRecord:
    raise AssertionError(f"nothing may be queued here: {request!r}")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    (tmp_path / "meshgen.yaml").write_text(CONFIG)
    with redis_namespace("security-new") as ns:
        # Planning is on (the loopback URLs are never reached: every payload here is refused before).
        settings = Settings(root=tmp_path, redis_url=REDIS_DB_URL, redis_prefix=ns.prefix, api_read_tokens=READ,
                            api_write_tokens=WRITE, webhook_secret_github=SECRET, webhook_secret_gitea=SECRET,
                            webhook_secret_gitlab=SECRET, blueprints_url="http://127.0.0.1:9/acme/blueprints.git",
                            blueprints_forge_url="http://127.0.0.1:9/api/v3")
        with TestClient(create_app(settings, records=ns.records, enqueue=_refuse),
                        raise_server_exceptions=False, follow_redirects=False) as http:
            yield http


def _signed(forge: str, event: str, body: bytes) -> dict[str, str]:
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    if forge == "github":
        return {"X-GitHub-Event": event, "X-Hub-Signature-256": f"sha256={mac}"}
    if forge == "gitea":
        return {"X-Gitea-Event": event, "X-Gitea-Signature": mac}
    return {"X-Gitlab-Event": event, "X-Gitlab-Token": SECRET}


def _github_pr(action: str, number: Any = 7, head: Any = SHA, base_sha: Any = SHA, ref: Any = "meshgen/x") -> bytes:
    return json.dumps({"action": action, "repository": {"full_name": "acme/env"}, "pull_request": {
        "number": number, "merged": True, "head": {"ref": ref, "sha": head}, "base": {"ref": "main", "sha": base_sha},
        "merge_commit_sha": SHA}}).replace('"NUMBER"', "1e400").encode()


DEEP = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


# ---- environment-repository pull-request webhooks ---------------------------------------------------

@pytest.mark.parametrize("body", [
    pytest.param(_github_pr("closed", number="NUMBER"), id="number-1e400"),
    pytest.param(DEEP, id="nested-50000-deep"),
    pytest.param(b"[]", id="not-an-object"),
    pytest.param(_github_pr("closed", number="seven"), id="number-not-a-number"),
    pytest.param(json.dumps({"action": "closed", "pull_request": {"number": 1, "head": []}}).encode(), id="head-list"),
])
@pytest.mark.parametrize("forge", ["github", "gitea"])
def test_env_repo_pr_webhook_malformed_signed_is_400(client: TestClient, forge: str, body: bytes) -> None:
    r = client.post(f"/api/v1/webhooks/{forge}/env-repo", content=body, headers=_signed(forge, "pull_request", body))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("body", [
    pytest.param(json.dumps({"object_attributes": {"action": "merge", "iid": "NUMBER", "source_branch": "meshgen/x",
                                                   "target_branch": "main"}}).replace('"NUMBER"', "1e400").encode(),
                 id="iid-1e400"),
    pytest.param(DEEP, id="nested-50000-deep"),
])
def test_gitlab_env_repo_mr_webhook_malformed_is_400(client: TestClient, body: bytes) -> None:
    r = client.post("/api/v1/webhooks/gitlab/env-repo", content=body,
                    headers=_signed("gitlab", "Merge Request Hook", body))
    assert r.status_code == 400, r.text


def test_env_repo_pr_webhook_unsigned_is_401(client: TestClient) -> None:
    body = _github_pr("closed")
    r = client.post("/api/v1/webhooks/github/env-repo", content=body, headers={"X-GitHub-Event": "pull_request"})
    assert r.status_code == 401
    wrong = _signed("github", "pull_request", body + b" ")
    assert client.post("/api/v1/webhooks/github/env-repo", content=body, headers=wrong).status_code == 401


# ---- blueprints pull-request (plan) webhooks ----------------------------------------------------------

@pytest.mark.parametrize("body", [
    # The head goes into the forge's status URL (/statuses/{sha}): `..` would be another endpoint.
    pytest.param(_github_pr("opened", head=".."), id="head-dotdot"),
    pytest.param(_github_pr("opened", head="../../../user/repos"), id="head-path"),
    pytest.param(_github_pr("opened", head="main"), id="head-a-branch-name"),
    pytest.param(_github_pr("opened", base_sha=["x"]), id="base-sha-list"),
    pytest.param(_github_pr("opened", number="NUMBER"), id="number-1e400"),
    pytest.param(_github_pr("opened", number=-3), id="number-negative"),
    pytest.param(DEEP, id="nested-50000-deep"),
])
@pytest.mark.parametrize("forge", ["github", "gitea"])
def test_plan_webhook_malformed_signed_is_400_nothing_planned(client: TestClient, forge: str, body: bytes) -> None:
    r = client.post(f"/api/v1/webhooks/{forge}", content=body, headers=_signed(forge, "pull_request", body))
    assert r.status_code == 400, r.text
    assert "planning" not in r.text


@pytest.mark.parametrize("attrs", [
    {"action": "open", "iid": 3, "last_commit": {"id": "../x"}, "target_branch": "main"},
    {"action": "open", "iid": 3, "last_commit": {"id": SHA}, "target_branch": "main", "diff_refs": {"base_sha": ".."}},
])
def test_gitlab_plan_webhook_head_not_a_commit_is_400(client: TestClient, attrs: dict[str, Any]) -> None:
    body = json.dumps({"project": {"path_with_namespace": "acme/blueprints"}, "object_attributes": attrs}).encode()
    r = client.post("/api/v1/webhooks/gitlab", content=body, headers=_signed("gitlab", "Merge Request Hook", body))
    assert r.status_code == 400, r.text


# ---- the local forge's login page ---------------------------------------------------------------------

@pytest.mark.parametrize("target", ["//evil.example", "///evil.example", "////evil.example", "/\\evil.example",
                                    "/\\/evil.example", "\\\\evil.example", "https://evil.example/prs",
                                    "javascript:alert(1)", "/\t/evil.example", "/\n/evil.example", "prs"])
def test_login_never_redirects_to_another_origin(client: TestClient, target: str) -> None:
    r = client.post("/login", data={"token": READ, "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/prs", r.headers.get("location")
    page = client.get("/login", params={"next": target})
    assert 'name="next" value="/prs"' in page.text


def test_login_keeps_a_local_target_and_sets_a_strict_httponly_cookie(client: TestClient) -> None:
    r = client.post("/login", data={"token": READ, "next": "/prs/3"})
    assert r.status_code == 303 and r.headers["location"] == "/prs/3"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie


def test_login_reflects_no_markup(client: TestClient) -> None:
    target = '/prs"><script>alert(1)</script>'
    page = client.get("/login", params={"next": target})
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;" in page.text
    r = client.post("/login", data={"token": READ, "next": target})
    assert "<" not in r.headers["location"] and '"' not in r.headers["location"]


def test_login_with_a_wrong_token_sets_no_cookie(client: TestClient) -> None:
    r = client.post("/login", data={"token": "nope", "next": "/prs"})
    assert r.status_code == 401 and "set-cookie" not in r.headers
