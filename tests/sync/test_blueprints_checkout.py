"""MESHGEN_BLUEPRINTS_URL: every sync fetches the blueprints repository and renders the pushed commit.

Real parts: a bare blueprints repository written with pygit2 (what a push does), the worker's
task body run in-process against Redis DB 13, the embedded environment repository and its
local forge, and `meshgen sync` as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
from forges._gitrepo import BareRepo
from sync_support import MESHGEN_YAML, REDIS_DB_URL, RedisNS, blueprint, env_repo, open_prs, prs_for

from meshgen.gitops import blueprints as bp_mod
from meshgen.gitops.blueprints import KEEP_CHECKOUTS, BlueprintsSourceError, checkout_blueprints
from meshgen.gitops.coordination import Generations
from meshgen.gitops.jobs import SyncRequest, _scope, enqueue_sync, make_celery, run_sync_job
from meshgen.records import JobRecord
from meshgen.settings import Settings


@pytest.fixture
def origin(tmp_path: Path) -> BareRepo:
    """The blueprints repository on the forge: meshgen.yaml + two services on main."""
    repo = BareRepo(tmp_path / "blueprints.git")
    repo.commit_files("main", {"meshgen.yaml": MESHGEN_YAML, "blueprints/cart.yaml": blueprint("cart", 10),
                               "blueprints/checkout.yaml": blueprint("checkout", 10)}, "two services")
    return repo


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """MESHGEN_ROOT of the worker: no blueprints of its own (state, embedded environment repo)."""
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def settings(ws: Path, origin: BareRepo, rns: RedisNS) -> Settings:
    return Settings(root=ws, blueprints_url=str(origin.repo.path), redis_url=REDIS_DB_URL,
                    redis_prefix=rns.prefix, lock_ttl=2, lock_wait=5, sync_debounce=0)


def push_split(origin: BareRepo, service: str, v2: int) -> str:
    return origin.commit_files("main", {f"blueprints/{service}.yaml": blueprint(service, v2)}, f"{service}: v2 {v2}")


def webhook_sync(settings: Settings, rns: RedisNS, commit: str | None) -> JobRecord:
    """What a push webhook does (enqueue with the pushed sha), then the worker's task body in-process."""
    app = make_celery(settings)
    try:
        queued = enqueue_sync(app, settings, rns.records, SyncRequest(trigger="webhook:github", blueprint_commit=commit,
                                                                      blueprint_author="dev"))
    finally:
        app.close()
    gen = Generations(rns.client, rns.prefix, _scope(None)).latest()
    return run_sync_job(settings, rns.records, job_id=queued.id, gen=gen)


def pr_file(ws: Path, branch: str, name: str) -> str:
    repo = pygit2.Repository(str(env_repo(ws)))
    tree = repo.references[f"refs/heads/{branch}"].peel(pygit2.Commit).tree
    return repo[tree[f"production/shop/cart/{name}"].id].data.decode()  # type: ignore[union-attr]


def test_a_push_renders_the_new_commit_and_the_pr_shows_it(ws: Path, origin: BareRepo, settings: Settings,
                                                            rns: RedisNS) -> None:
    first = webhook_sync(settings, rns, origin.tip("main"))
    assert first.state == "succeeded" and first.blueprint_commit == origin.tip("main")
    assert len(open_prs(ws)) == 2
    assert not (ws / "blueprints").exists()  # ROOT itself is never read for blueprints

    checkout_head = prs_for(ws, "checkout", "open")[0].head_sha
    new = push_split(origin, "cart", 40)
    job = webhook_sync(settings, rns, new)
    assert job.state == "succeeded", job.errors
    assert job.blueprint_commit == new and not job.warnings
    assert {p.branch.rsplit("/", 1)[1] for p in job.prs if p.action == "updated"} >= {"cart"}
    assert prs_for(ws, "checkout", "open")[0].head_sha == checkout_head  # its content did not change
    [pr] = prs_for(ws, "cart", "open")
    assert new in pr.body  # the PR names the commit it rendered
    assert "weight: 40" in pr_file(ws, pr.branch, "virtualservice-cart.yaml")
    unit = rns.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.blueprint_commit == new
    stored = rns.records.get_job(job.id)
    assert stored is not None and stored.blueprint_commit == new and "checkout" in stored.timings


