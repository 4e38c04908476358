"""Plans on blueprints pull requests (issue 10, item 7, service side): a signed GitHub pull_request
webhook -> the head is fetched from a real git repository and planned -> one comment on the PR,
edited in place, and a meshgen/plan commit status; every forge call checked against github-pulls.json."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pygit2
import pytest
from fastapi.testclient import TestClient
from forges._github_plan_fake import GitHubPlanFake
from forges._gitrepo import BareRepo
from forges._schemas import ApiSpec
from sync_support import REDIS_DB_URL, RedisNS, blueprint

from meshgen.api.app import create_app
from meshgen.api.planhooks import MARKER
from meshgen.settings import Settings

SECRET = "whsec_plan_hooks_123"
TOKEN = "ghp_blueprints_forge_token_0123"
HOOKS = ApiSpec("github-webhooks.json", "urn:meshgen-test:github-webhooks", openapi3=True)
MESHGEN_YAML = "environments:\n  staging: {mesh: istio}\n  production: {mesh: istio}\n"


def _commit(repo: pygit2.Repository, ref: str, files: dict[str, str], message: str) -> str:
    tb = repo.TreeBuilder()
    bp = repo.TreeBuilder()
    for name, text in files.items():
        if name == "meshgen.yaml":
            tb.insert(name, repo.create_blob(text.encode()), pygit2.GIT_FILEMODE_BLOB)
        else:
            bp.insert(name, repo.create_blob(text.encode()), pygit2.GIT_FILEMODE_BLOB)
    tb.insert("blueprints", bp.write(), pygit2.GIT_FILEMODE_TREE)
    sig = pygit2.Signature("Ada", "ada@example.com")
    parent = repo.references.get(ref)
    parents = [parent.target] if parent is not None else ([repo.references["refs/heads/main"].target]
                                                          if "refs/heads/main" in repo.references else [])
    return str(repo.create_commit(ref, sig, sig, message, tb.write(), parents))


def pr_event(action: str, number: int, head: str, base_sha: str) -> dict[str, Any]:
    name = {"opened": "webhook-pull-request-opened", "synchronize": "webhook-pull-request-synchronize"}[action]
    schema = copy.deepcopy(HOOKS.schema(name))
    payload = HOOKS.skeleton(schema)
    pr = HOOKS.skeleton(HOOKS.schema("pull-request"))
    pr.update(number=number, state="open")
    pr["head"].update(ref="feature", sha=head)
    pr["base"].update(ref="main", sha=base_sha)
    payload.update(action=action, number=number, pull_request=pr)
    payload["repository"]["full_name"] = "acme/blueprints"
    schema["properties"]["pull_request"] = {"$ref": HOOKS.uri + "#/components/schemas/pull-request"}
    errors = HOOKS.errors(schema, payload)
    assert not errors, errors
    return payload


def _post(http: TestClient, payload: dict[str, Any], delivery: str) -> Any:
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return http.post("/api/v1/webhooks/github", content=body,
                     headers={"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
                              "X-Hub-Signature-256": sig})


def test_a_blueprints_pr_gets_one_plan_comment_and_a_status(tmp_path: Path, rns: RedisNS) -> None:
    source = pygit2.init_repository(str(tmp_path / "blueprints.git"), bare=True, initial_head="main")
    files = {"meshgen.yaml": MESHGEN_YAML, "cart.yaml": blueprint("cart"), "checkout.yaml": blueprint("checkout")}
    base = _commit(source, "refs/heads/main", files, "base")
    head1 = _commit(source, "refs/heads/feature", {**files, "cart.yaml": blueprint("cart", 25)}, "cart 25%")
    fake = GitHubPlanFake(BareRepo(tmp_path / "unused.git"), TOKEN, owner="acme", name="blueprints").start()
    try:
        pr = fake.new_pr(title="cart 25%", body="", head="feature", base="main")
        root = tmp_path / "state"
        root.mkdir()
        settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, webhook_secret_github=SECRET,
                            blueprints_url=str(tmp_path / "blueprints.git"), blueprints_repo="acme/blueprints",
                            blueprints_forge_url=fake.url, blueprints_forge_token=TOKEN)
        with TestClient(create_app(settings)) as http:
            answer = _post(http, pr_event("opened", pr.number, head1, base), "p1")
            assert answer.status_code == 202 and answer.json()["status"] == "planning", answer.text
            [comment] = fake.comments_of(pr.number)
            assert comment.startswith(MARKER) and "### production" in comment and "### staging" in comment
            assert "VirtualService shop/cart: route default: weight v2 10 → 25" in comment
            assert "checkout" not in comment  # unchanged units are not planned
            [status] = fake.statuses[head1]
            assert status["state"] == "success" and status["context"] == "meshgen/plan"
            # A new push with a broken blueprint: the same comment is edited, the status fails with the error.
            head2 = _commit(source, "refs/heads/feature",
                            {**files, "cart.yaml": blueprint("cart", 25).replace("v1: 75", "v1: 80")}, "oops")
            assert _post(http, pr_event("synchronize", pr.number, head2, base), "p2").status_code == 202
            [edited] = fake.comments_of(pr.number)
            assert "blueprints/cart.yaml:" in edited and "sum to 100" in edited
            [failed] = fake.statuses[head2]
            assert failed["state"] == "failure" and "blueprints/cart.yaml:" in failed["description"]
            assert fake.count("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}") == 1
            # Other repositories' pull requests are not planned.
            other = pr_event("opened", pr.number, head1, base)
            other["repository"]["full_name"] = "acme/other"
            assert _post(http, other, "p3").json()["status"] == "ignored"
            # A signed but malformed event is a clear 400, and plans nothing.
            bad = _post(http, {"action": "opened", "number": 1}, "p4")
            assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
            assert len(fake.statuses) == 2
        assert not fake.violations, fake.violations
    finally:
        fake.stop()


def _gitlab_event(action: str, number: int, head: str, base_sha: str) -> dict[str, Any]:
    return {"object_kind": "merge_request", "event_type": "merge_request",
            "project": {"path_with_namespace": "acme/blueprints"},
            "object_attributes": {"iid": number, "action": action, "state": "opened", "source_branch": "feature",
                                  "target_branch": "main", "last_commit": {"id": head},
                                  "diff_refs": {"base_sha": base_sha, "head_sha": head}}}


def _gitea_event(action: str, number: int, head: str, base_sha: str) -> dict[str, Any]:
    return {"action": action, "number": number, "repository": {"full_name": "acme/blueprints"},
            "pull_request": {"number": number, "state": "open", "head": {"ref": "feature", "sha": head},
                             "base": {"ref": "main", "sha": base_sha}}}


@pytest.mark.parametrize("forge", ["gitlab", "gitea"])
def test_gitlab_and_gitea_prs_get_one_plan_note_and_a_status(tmp_path: Path, rns: RedisNS, forge: str) -> None:
    from forges._plan_fakes import GiteaPlanFake, GitLabPlanFake

    source = pygit2.init_repository(str(tmp_path / "blueprints.git"), bare=True, initial_head="main")
    files = {"meshgen.yaml": MESHGEN_YAML, "cart.yaml": blueprint("cart")}
    base = _commit(source, "refs/heads/main", files, "base")
    head1 = _commit(source, "refs/heads/feature", {**files, "cart.yaml": blueprint("cart", 25)}, "cart 25%")
    fake: Any = (GitLabPlanFake(BareRepo(tmp_path / "u.git"), TOKEN, project_path="acme/blueprints")
                 if forge == "gitlab" else GiteaPlanFake(BareRepo(tmp_path / "u.git"), TOKEN, owner="acme",
                                                         name="blueprints")).start()
    try:
        pr = fake.new_pr(title="cart 25%", body="", head="feature", base="main")
        root = tmp_path / "state"
        root.mkdir()
        settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix,
                            **{f"webhook_secret_{forge}": SECRET}, blueprints_url=str(tmp_path / "blueprints.git"),
                            blueprints_forge_url=fake.root, blueprints_forge_token=TOKEN)

        def post(payload: dict[str, Any]) -> Any:
            body = json.dumps(payload).encode()
            headers = ({"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": SECRET} if forge == "gitlab" else
                       {"X-Gitea-Event": "pull_request",
                        "X-Gitea-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()})
            return http.post(f"/api/v1/webhooks/{forge}", content=body, headers=headers)

        event = _gitlab_event if forge == "gitlab" else _gitea_event
        opened, updated = ("open", "update") if forge == "gitlab" else ("opened", "synchronized")
        with TestClient(create_app(settings)) as http:
            assert post(event(opened, pr.number, head1, base)).json()["status"] == "planning"
            [comment] = fake.comments_of(pr.number)
            assert comment.startswith(MARKER) and "weight v2 10 → 25" in comment
            assert [s["state"] for s in fake.statuses[head1]] == ["success"]
            head2 = _commit(source, "refs/heads/feature",
                            {**files, "cart.yaml": blueprint("cart", 25).replace("v1: 75", "v1: 80")}, "oops")
            assert post(event(updated, pr.number, head2, base)).json()["status"] == "planning"
            [edited] = fake.comments_of(pr.number)
            assert "sum to 100" in edited
            assert [s["state"] for s in fake.statuses[head2]] == ["failed" if forge == "gitlab" else "failure"]
        assert not fake.violations, fake.violations
    finally:
        fake.stop()


def test_a_plan_that_fails_ends_with_an_error_status(tmp_path: Path, rns: RedisNS) -> None:
    """Every job ends in a terminal state: a plan whose blueprints repository cannot be fetched
    leaves `meshgen/plan` at error on the head (naming no URL or token), not missing forever."""
    fake = GitHubPlanFake(BareRepo(tmp_path / "unused.git"), TOKEN, owner="acme", name="blueprints").start()
    try:
        pr = fake.new_pr(title="x", body="", head="feature", base="main")
        root = tmp_path / "state"
        root.mkdir()
        settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, webhook_secret_github=SECRET,
                            blueprints_url=str(tmp_path / "missing.git"), blueprints_repo="acme/blueprints",
                            blueprints_forge_url=fake.url, blueprints_forge_token=TOKEN)
        head = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
        with TestClient(create_app(settings)) as http:
            answer = _post(http, pr_event("opened", pr.number, head, head), "f1")
            assert answer.status_code == 202 and answer.json()["status"] == "planning", answer.text
        [status] = fake.statuses[head]
        assert status["state"] == "error" and status["context"] == "meshgen/plan", status
        assert "could not plan" in status["description"] and "missing.git" not in status["description"]
        assert not fake.violations, fake.violations
    finally:
        fake.stop()
