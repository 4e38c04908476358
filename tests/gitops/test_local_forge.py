"""The local forge: PR records as refs, compare-and-swap, real merges (real repositories)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pygit2
import pytest
from gitops_support import Origin, tree_files

from meshgen.forges import Forge, ForgeError, make_forge
from meshgen.forges.local import LocalForge


def _branch(origin: Origin, name: str, files: dict[str, bytes]) -> pygit2.Oid:
    """A head branch one commit on top of main."""
    origin.repo.references.create(f"refs/heads/{name}", origin.tip("main").id)
    return origin.commit_on(name, files, f"change on {name}")


def _open(forge: LocalForge, origin: Origin, name: str = "meshgen/staging/production/api") -> int:
    _branch(origin, name, {f"staging/production/{name.rsplit('/', 1)[-1]}/vs.yaml": b"a: 1\n"})
    return forge.create(branch=name, base="main", title="t", body="b", labels=("meshgen",)).number


def test_factory_and_protocol(origin: Origin) -> None:
    forge = make_forge("local", path=origin.path)
    assert isinstance(forge, Forge) and forge.kind == "local"
    with pytest.raises(ForgeError, match="unknown forge kind"):
        make_forge("bitbucket")


def test_registry_imports_no_optional_dependency() -> None:
    """The registry imports every provider statically (one registration line each), so PyJWT, only
    needed for a GitHub App, is imported by the provider when an app is configured, not before."""
    import subprocess
    import sys

    code = "import sys, meshgen.forges, meshgen.blueprint.config; assert 'jwt' not in sys.modules, 'jwt loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_create_find_update_comment(forge: LocalForge, origin: Origin) -> None:
    head = _branch(origin, "meshgen/staging/production/api", {"staging/production/api/vs.yaml": b"a: 1\n"})
    pr = forge.create(
        branch="meshgen/staging/production/api",
        base="main",
        title="T",
        body="B",
        labels=("meshgen", "env/staging"),
    )
    assert (pr.number, pr.state, pr.head_sha, pr.merge_sha) == (1, "open", str(head), None)
    assert pr.url == f"{origin.path.resolve().as_uri()}#pr-1"
    assert forge.find_open("meshgen/staging/production/api") == pr
    assert forge.find_open("meshgen/staging/production/web") is None
    with pytest.raises(ForgeError, match="already open"):
        forge.create(branch="meshgen/staging/production/api", base="main", title="x", body="y", labels=())
    updated = forge.update(1, title="T2", body="B2", labels=("meshgen",))
    assert (updated.title, updated.body, updated.labels) == ("T2", "B2", ("meshgen",))
    forge.comment(1, "hello")
    assert [c["body"] for c in forge.comments(1)] == ["hello"]
    # Every change is a commit on the record ref: an audit trail.
    walker = origin.repo.walk(origin.repo.references["refs/meshgen/prs/1"].target)
    assert len(list(walker)) == 3


def test_close_frees_the_branch_for_a_new_pr(forge: LocalForge, origin: Origin) -> None:
    number = _open(forge, origin)
    closed = forge.close(number, comment="not needed")
    assert closed.state == "closed"
    assert forge.find_open("meshgen/staging/production/api") is None
    assert forge.comments(number)[-1]["body"] == "not needed"
    with pytest.raises(ForgeError, match="is closed"):
        forge.update(number, title="x", body="y", labels=())
    again = forge.create(branch="meshgen/staging/production/api", base="main", title="t", body="b", labels=())
    assert again.number == number + 1
    assert [p.number for p in forge.list()] == [again.number, number]
    assert [p.number for p in forge.list("closed")] == [number]


def test_merge_fast_forwards_when_possible(forge: LocalForge, origin: Origin) -> None:
    number = _open(forge, origin)
    head = origin.tip("meshgen/staging/production/api").id
    merged = forge.merge(number)
    assert merged.state == "merged" and merged.merge_sha == str(head)
    assert origin.tip("main").id == head
    assert forge.find_open("meshgen/staging/production/api") is None
    with pytest.raises(ForgeError, match="is merged"):
        forge.merge(number)


def test_merge_creates_a_real_merge_commit_when_base_moved(forge: LocalForge, origin: Origin) -> None:
    number = _open(forge, origin)
    head = origin.tip("meshgen/staging/production/api").id
    moved = origin.commit_on("main", {"staging/production/web/vs.yaml": b"w: 1\n"}, "someone else")
    merged = forge.merge(number)
    commit = origin.tip("main")
    assert merged.merge_sha == str(commit.id)
    assert commit.parent_ids == [moved, head]
    assert forge.get(number).merge_sha == str(commit.id)
    files = tree_files(origin.repo, commit.tree)
    assert files["staging/production/api/vs.yaml"] == b"a: 1\n"
    assert files["staging/production/web/vs.yaml"] == b"w: 1\n"


def test_merge_conflict_fails_clearly_and_keeps_pr_open(forge: LocalForge, origin: Origin) -> None:
    number = _open(forge, origin)
    origin.commit_on("main", {"staging/production/api/vs.yaml": b"a: 2\n"}, "conflicting edit")
    before = origin.tip("main").id
    with pytest.raises(ForgeError, match=r"conflicts with 'main' in: staging/production/api/vs.yaml"):
        forge.merge(number)
    assert origin.tip("main").id == before
    assert forge.get(number).state == "open"


def _create_in_process(path: str, branch: str, out: mp.Queue[object]) -> None:
    try:
        pr = LocalForge(path).create(branch=branch, base="main", title=branch, body="", labels=())
        out.put(pr.number)
    except ForgeError as exc:
        out.put(str(exc))


@pytest.mark.slow
def test_numbers_are_unique_across_processes(origin: Origin) -> None:
    branches = [f"meshgen/staging/production/svc{i}" for i in range(8)]
    for b in branches:
        _branch(origin, b, {f"staging/production/{b[-4:]}/vs.yaml": b"x: 1\n"})
    branches += branches[:4]  # half of the processes race for an already-raced branch
    ctx = mp.get_context("spawn")
    out: mp.Queue[object] = ctx.Queue()
    procs = [ctx.Process(target=_create_in_process, args=(str(origin.path), b, out)) for b in branches]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = [out.get(timeout=5) for _ in procs]
    numbers = [r for r in results if isinstance(r, int)]
    assert sorted(numbers) == list(range(1, 9))
    assert all("already open" in r for r in results if isinstance(r, str))
    forge = LocalForge(origin.path)
    assert sorted(p.branch for p in forge.list("open")) == sorted(set(branches))


def test_unknown_number_and_missing_repo(forge: LocalForge, tmp_path: Path) -> None:
    with pytest.raises(ForgeError, match="no pull request #7"):
        forge.get(7)
    with pytest.raises(ForgeError, match="not a git repository"):
        LocalForge(tmp_path / "missing")
    with pytest.raises(ForgeError, match="push it before"):
        forge.create(branch="meshgen/nope", base="main", title="t", body="b", labels=())
