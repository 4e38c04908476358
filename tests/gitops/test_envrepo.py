"""The environment-repository writer: in-memory trees, ownership, leased pushes (real repositories)."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest
from gitops_support import FOREIGN, Clock, Origin, make_unit, manifest, tree_files

from meshgen.gitops.envrepo import (
    EnvRepo,
    EnvRepoError,
    LeaseError,
    folder_differs,
    lookup_tree,
    managed_files,
    stale_folders,
    write_tree,
)
from meshgen.units import Unit, content_hash, is_managed


def _base(env_repo: EnvRepo) -> pygit2.Commit:
    env_repo.fetch()
    commit = env_repo.commit_at("main")
    assert commit is not None
    return commit


def test_is_managed_recognises_label_forms() -> None:
    assert is_managed(b"metadata:\n  labels:\n    app.kubernetes.io/managed-by: meshgen\n")
    assert is_managed(b'labels: {"app.kubernetes.io/managed-by": "meshgen", a: b}\n')
    assert not is_managed(b"labels:\n  app.kubernetes.io/managed-by: helm\n")
    assert not is_managed(b"labels:\n  app.kubernetes.io/managed-by: meshgen-fork\n")


def test_write_tree_replaces_only_owned_folders(env_repo: EnvRepo) -> None:
    base = _base(env_repo)
    repo = env_repo.repo
    tree = repo[write_tree(repo, base.tree, [make_unit("api"), make_unit("_mesh", team=None)])]
    files = tree_files(repo, tree)
    for path, data in FOREIGN.items():
        assert files[path] == data, f"foreign file {path} was touched"
    assert set(files) - set(FOREIGN) == {
        "staging/production/api/virtualservice.yaml",
        "staging/production/api/destinationrule.yaml",
        "staging/_mesh/virtualservice.yaml",
        "staging/_mesh/destinationrule.yaml",
    }
    # Untouched subtrees keep their OIDs: nothing outside the changed paths was rebuilt.
    assert tree["staging/production/legacy-app"].id == base.tree["staging/production/legacy-app"].id


def test_write_tree_is_deterministic_and_a_noop_when_nothing_changes(env_repo: EnvRepo) -> None:
    base = _base(env_repo)
    repo = env_repo.repo
    units = [make_unit("api"), make_unit("web")]
    first = write_tree(repo, base.tree, units)
    assert write_tree(repo, base.tree, list(reversed(units))) == first
    assert write_tree(repo, repo[first], units) == first
    assert not folder_differs(repo, repo[first], units[0])
    assert folder_differs(repo, repo[first], make_unit("api", weight=25))
    assert content_hash(units) == content_hash(list(reversed(units)))


def test_foreign_files_inside_an_owned_folder_survive(origin: Origin, env_repo: EnvRepo) -> None:
    origin.commit_on("main", {"staging/production/api/README.md": b"owner notes\n"})
    base = _base(env_repo)
    repo = env_repo.repo
    first = repo[write_tree(repo, base.tree, [make_unit("api")])]
    assert tree_files(repo, first)["staging/production/api/README.md"] == b"owner notes\n"
    # A later render with fewer files drops only the owned file it no longer renders.
    smaller = make_unit("api", files={"virtualservice.yaml": manifest("VirtualService", "api")})
    second = tree_files(repo, repo[write_tree(repo, first, [smaller])])
    assert "staging/production/api/destinationrule.yaml" not in second
    assert second["staging/production/api/README.md"] == b"owner notes\n"
    assert set(managed_files(repo, first, "staging/production/api")) == {
        "virtualservice.yaml",
        "destinationrule.yaml",
    }


def test_unit_may_not_overwrite_a_foreign_file(env_repo: EnvRepo) -> None:
    base = _base(env_repo)
    unit = make_unit("legacy-app", files={"deployment.yaml": manifest("Deployment", "legacy-app")})
    with pytest.raises(EnvRepoError, match="will not overwrite"):
        write_tree(env_repo.repo, base.tree, [unit])


def test_deleted_unit_removes_its_folder_and_only_owned_ones_are_stale(env_repo: EnvRepo) -> None:
    base = _base(env_repo)
    repo = env_repo.repo
    with_two = repo[
        write_tree(repo, base.tree, [make_unit("api"), make_unit("web"), make_unit("_mesh", team=None)])
    ]
    live = ["staging/production/api"]
    stale = stale_folders(repo, with_two, "staging", live)
    # legacy-app has YAML without the label: never a candidate.
    assert stale == ["staging/_mesh", "staging/production/web"]
    after = repo[write_tree(repo, with_two, [make_unit("api")], removed=stale)]
    files = tree_files(repo, after)
    assert not any(p.startswith(("staging/production/web/", "staging/_mesh/")) for p in files)
    assert lookup_tree(after, "staging/production/web") is None
    assert files["staging/production/legacy-app/notes.txt"] == b"hand written\n"
    assert stale_folders(repo, after, "staging", live) == []
    # Removing the last folder of a namespace removes the empty namespace folder too.
    empty = repo[write_tree(repo, after, [], removed=["staging/production/api"])]
    assert lookup_tree(empty, "staging/production/api") is None
    assert lookup_tree(empty, "staging/production/legacy-app") is not None


def test_bad_unit_folders_are_refused(env_repo: EnvRepo) -> None:
    base = _base(env_repo)
    bad = Unit("staging", "production", "api", None, "staging/production/api", {"a/b.yaml": b"x"})
    with pytest.raises(EnvRepoError, match="plain file name"):
        write_tree(env_repo.repo, base.tree, [bad])
    with pytest.raises(EnvRepoError, match="same folder"):
        write_tree(env_repo.repo, base.tree, [make_unit("api"), make_unit("api")])


def test_push_creates_and_updates_branch_with_lease(origin: Origin, env_repo: EnvRepo) -> None:
    base = _base(env_repo)
    tree = write_tree(env_repo.repo, base.tree, [make_unit("api")])
    first = env_repo.commit(tree, [base.id], "one\n")
    env_repo.push("meshgen/staging/production/api", first, expected=None)
    assert origin.tip("meshgen/staging/production/api").id == first
    second = env_repo.commit(tree, [base.id], "two\n")
    env_repo.push("meshgen/staging/production/api", second, expected=first)
    assert origin.tip("meshgen/staging/production/api").id == second
    # No temporary refs are left behind on either side.
    assert not [r for r in origin.repo.references if r.startswith("refs/meshgen/tmp/")]
    assert not [r for r in env_repo.repo.references if r.startswith("refs/meshgen/tmp/")]


def test_force_with_lease_refuses_to_clobber_someone_elses_push(origin: Origin, env_repo: EnvRepo) -> None:
    branch = "meshgen/staging/production/api"
    base = _base(env_repo)
    tree = write_tree(env_repo.repo, base.tree, [make_unit("api")])
    ours = env_repo.commit(tree, [base.id], "ours\n")
    env_repo.push(branch, ours, expected=None)
    theirs = origin.commit_on(branch, {"staging/production/api/hotfix.yaml": b"x: 1\n"}, "hotfix by a human")
    again = env_repo.commit(tree, [base.id], "ours again\n")
    with pytest.raises(LeaseError, match="someone else pushed"):
        env_repo.push(branch, again, expected=ours)
    assert origin.tip(branch).id == theirs
    # Creating a branch that appeared meanwhile is refused as well.
    origin.repo.references.create("refs/heads/meshgen/other", theirs)
    with pytest.raises(LeaseError):
        env_repo.push("meshgen/other", again, expected=None)
    # After a fetch, the lease is the new tip and the push goes through.
    env_repo.fetch()
    env_repo.push(branch, again, expected=env_repo.tip(branch))
    assert origin.tip(branch).id == again


def test_transport_push_checks_lease_in_negotiation(origin: Origin, tmp_path: Path) -> None:
    """The network code path (push_negotiation lease), exercised over libgit2's local transport."""
    repo = EnvRepo(origin.path, cache_dir=tmp_path / "c2", clock=Clock())
    base = _base(repo)
    tree = write_tree(repo.repo, base.tree, [make_unit("api")])
    first = repo.commit(tree, [base.id], "one\n")
    repo._push_transport("meshgen/x", first, expected=None)
    assert origin.tip("meshgen/x").id == first
    second = repo.commit(tree, [base.id], "two\n")
    with pytest.raises(LeaseError):
        repo._push_transport("meshgen/x", second, expected=None)
    repo._push_transport("meshgen/x", second, expected=first)
    assert origin.tip("meshgen/x").id == second


def test_mirror_is_bare_and_reused(origin: Origin, tmp_path: Path) -> None:
    one = EnvRepo(origin.path, cache_dir=tmp_path / "cache")
    two = EnvRepo(str(origin.path) + "/", cache_dir=tmp_path / "cache")
    assert one.repo.is_bare and one.repo.path == two.repo.path
    two.fetch()
    assert two.tip("main") == origin.tip("main").id
    with pytest.raises(EnvRepoError, match="does not exist"):
        EnvRepo(tmp_path / "nope.git", cache_dir=tmp_path / "cache")