def test_a_stale_sha_renders_the_newest_tip(ws: Path, origin: BareRepo, settings: Settings, rns: RedisNS) -> None:
    stale = push_split(origin, "cart", 30)
    tip = push_split(origin, "cart", 50)  # a newer push landed before the first webhook's job ran
    job = webhook_sync(settings, rns, stale)
    assert job.state == "succeeded" and job.blueprint_commit == tip
    assert any(stale[:12] in w and "newest push wins" in w for w in job.warnings)
    [pr] = prs_for(ws, "cart", "open")
    assert "weight: 50" in pr_file(ws, pr.branch, "virtualservice-cart.yaml") and tip in pr.body
    unit = rns.records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.blueprint_commit == tip
    short = webhook_sync(settings, rns, tip[:10])  # an abbreviated sha of the tip is fine too
    assert short.state == "succeeded" and short.blueprint_commit == tip
    assert not any("newest push wins" in w for w in short.warnings)


@pytest.mark.parametrize("kind", ["other-branch", "unknown", "not-a-sha"])
def test_a_sha_not_on_the_branch_is_refused(ws: Path, origin: BareRepo, settings: Settings, rns: RedisNS,
                                            kind: str) -> None:
    sha = {"other-branch": lambda: origin.commit_files("feature", {"blueprints/cart.yaml": blueprint("cart", 90)},
                                                       "feature", start="main"),
           "unknown": lambda: "0123456789abcdef0123456789abcdef01234567",
           "not-a-sha": lambda: "main~1"}[kind]()
    job = webhook_sync(settings, rns, sha)
    assert job.state == "failed"
    assert len(job.errors) == 1 and f"commit {sha} is not on branch 'main'" in job.errors[0]
    assert "refusing to render it" in job.errors[0]
    stored = rns.records.get_job(job.id)
    assert stored is not None and stored.state == "failed" and stored.errors == job.errors
    assert not env_repo(ws).exists() and open_prs(ws) == []  # nothing rendered, nothing pushed
    assert Generations(rns.client, rns.prefix, _scope(None)).covered_by(1) is None  # the request stays open
    ok = webhook_sync(settings, rns, origin.tip("main"))  # a later push still syncs
    assert ok.state == "succeeded" and len(open_prs(ws)) == 2


def test_without_a_commit_the_tip_is_rendered(ws: Path, origin: BareRepo, settings: Settings, rns: RedisNS) -> None:
    job = webhook_sync(settings, rns, None)
    assert job.state == "succeeded" and job.blueprint_commit == origin.tip("main")


def test_commits_in_a_row_reuse_the_mirror_and_keep_the_last_checkouts(tmp_path: Path, origin: BareRepo) -> None:
    state = tmp_path / "state"
    shas, paths = [], []
    for v2 in (20, 30, 40, 50, 60):
        shas.append(push_split(origin, "cart", v2))
        path, sha = checkout_blueprints(str(origin.repo.path), "main", state)
        assert sha == shas[-1] and path == state / "checkouts" / sha
        assert (path / "blueprints" / "cart.yaml").read_text() == blueprint("cart", v2)
        assert (path / "meshgen.yaml").read_text() == MESHGEN_YAML and not (path / "README.md").exists()
        paths.append(path)
    assert [p.name.startswith("blueprints-") for p in (state / "mirrors").glob("*.git")] == [True]  # one mirror
    assert sorted(p.name for p in (state / "checkouts").iterdir() if not p.name.startswith(".")) == sorted(
        shas[-KEEP_CHECKOUTS:])
    # The same commit again: the complete folder is reused, not rewritten.
    marker = paths[-1] / "blueprints" / "cart.yaml"
    before = marker.stat().st_ino
    again, sha = checkout_blueprints(f"file://{origin.repo.path}", "main", state, commit=shas[-2])
    assert again == paths[-1] and sha == shas[-1] and marker.stat().st_ino == before


def test_two_syncs_share_one_mirror_and_prune_checkouts(ws: Path, origin: BareRepo, settings: Settings,
                                                        rns: RedisNS) -> None:
    for v2 in (20, 30, 40, 50):
        job = webhook_sync(settings, rns, push_split(origin, "cart", v2))
        assert job.state == "succeeded"
    state = ws / ".meshgen"
    assert len(list((state / "mirrors").glob("blueprints-*.git"))) == 1
    assert len([p for p in (state / "checkouts").iterdir() if not p.name.startswith(".")]) == KEEP_CHECKOUTS


