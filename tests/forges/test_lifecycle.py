"""The Forge protocol end to end, against each fake forge backed by a real bare repository."""

from __future__ import annotations

import pytest

from meshgen.forges.base import Forge, ForgeError

from .conftest import ForgeEnv

BRANCH = "meshgen/staging/production/api-service"


def test_implements_the_protocol(forge_env: ForgeEnv) -> None:
    forge = forge_env.make()
    assert isinstance(forge, Forge)
    assert type(forge).kind == forge_env.kind


def test_create_update_comment_merge(forge_env: ForgeEnv) -> None:
    forge, repo = forge_env.make(), forge_env.repo
    first_tip = forge_env.push(BRANCH, {"apps/api.yaml": "replicas: 2\n"})
    assert forge.find_open(BRANCH) is None

    pr = forge.create(branch=BRANCH, base="main", title="Promote api-service", body="Why: canary passed",
                      labels=("meshgen", "env:production"))
    assert (pr.state, pr.branch, pr.base, pr.title, pr.body) == (
        "open", BRANCH, "main", "Promote api-service", "Why: canary passed")
    assert pr.head_sha == first_tip  # the sha comes from the real branch
    assert pr.merge_sha is None
    assert pr.labels == ("env:production", "meshgen")
    assert pr.url.startswith(forge_env.fake.root)
    assert forge.find_open(BRANCH) == pr
    assert forge.get(pr.number) == pr

    # Pushing again moves the head, and the forge reports the new sha.
    second_tip = forge_env.push(BRANCH, {"apps/api.yaml": "replicas: 3\n"})
    updated = forge.update(pr.number, title="Promote api-service (2)", body="Now 3 replicas", labels=("meshgen",))
    assert (updated.title, updated.body, updated.labels, updated.head_sha) == (
        "Promote api-service (2)", "Now 3 replicas", ("meshgen",), second_tip)
    assert forge.get(pr.number).labels == ("meshgen",)
    assert forge.update(pr.number, title=updated.title, body=updated.body, labels=()).labels == ()
    assert forge.get(pr.number).labels == ()

    forge.comment(pr.number, "CI is green")
    assert forge_env.fake.prs[pr.number].comments == ["CI is green"]

    base_before = repo.tip("main")
    merged = forge.merge(pr.number)
    assert merged.state == "merged"
    assert merged.head_sha == second_tip
    # A real merge commit on the base branch, with the old base and the head as parents.
    assert merged.merge_sha == repo.tip("main")
    assert repo.parents(merged.merge_sha) == [base_before, second_tip]
    assert repo.read("main", "apps/api.yaml") == "replicas: 3\n"
    assert forge.find_open(BRANCH) is None
    assert forge.get(pr.number) == merged


def test_close_with_comment(forge_env: ForgeEnv) -> None:
    forge = forge_env.make()
    tip = forge_env.push(BRANCH)
    pr = forge.create(branch=BRANCH, base="main", title="t", body="", labels=())
    assert pr.body == "" and pr.labels == ()
    closed = forge.close(pr.number, comment="Superseded by a newer rollout")
    assert (closed.state, closed.merge_sha, closed.head_sha) == ("closed", None, tip)
    assert forge_env.fake.prs[pr.number].comments == ["Superseded by a newer rollout"]
    assert forge.find_open(BRANCH) is None
    assert forge_env.repo.tip("main") != closed.head_sha  # nothing was merged


def test_list_filters_by_prefix_and_state_newest_first(forge_env: ForgeEnv) -> None:
    forge = forge_env.make()
    for branch in ("meshgen/a", "meshgen/b", "feature/not-ours", "meshgen/c"):
        forge_env.push(branch, {f"{branch}.txt": branch})
        forge.create(branch=branch, base="main", title=branch, body="", labels=())
    a, b, _, c = sorted(forge_env.fake.prs)
    forge.merge(a)
    forge.close(b)

    assert [pr.branch for pr in forge.list()] == ["meshgen/c", "meshgen/b", "meshgen/a"]
    assert [pr.number for pr in forge.list("open")] == [c]
    assert [pr.number for pr in forge.list("merged")] == [a]
    assert [pr.number for pr in forge.list("closed")] == [b]
    assert forge.list("merged")[0].merge_sha == forge_env.repo.tip("main")


