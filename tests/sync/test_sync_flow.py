"""`sync_repository` and `meshgen sync`, in-process: real repositories, real Redis, real fake forges."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
from forges._github_fake import GitHubFake
from forges._gitrepo import BareRepo
from sync_support import REDIS_DB_URL, RedisNS, env_repo, make_root, open_prs, prs_for, set_split

from meshgen.forges.local import LocalForge
from meshgen.gitops.sync import sync_repository
from meshgen.settings import Settings

TOKEN = "mgtok_5b2d4c6e8a0b1c2d3e4f5a6b9f3c1a7e"
FAST = {"max_attempts": 3, "max_wait": 5.0, "backoff": 0.01, "timeout": 5.0}


def _meshgen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("MESHGEN_")}
    return subprocess.run([sys.executable, "-m", "meshgen", *args], capture_output=True, text=True, check=False,
                          env={**base, **(env or {})}, timeout=60)


def test_first_sync_creates_the_embedded_repo_and_one_pr_per_service(root: Path, settings: Settings,
                                                                      rns: RedisNS) -> None:
    job = sync_repository(root, settings, records=rns.records, blueprint_commit="c0ffee")
    assert job.state == "succeeded" and job.blueprint_commit == "c0ffee"
    assert sorted((p.branch, p.action) for p in job.prs) == [
        ("meshgen/production/shop/cart", "opened"), ("meshgen/production/shop/checkout", "opened")]
    assert set(job.timings) >= {"render", "repo", "forge", "total"}
    repo = pygit2.Repository(str(env_repo(root)))
    assert repo.references["refs/heads/main"].peel(pygit2.Commit).message == "meshgen: initial commit\n"
    assert len(open_prs(root)) == 2
    stored = rns.records.get_job(job.id)
    assert stored is not None and stored.state == "succeeded" and len(stored.prs) == 2
    unit = rns.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.pr is not None and unit.pr.state == "open"
    assert unit.up_to_date is False and unit.blueprint_path == "blueprints/cart.yaml"
    assert unit.blueprint_commit == "c0ffee" and unit.job_id == job.id


def test_second_sync_updates_the_changed_pr_only(root: Path, settings: Settings, rns: RedisNS) -> None:
    sync_repository(root, settings, records=rns.records)
    set_split(root, "cart", 40)
    job = sync_repository(root, settings, records=rns.records)
    assert {p.branch.rsplit("/", 1)[1]: p.action for p in job.prs} == {"cart": "updated", "checkout": "unchanged"}
    assert len(prs_for(root, "cart")) == 1 and len(open_prs(root)) == 2


def test_merged_pr_makes_the_unit_up_to_date(root: Path, settings: Settings, rns: RedisNS) -> None:
    from meshgen.forges.local import LocalForge

    job = sync_repository(root, settings, records=rns.records)
    cart = next(p for p in job.prs if p.branch.endswith("/cart"))
    merged = LocalForge(env_repo(root)).merge(cart.number or 0)
    sync_repository(root, settings, records=rns.records)
    unit = rns.records.get_unit("production", "shop", "cart")
    # The merged pull request stays on the unit, with its merge commit: what Argo CD must run.
    assert unit is not None and unit.up_to_date is True and unit.pr is not None
    assert unit.pr.state == "merged" and unit.pr.number == cart.number
    assert unit.pr.merge_sha == merged.merge_sha and len(unit.pr.merge_sha or "") == 40
    other = rns.records.get_unit("production", "shop", "checkout")
    assert other is not None and other.pr is not None and other.pr.state == "open"


def test_deleted_blueprint_is_removed_and_its_record_follows(root: Path, settings: Settings,
                                                             rns: RedisNS) -> None:
    from meshgen.forges.local import LocalForge

    job = sync_repository(root, settings, records=rns.records)
    forge = LocalForge(env_repo(root))
    for pr in job.prs:
        forge.merge(pr.number or 0)
    (root / "blueprints" / "checkout.yaml").unlink()
    job = sync_repository(root, settings, records=rns.records)
    assert [(p.branch, p.action) for p in job.prs] == [("meshgen/production/shop/checkout", "opened")]
    unit = rns.records.get_unit("production", "shop", "checkout")
    assert unit is not None and unit.up_to_date is False and unit.pr is not None


def test_blueprint_error_holds_back_only_its_unit(root: Path, settings: Settings, rns: RedisNS) -> None:
    sync_repository(root, settings, records=rns.records)
    repo = pygit2.Repository(str(env_repo(root)))
    cart_head = str(repo.references["refs/heads/meshgen/production/shop/cart"].target)
    checkout_head = str(repo.references["refs/heads/meshgen/production/shop/checkout"].target)
    (root / "blueprints" / "cart.yaml").write_text((root / "blueprints" / "cart.yaml").read_text()
                                                   .replace("v2: 10}", "v2: 15}"))
    set_split(root, "checkout", 40)  # another team's change in the same push
    job = sync_repository(root, settings, records=rns.records)
    assert job.state == "partial" and any("cart.yaml" in e and "sum to 100" in e for e in job.errors)
    assert {p.branch.rsplit("/", 1)[1]: p.action for p in job.prs} == {"cart": "unchanged", "checkout": "updated"}
    repo = pygit2.Repository(str(env_repo(root)))
    assert str(repo.references["refs/heads/meshgen/production/shop/cart"].target) == cart_head
    assert str(repo.references["refs/heads/meshgen/production/shop/checkout"].target) != checkout_head
    unit = rns.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.render_state == "render-failed"
    assert unit.render_error is not None and unit.render_error.startswith("blueprints/cart.yaml:")
    healthy = rns.records.get_unit("production", "shop", "checkout")
    assert healthy is not None and healthy.render_state == "rendered"
    assert rns.records.get_job(job.id).state == "partial"  # type: ignore[union-attr]


def test_a_merged_unit_whose_file_breaks_is_not_removed(root: Path, settings: Settings, rns: RedisNS) -> None:
    job = sync_repository(root, settings, records=rns.records)
    forge = LocalForge(env_repo(root))
    for p in job.prs:
        forge.merge(p.number or 0)
    sync_repository(root, settings, records=rns.records)
    (root / "blueprints" / "cart.yaml").write_text("")  # an empty file names no service at all
    (root / "blueprints" / "new.yaml").write_text("")  # nor does an empty new one
    set_split(root, "checkout", 40)
    job = sync_repository(root, settings, records=rns.records)
    assert job.state == "partial" and len(job.errors) == 2
    assert [(p.branch.rsplit("/", 1)[1], p.action) for p in job.prs] == [("checkout", "opened")]
    assert not prs_for(root, "cart", "open")  # no removal PR for the folder of a file that failed to load
    unit = rns.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.render_state == "render-failed" and "cart.yaml" in (unit.render_error or "")


def test_two_blueprints_claiming_one_service_block_only_that_service(root: Path, settings: Settings,
                                                                     rns: RedisNS) -> None:
    (root / "blueprints" / "cart-copy.yaml").write_text((root / "blueprints" / "cart.yaml").read_text())
    job = sync_repository(root, settings, records=rns.records)
    assert job.state == "partial"
    assert {e.split(":", 1)[0] for e in job.errors} == {"blueprints/cart.yaml", "blueprints/cart-copy.yaml"}
    assert [(p.branch.rsplit("/", 1)[1], p.action) for p in job.prs] == [("checkout", "opened")]
    unit = rns.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.render_state == "render-failed" and "also claimed" in (unit.render_error or "")


def test_cli_sync_without_redis_prints_a_report(root: Path) -> None:
    out = _meshgen("sync", str(root), env={"MESHGEN_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 0, out.stderr
    assert "Redis not reachable" in out.stderr
    assert "opened" in out.stdout and "meshgen/production/shop/cart" in out.stdout
    assert len(open_prs(root)) == 2


def test_cli_sync_records_json_and_exit_1_on_blueprint_errors(root: Path, rns: RedisNS) -> None:
    env = {"MESHGEN_REDIS_URL": REDIS_DB_URL, "MESHGEN_REDIS_PREFIX": rns.prefix}
    out = _meshgen("sync", str(root), "--json", "--commit", "abc123", env=env)
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["state"] == "succeeded" and job["blueprint_commit"] == "abc123"
    assert rns.records.get_job(job["id"]) is not None
    (root / "blueprints" / "cart.yaml").write_text("service: cart\nnamespace: shop\nroutes: 3\n")
    set_split(root, "checkout", 40)
    bad = _meshgen("sync", str(root), env=env)
    assert bad.returncode == 1
    assert "blueprints/cart.yaml" in bad.stderr and "held back" in bad.stderr
    assert "updated" in bad.stdout and "meshgen/production/shop/checkout" in bad.stdout  # still delivered


def _github_root(tmp_path: Path, fake_url: str, bare: str) -> Path:
    forge = (f"envRepo:\n  url: {bare}\n  forge: {{kind: github, owner: acme, repo: env, baseUrl: {fake_url},"
             " tokenEnv: MGTEST_FORGE_TOKEN}\n")
    return make_root(tmp_path / "gh", ["cart"], extra_config=forge)


@pytest.mark.parametrize("status", [500, 429])
def test_forge_500_and_429_are_retried_into_one_pr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   rns: RedisNS, status: int) -> None:
    bare = BareRepo(tmp_path / "env.git")
    fake = GitHubFake(bare, TOKEN).start()
    try:
        monkeypatch.setenv("MGTEST_FORGE_TOKEN", TOKEN)
        root = _github_root(tmp_path, fake.url, fake.git_url)
        settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix)
        headers = (lambda: {"Retry-After": "0"}) if status == 429 else dict
        fake.inject("POST", "/repos/{owner}/{repo}/pulls", status, times=1, headers=headers)
        fake.inject("GET", "/repos/{owner}/{repo}/pulls", status, times=1, headers=headers)
        job = sync_repository(root, settings, records=rns.records, forge_options=FAST)
        assert [p.action for p in job.prs] == ["opened"]
        assert fake.count("POST", "/repos/{owner}/{repo}/pulls") == 2  # the failed one and its retry
        assert len(fake.prs) == 1
        assert TOKEN not in json.dumps(job.model_dump()) and TOKEN not in str(rns.client.keys(f"{rns.prefix}*"))
        assert not fake.violations, fake.violations
    finally:
        fake.stop()


def test_forge_down_fails_the_job_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rns: RedisNS) -> None:
    from meshgen.forges.base import ForgeError

    bare = BareRepo(tmp_path / "env.git")
    fake = GitHubFake(bare, TOKEN).start()
    try:
        monkeypatch.setenv("MGTEST_FORGE_TOKEN", TOKEN)
        root = _github_root(tmp_path, fake.url, fake.git_url)
        settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix)
        fake.inject("GET", "/repos/{owner}/{repo}/pulls", 500, times=None)
        with pytest.raises(ForgeError):
            sync_repository(root, settings, records=rns.records, forge_options=FAST)
        job = rns.records.recent_jobs(1)[0]
        assert job.state == "failed" and "HTTP 500" in job.errors[0] and "gave up after 3 attempts" in job.errors[0]
        assert TOKEN not in job.errors[0]
    finally:
        fake.stop()


def test_same_content_on_same_base_is_skipped_when_asked(root: Path, settings: Settings, rns: RedisNS) -> None:
    first = sync_repository(root, settings, records=rns.records, skip_if_synced=True)
    again = sync_repository(root, settings, records=rns.records, skip_if_synced=True)
    assert again.prs == [] and any(first.id in w for w in again.warnings)
    set_split(root, "cart", 30)
    changed = sync_repository(root, settings, records=rns.records, skip_if_synced=True)
    assert [p.action for p in changed.prs if p.branch.endswith("/cart")] == ["updated"]


def test_descriptions_name_the_blueprint_commit_of_a_clean_checkout(root: Path, settings: Settings) -> None:
    repo = pygit2.init_repository(str(root), initial_head="main")
    (root / ".gitignore").write_text(".meshgen/\n")
    repo.index.add_all()
    repo.index.write()
    author = pygit2.Signature("Grace Hopper", "grace@example.com")
    sha = repo.create_commit("HEAD", author, author, "cart: canary 10%\n\nbody\n", repo.index.write_tree(), [])
    job = sync_repository(root, settings)
    assert job.blueprint_commit == str(sha) and job.blueprint_author == "Grace Hopper"
    assert job.blueprint_subject == "cart: canary 10%"
    body = LocalForge(env_repo(root)).get(prs_for(root, "cart")[0].number).body
    assert f"`{sha}` by Grace Hopper: cart: canary 10%" in body
    # Uncommitted edits are never attributed to HEAD.
    set_split(root, "cart", 30)
    dirty = sync_repository(root, settings)
    assert dirty.blueprint_commit is None and dirty.blueprint_author is None
