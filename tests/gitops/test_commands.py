"""`meshgen pr ...` through click's test runner, on a real repository with real PRs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from gitops_support import Origin, make_unit, semantic

from meshgen.gitops.commands import JSON_FIELDS, pr, scope_of
from meshgen.gitops.envrepo import EnvRepo
from meshgen.forges.local import LocalForge
from meshgen.gitops.lifecycle import sync_env


@pytest.fixture
def repo_with_prs(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> Path:
    units = [make_unit("api"), make_unit("web"), make_unit("_mesh", team=None)]
    sync_env(env_repo, forge, units, env="staging", env_path="staging", describe=semantic)
    return origin.path


def _run(repo: Path, *args: str) -> str:
    result = CliRunner().invoke(pr, ["--repo", str(repo), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_list_json_has_exactly_the_documented_fields(repo_with_prs: Path) -> None:
    items = json.loads(_run(repo_with_prs, "list", "--json"))
    assert [i["number"] for i in items] == [3, 2, 1]
    assert all(list(i) == list(JSON_FIELDS) for i in items)
    by_branch = {i["branch"]: i for i in items}
    api = by_branch["meshgen/staging/production/api"]
    assert (api["env"], api["namespace"], api["service"], api["state"], api["base"]) == (
        "staging",
        "production",
        "api",
        "open",
        "main",
    )
    assert api["merge_sha"] is None and len(api["head_sha"]) == 40 and api["url"].startswith("file://")
    mesh = by_branch["meshgen/staging/_mesh"]
    assert (mesh["namespace"], mesh["service"]) == ("", "_mesh")
    assert json.loads(_run(repo_with_prs, "list", "--json", "--state", "merged")) == []
    assert "meshgen/staging/production/web" in _run(repo_with_prs, "list")


def test_show_merge_close(repo_with_prs: Path, origin: Origin) -> None:
    number = next(
        i["number"] for i in json.loads(_run(repo_with_prs, "list", "--json")) if i["service"] == "api"
    )
    shown = json.loads(_run(repo_with_prs, "show", str(number), "--json"))
    assert list(shown) == list(JSON_FIELDS) and shown["number"] == number
    human = _run(repo_with_prs, "show", str(number))
    assert "staging/production/api/virtualservice.yaml: added" in human

    merged = json.loads(_run(repo_with_prs, "merge", str(number), "--json"))
    assert merged["state"] == "merged" and merged["merge_sha"] == str(origin.tip("main").id)

    other = next(i["number"] for i in json.loads(_run(repo_with_prs, "list", "--json", "--state", "open")))
    out = _run(repo_with_prs, "close", str(other), "--comment", "not now")
    assert f"closed #{other}" in out
    assert "not now" in _run(repo_with_prs, "show", str(other))
    states = {i["number"]: i["state"] for i in json.loads(_run(repo_with_prs, "list", "--json"))}
    assert states[number] == "merged" and states[other] == "closed"
    # The second merge of a merged PR is an error with a non-zero exit, not a traceback.
    again = CliRunner().invoke(pr, ["--repo", str(repo_with_prs), "merge", str(number)])
    assert again.exit_code == 1 and "is merged" in again.output


def test_missing_repo_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(pr, ["--repo", str(tmp_path / "none"), "list"])
    assert result.exit_code == 1 and "no environment repository" in result.output


def test_default_repo_is_under_cwd(
    repo_with_prs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "blueprints-checkout"
    (work / ".meshgen").mkdir(parents=True)
    (work / ".meshgen" / "env-repo").symlink_to(repo_with_prs)
    monkeypatch.chdir(work)
    result = CliRunner().invoke(pr, ["list", "--json"])
    assert result.exit_code == 0 and len(json.loads(result.output)) == 3


def test_scope_of_branches() -> None:
    assert scope_of("meshgen/prod/payments/api") == ("prod", "payments", "api")
    assert scope_of("meshgen/prod/team-payments") == ("prod", None, None)
    assert scope_of("meshgen/prod/all") == ("prod", None, None)
    assert scope_of("feature/x") == (None, None, None)