def test_a_crash_mid_checkout_leaves_no_half_checkout(tmp_path: Path, origin: BareRepo,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    checkouts = state / "checkouts"
    real = bp_mod._write_tree
    calls = {"n": 0}

    def crash_after_first_file(repo: pygit2.Repository, tree: pygit2.Tree, dest: Path) -> None:
        dest.mkdir()
        (dest / "cart.yaml").write_text("half")
        calls["n"] += 1
        raise KeyboardInterrupt("worker killed mid-write")

    monkeypatch.setattr(bp_mod, "_write_tree", crash_after_first_file)
    with pytest.raises(KeyboardInterrupt):
        checkout_blueprints(str(origin.repo.path), "main", state)
    assert calls["n"] == 1 and list(checkouts.iterdir()) == [checkouts / ".lock"]  # no checkout, no temp

    # A hard kill cannot clean up: its temp folder (here: for the very commit we need) is left over.
    sha = origin.tip("main")
    assert sha is not None
    leftover = checkouts / f".tmp-{sha[:12]}-dead"
    (leftover / "blueprints").mkdir(parents=True)
    (leftover / "blueprints" / "cart.yaml").write_text("half")
    monkeypatch.setattr(bp_mod, "_write_tree", real)
    path, got = checkout_blueprints(str(origin.repo.path), "main", state)
    assert got == sha and not leftover.exists()
    assert sorted(p.name for p in (path / "blueprints").iterdir()) == ["cart.yaml", "checkout.yaml"]
    assert (path / "blueprints" / "cart.yaml").read_text() == blueprint("cart", 10)


def test_missing_branch_or_blueprints_folder_is_refused(tmp_path: Path, origin: BareRepo) -> None:
    with pytest.raises(BlueprintsSourceError, match="branch 'trunk' does not exist"):
        checkout_blueprints(str(origin.repo.path), "trunk", tmp_path / "s")
    origin.commit_files("docs", {"README.md": "no blueprints here\n"}, "docs", start=None)
    with pytest.raises(BlueprintsSourceError, match="has no blueprints/ folder"):
        checkout_blueprints(str(origin.repo.path), "docs", tmp_path / "s")
    with pytest.raises(BlueprintsSourceError, match="does not exist; fix MESHGEN_BLUEPRINTS_URL"):
        checkout_blueprints(str(tmp_path / "nope.git"), "main", tmp_path / "s")


def test_meshgen_yaml_at_root_shadows_the_commits(ws: Path, origin: BareRepo, settings: Settings,
                                                  rns: RedisNS) -> None:
    # The Helm chart mounts meshgen.yaml from a ConfigMap at MESHGEN_ROOT; the API reads that one too.
    (ws / "meshgen.yaml").write_text("environments:\n  staging: {mesh: istio, path: staging}\n")
    job = webhook_sync(settings, rns, origin.tip("main"))
    assert job.state == "succeeded"
    assert sorted(p.branch for p in job.prs) == ["meshgen/staging/shop/cart", "meshgen/staging/shop/checkout"]


def test_cli_sync_fetches_the_blueprints_repository(ws: Path, origin: BareRepo) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESHGEN_")}
    env = {**base, "MESHGEN_BLUEPRINTS_URL": f"file://{origin.repo.path}",
           "MESHGEN_REDIS_URL": "redis://127.0.0.1:1/0"}

    def meshgen_sync(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meshgen", "sync", str(ws), "--no-records", *args],
                              capture_output=True, text=True, check=False, env=env, timeout=60)

    new = push_split(origin, "cart", 70)
    out = meshgen_sync("--json", "--commit", new)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["blueprint_commit"] == new
    [pr] = prs_for(ws, "cart", "open")
    assert "weight: 70" in pr_file(ws, pr.branch, "virtualservice-cart.yaml")
    bad = meshgen_sync("--commit", "0123456789abcdef0123456789abcdef01234567")
    assert bad.returncode == 3 and "is not on branch 'main'" in bad.stderr