def test_pull_requests_from_forks_are_not_ours(forge_env: ForgeEnv) -> None:
    """A fork may name a branch meshgen/...; meshgen must never adopt (and later merge) it."""
    forge = forge_env.make()
    forge_env.push(BRANCH)
    forge_env.fake.new_pr(title="evil", body="", head=BRANCH, base="main", from_fork=True)
    assert forge.find_open(BRANCH) is None
    assert forge.list() == []


def test_create_for_missing_branch_fails_without_retry(forge_env: ForgeEnv) -> None:
    forge = forge_env.make()
    with pytest.raises(ForgeError) as err:
        forge.create(branch="meshgen/never-pushed", base="main", title="t", body="", labels=())
    assert "create" in str(err.value) and "meshgen/never-pushed" in str(err.value)
    # as the real APIs answer: GitHub 422 Validation Failed, Gitea 404, GitLab 422
    assert {"github": "HTTP 422", "gitea": "HTTP 404", "gitlab": "HTTP 422"}[forge_env.kind] in str(err.value)
    assert forge_env.fake.total_hits() == 1


def test_second_pull_request_for_same_branch_is_refused(forge_env: ForgeEnv) -> None:
    forge = forge_env.make()
    forge_env.push(BRANCH)
    forge.create(branch=BRANCH, base="main", title="t", body="", labels=())
    with pytest.raises(ForgeError, match=r"HTTP (409|422)"):
        forge.create(branch=BRANCH, base="main", title="t", body="", labels=())


def test_merge_conflict_is_a_clear_error(forge_env: ForgeEnv) -> None:
    forge, repo = forge_env.make(), forge_env.repo
    forge_env.push(BRANCH, {"apps/api.yaml": "replicas: 2\n"})
    pr = forge.create(branch=BRANCH, base="main", title="t", body="", labels=())
    repo.commit_files("main", {"apps/api.yaml": "replicas: 9\n"}, "someone else changed main")
    with pytest.raises(ForgeError) as err:
        forge.merge(pr.number)
    message = str(err.value)
    assert "merge" in message and f"{pr.number}" in message and "HTTP 40" in message
    assert "fix the cause" in message  # says what to do next
    assert forge.get(pr.number).state == "open"


def test_pull_requests_built_on_one_base_merge_one_after_the_other(forge_env: ForgeEnv) -> None:
    """What the canary controller's batch relies on: step PRs built on the same base, each changing only its
    own folder, all merge in sequence (the later ones as true merges onto the moved base), no rebuild."""
    forge, repo = forge_env.make(), forge_env.repo
    base = repo.tip("main")
    names = ("cart", "checkout", "payment")
    prs = []
    for name in names:
        branch = f"meshgen/production/shop/{name}"
        forge_env.push(branch, {f"production/shop/{name}/route.yaml": f"weight: 20 # {name}\n"})
        prs.append(forge.create(branch=branch, base="main", title=name, body="", labels=()))
    assert {repo.parents(pr.head_sha)[0] for pr in prs} == {base}
    for pr in prs:
        merged = forge.merge(pr.number)
        assert merged.state == "merged" and merged.merge_sha == repo.tip("main")
    for name in names:
        assert repo.read("main", f"production/shop/{name}/route.yaml") == f"weight: 20 # {name}\n"


def test_unknown_number_is_404_without_retry(forge_env: ForgeEnv) -> None:
    forge = forge_env.make()
    with pytest.raises(ForgeError, match="HTTP 404") as err:
        forge.get(4711)
    assert "check" in str(err.value)
    assert forge_env.fake.total_hits() == 1
