"""Provider-specific behaviour: pagination, Gitea label ids, GitLab project paths, GitHub trial merges,
and proof that the fakes really enforce the API descriptions."""

from __future__ import annotations

import httpx
import pytest

from meshgen.forges import github as github_module
from meshgen.forges import gitlab as gitlab_module

from ._schemas import gitea_spec, github_spec
from .conftest import TOKEN, ForgeEnv


def _open_many(env: ForgeEnv, count: int) -> list[int]:
    forge = env.make()
    numbers = []
    for i in range(count):
        env.push(f"meshgen/svc-{i}")
        numbers.append(forge.create(branch=f"meshgen/svc-{i}", base="main", title=f"{i}", body="", labels=()).number)
    return numbers


# -- pagination -------------------------------------------------------------------------------

def test_github_list_follows_pages(github_env: ForgeEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(github_module, "_PAGE", 2)
    numbers = _open_many(github_env, 5)
    assert [pr.number for pr in github_env.make().list()] == sorted(numbers, reverse=True)
    assert github_env.fake.count("GET", "/repos/{owner}/{repo}/pulls") == 3


def test_gitlab_list_follows_pages(gitlab_env: ForgeEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gitlab_module, "_PAGE", 2)
    numbers = _open_many(gitlab_env, 5)
    assert [pr.number for pr in gitlab_env.make().list()] == sorted(numbers, reverse=True)


def test_gitea_list_survives_server_side_page_cap(gitea_env: ForgeEnv) -> None:
    """Gitea cuts `limit` to MAX_RESPONSE_ITEMS without saying so: a short page is not the last one."""
    gitea_env.fake.max_page = 2  # type: ignore[attr-defined]
    numbers = _open_many(gitea_env, 5)
    forge = gitea_env.make()
    assert [pr.number for pr in forge.list()] == sorted(numbers, reverse=True)
    assert forge.find_open("meshgen/svc-0") is not None  # the oldest, on the last page


# -- GitHub ----------------------------------------------------------------------------------

def test_github_open_pull_request_hides_trial_merge_sha(github_env: ForgeEnv) -> None:
    github_env.push("meshgen/a")
    pr = github_env.make().create(branch="meshgen/a", base="main", title="t", body="", labels=())
    raw = httpx.get(f"{github_env.fake.url}/repos/acme/env/pulls/{pr.number}",
                    headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert raw["merge_commit_sha"]  # GitHub's trial merge commit...
    assert pr.merge_sha is None  # ...is not reported as the merge


def test_github_enterprise_base_url_is_used(github_env: ForgeEnv) -> None:
    assert github_env.fake.url.endswith("/api/v3")
    assert github_env.make().list() == []  # every call went under /api/v3 (else: a violation)


# -- Gitea -----------------------------------------------------------------------------------

def test_gitea_creates_missing_labels_then_applies_them(gitea_env: ForgeEnv) -> None:
    fake = gitea_env.fake
    fake.repo_labels["meshgen"] = 1  # type: ignore[attr-defined]  # exists already
    gitea_env.push("meshgen/a")
    pr = gitea_env.make().create(branch="meshgen/a", base="main", title="t", body="",
                                 labels=("meshgen", "env:prod"))
    assert pr.labels == ("env:prod", "meshgen")
    assert set(fake.repo_labels) == {"meshgen", "env:prod"}  # type: ignore[attr-defined]
    assert fake.count("POST", "/repos/{owner}/{repo}/labels") == 1  # only the missing one
    # Second time round every label exists: no creation, one PUT.
    before = fake.count("PUT", "/repos/{owner}/{repo}/issues/{index}/labels")
    gitea_env.make().update(pr.number, title="t", body="", labels=("env:prod",))
    assert fake.count("POST", "/repos/{owner}/{repo}/labels") == 1
    assert fake.count("PUT", "/repos/{owner}/{repo}/issues/{index}/labels") == before + 1


def test_gitea_base_url_may_already_end_in_api_v1(gitea_env: ForgeEnv) -> None:
    assert gitea_env.make(base_url=gitea_env.fake.url + "/").list() == []


# -- GitLab ----------------------------------------------------------------------------------

def test_gitlab_numeric_project_id(gitlab_env: ForgeEnv) -> None:
    gitlab_env.push("meshgen/a")
    forge = gitlab_env.make(project=42)
    assert forge.create(branch="meshgen/a", base="main", title="t", body="", labels=("x",)).labels == ("x",)
    assert forge.find_open("meshgen/a") is not None


def test_gitlab_project_path_is_one_encoded_segment(gitlab_env: ForgeEnv) -> None:
    # The fake only routes /projects/<one segment>/...; an unencoded path would be a violation.
    assert gitlab_env.make(project="acme/platform/env").list() == []
    assert gitlab_env.fake.count("GET", "/projects/{id}/merge_requests") == 1


# -- the fakes enforce the descriptions ---------------------------------------------------------

def test_fake_rejects_undocumented_request_fields(github_env: ForgeEnv) -> None:
    github_env.push("meshgen/a")
    httpx.post(f"{github_env.fake.url}/repos/acme/env/pulls", headers={"Authorization": f"Bearer {TOKEN}"},
               json={"title": "t", "head": "meshgen/a", "base": "main", "description": "GitLab's word"})
    assert any("'description' was unexpected" in v for v in github_env.fake.violations)
    github_env.fake.violations.clear()


def test_fake_rejects_undocumented_query_parameters(gitea_env: ForgeEnv) -> None:
    httpx.get(f"{gitea_env.fake.url}/repos/acme/env/pulls", params={"state": "opened"},
              headers={"Authorization": f"token {TOKEN}"})
    assert any("state='opened'" in v for v in gitea_env.fake.violations)
    gitea_env.fake.violations.clear()


def test_strict_schemas_reject_invented_response_fields() -> None:
    github = github_spec()
    pr = github.skeleton(github.schema("pull-request"))
    assert github.errors(github.schema("pull-request"), pr) == []
    assert github.errors(github.schema("pull-request"), {**pr, "merge_sha": "x"})  # not a GitHub field
    simple = github.skeleton(github.schema("pull-request-simple"))
    assert github.errors(github.schema("pull-request-simple"), {**simple, "merged": True})  # list shape has no `merged`
    gitea = gitea_spec()
    assert gitea.errors(gitea.schema("PullRequest"), {"number": 1, "iid": 1})  # GitLab's word, not Gitea's
