"""The pull-request lifecycle end to end, on a real environment repository and the local forge."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
from gitops_support import BOT, Clock, Origin, make_unit, manifest, semantic

from meshgen.gitops.envrepo import EnvRepo
from meshgen.forges.local import LocalForge
from meshgen.gitops.lifecycle import SyncReport, branch_for, sync_env
from meshgen.units import Unit

API = "meshgen/staging/production/api"


def _sync(env_repo: EnvRepo, forge: LocalForge, units: list[Unit], **kw: Any) -> SyncReport:
    kw.setdefault("describe", semantic)
    return sync_env(env_repo, forge, units, env="staging", env_path="staging", **kw)


def _merge_to_main(origin: Origin, branch: str) -> None:
    """A human merges the branch by hand (fast-forward), outside the forge."""
    origin.repo.references.create("refs/heads/main", origin.tip(branch).id, force=True)


def test_no_difference_means_no_pull_request(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    _sync(env_repo, forge, [make_unit("api")])
    _merge_to_main(origin, API)
    forge.close(1)
    branches_before = set(origin.repo.branches)
    report = _sync(env_repo, forge, [make_unit("api")])
    assert report.results == ()
    assert forge.list("open") == []
    assert set(origin.repo.branches) == branches_before


def test_change_opens_pr_with_labels_and_description(
    origin: Origin, env_repo: EnvRepo, forge: LocalForge
) -> None:
    unit = make_unit("api", warnings=("routes[0].rewrite: Linkerd cannot rewrite paths",))
    report = _sync(
        env_repo,
        forge,
        [unit],
        blueprint_commit="0123456789abcdef",
        blueprint_author="Jane Doe",
        validation={unit.folder: ["kubeconform: 2 documents valid"]},
    )
    assert report.actions() == {API: "opened"}
    pr = forge.get(report.results[0].number)
    assert pr.state == "open" and pr.branch == API and pr.base == "main"
    assert set(pr.labels) == {"meshgen", "env/staging", "team/payments"}
    assert pr.title == "meshgen(staging): add production/api"
    for expected in (
        "`0123456789abcdef`",
        "Jane Doe",
        "staging/production/api/virtualservice.yaml: added",  # the describe() lines
        "Linkerd cannot rewrite paths",
        "kubeconform: 2 documents valid",
    ):
        assert expected in pr.body
    head = origin.tip(API)
    assert head.parent_ids == [origin.tip("main").id]
    assert "Meshgen-Content: sha256:" in head.message
    assert head.author.email == BOT.email
    # Foreign content is carried over untouched on the PR branch.
    assert origin.files(API)["staging/production/legacy-app/notes.txt"] == b"hand written\n"


def test_second_change_updates_the_same_pr(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    first = _sync(env_repo, forge, [make_unit("api", weight=10)])
    head1 = origin.tip(API).id
    second = _sync(env_repo, forge, [make_unit("api", weight=25)])
    assert second.actions() == {API: "updated"}
    assert second.results[0].number == first.results[0].number
    assert len(forge.list()) == 1
    assert origin.tip(API).id != head1
    assert b"weight: 25" in origin.files(API)["staging/production/api/virtualservice.yaml"]
    assert forge.get(1).head_sha == str(origin.tip(API).id)


def test_description_provenance_verbs_and_changes_since_the_last_push(
    origin: Origin, env_repo: EnvRepo, forge: LocalForge
) -> None:
    sha1, sha2 = "1" * 40, "2" * 40
    first = _sync(env_repo, forge, [make_unit("api", weight=10)], blueprint_commit=sha1, blueprint_author="Ada",
                  blueprint_subject="Canary 10%", blueprint_url="https://git.example.com/acme/blueprints.git")
    pr = forge.get(first.results[0].number)
    assert pr.title == "meshgen(staging): add production/api"
    assert f"[`{sha1[:12]}`](<https://git.example.com/acme/blueprints/commit/{sha1}>) by Ada: Canary 10%" in pr.body
    assert "Changed since the last push" not in pr.body
    # The reviewer's next view: what changed since the head they reviewed, not since main.
    _sync(env_repo, forge, [make_unit("api", weight=25)], blueprint_commit=sha2, blueprint_author="Bob",
          blueprint_subject="Canary 25%")
    pr = forge.get(pr.number)
    assert pr.title == "meshgen(staging): add production/api"
    assert f"`{sha2}` by Bob: Canary 25%" in pr.body
    since = pr.body.split("### Changed since the last push", 1)[1]
    assert "`production/api`:" in since and "virtualservice.yaml: changed" in since
    # A later sync from another blueprint commit that does not touch this unit changes neither head nor text.
    head = origin.tip(API).id
    again = _sync(env_repo, forge, [make_unit("api", weight=25)], blueprint_commit="3" * 40, blueprint_author="Cy")
    assert again.actions() == {API: "unchanged"} and origin.tip(API).id == head
    assert forge.get(pr.number).body == pr.body
    # Once merged, the removal reads "remove"; a change to an existing folder reads "update".
    _merge_to_main(origin, API)
    forge.close(pr.number)
    assert forge.get(_sync(env_repo, forge, [make_unit("api", weight=30)]).results[0].number).title == \
        "meshgen(staging): update production/api"


def test_reverted_change_closes_pr_with_comment(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    _sync(env_repo, forge, [make_unit("api", weight=10)])
    _merge_to_main(origin, API)
    forge.close(1)  # (merged by hand; the record is closed so we can test the next cycle)
    opened = _sync(env_repo, forge, [make_unit("api", weight=50)])
    assert opened.actions() == {API: "opened"} and opened.results[0].number == 2
    reverted = _sync(env_repo, forge, [make_unit("api", weight=10)])
    assert reverted.actions() == {API: "closed"}
    assert forge.get(2).state == "closed"
    assert "nothing in this pull request differs" in forge.comments(2)[-1]["body"]


def test_unrelated_base_move_keeps_the_head(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    """No churn: the base moving elsewhere does not rewrite an open PR that still merges cleanly."""
    _sync(env_repo, forge, [make_unit("api")])
    old_head = origin.tip(API).id
    origin.commit_on("main", {"staging/production/legacy-app/notes.txt": b"edited\n"})
    report = _sync(env_repo, forge, [make_unit("api")])
    assert report.actions() == {API: "unchanged"}
    assert origin.tip(API).id == old_head
    assert forge.get(1).head_sha == str(old_head)


def test_refresh_rebuilds_a_kept_head_on_the_current_base(
    origin: Origin, env_repo: EnvRepo, forge: LocalForge
) -> None:
    """`refresh` (a base that merges only up-to-date branches refused the PR): the head that no-churn keeps
    is rebuilt on the base tip, same files, same pull request; only the named branch."""
    _sync(env_repo, forge, [make_unit("api"), make_unit("web")])
    web = "meshgen/staging/production/web"
    old_api, old_web = origin.tip(API), origin.tip(web).id
    moved = origin.commit_on("main", {"staging/production/legacy-app/notes.txt": b"edited\n"})
    report = _sync(env_repo, forge, [make_unit("api"), make_unit("web")], refresh=[API])
    assert report.actions() == {API: "updated", web: "unchanged"}
    head = origin.tip(API)
    assert head.parent_ids == [moved] and head.id != old_api.id
    assert forge.get(report.results[[r.branch for r in report.results].index(API)].number).head_sha == str(head.id)
    assert origin.files(API)["staging/production/api/virtualservice.yaml"] == \
        origin.repo[old_api.tree["staging/production/api/virtualservice.yaml"].id].data
    assert origin.tip(web).id == old_web  # not named: kept (no churn)
    # Already on the base tip: a second refresh writes nothing new.
    again = _sync(env_repo, forge, [make_unit("api"), make_unit("web")], refresh=[API])
    assert again.actions()[API] == "unchanged" and origin.tip(API).id == head.id


def test_conflicting_base_move_rebuilds_branch_on_new_base(
    origin: Origin, env_repo: EnvRepo, forge: LocalForge
) -> None:
    _sync(env_repo, forge, [make_unit("api")])
    old_head = origin.tip(API)
    # Someone writes the PR's own file on main by hand: the PR no longer merges cleanly.
    moved = origin.commit_on(
        "main", {"staging/production/api/virtualservice.yaml": manifest("VirtualService", "api", "weight: 99")}
    )
    report = _sync(env_repo, forge, [make_unit("api")])
    assert report.actions() == {API: "updated"}
    head = origin.tip(API)
    assert head.parent_ids == [moved] and head.id != old_head.id
    assert (
        origin.files(API)["staging/production/api/virtualservice.yaml"]
        == origin.repo[old_head.tree["staging/production/api/virtualservice.yaml"].id].data
    )


@pytest.mark.parametrize("grouping", ["service", "team"])
def test_merging_one_pr_leaves_the_others_untouched(
    origin: Origin, env_repo: EnvRepo, forge: LocalForge, grouping: str
) -> None:
    units = [make_unit(s, team=s) for s in ("api", "web", "shop", "cart")]
    first = _sync(env_repo, forge, units, grouping=grouping)
    assert set(first.actions().values()) == {"opened"}
    heads = {b: origin.tip(b).id for b in first.actions()}
    merged_branch = sorted(heads)[0]
    merged = forge.merge(next(r.number for r in first.results if r.branch == merged_branch))
    assert merged.merge_sha
    # A later sync (any blueprint push) with one more change elsewhere.
    second = _sync(env_repo, forge, [*units, make_unit("new", team="new")], grouping=grouping)
    actions = second.actions()
    assert [a for b, a in actions.items() if b in heads] == ["unchanged"] * (len(heads) - 1)
    assert merged_branch not in actions
    assert {b: origin.tip(b).id for b in heads if b != merged_branch} == {
        b: h for b, h in heads.items() if b != merged_branch
    }
    # Its own change still rewrites it.
    changed = [make_unit("web", team="web", weight=30), *(u for u in units if u.service != "web")]
    third = _sync(env_repo, forge, changed, grouping=grouping)
    web = branch_for(changed[0], grouping)  # type: ignore[arg-type]
    if web != merged_branch:
        assert third.actions()[web] == "updated" and origin.tip(web).id != heads[web]


def test_rerun_is_idempotent(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    units = [make_unit("api"), make_unit("web", team="web")]
    _sync(env_repo, forge, units)
    heads = {b: origin.tip(b).id for b in origin.repo.branches.local}
    records = {
        r: origin.repo.references[r].target for r in origin.repo.references if r.startswith("refs/meshgen/")
    }
    # A fresh mirror (another machine) sees the same: nothing to do.
    other = EnvRepo(origin.path, cache_dir=origin.path.parent / "other-cache", identity=BOT, clock=Clock())
    for repo in (env_repo, other):
        report = _sync(repo, forge, units)
        assert set(report.actions().values()) == {"unchanged"}
    assert {b: origin.tip(b).id for b in origin.repo.branches.local} == heads
    assert {
        r: origin.repo.references[r].target for r in origin.repo.references if r.startswith("refs/meshgen/")
    } == records


def test_deleted_blueprint_opens_removal_pr(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    _sync(env_repo, forge, [make_unit("api"), make_unit("web")], auto_merge=True)
    assert {
        "staging/production/api/virtualservice.yaml",
        "staging/production/web/virtualservice.yaml",
    } <= set(origin.files("main"))
    report = _sync(env_repo, forge, [make_unit("api")])
    web = "meshgen/staging/production/web"
    assert report.actions() == {web: "opened"}
    pr = forge.get(report.results[0].number)
    assert pr.title == "meshgen(staging): remove production/web"
    files = origin.files(web)
    assert not any(p.startswith("staging/production/web/") for p in files)
    assert files["staging/production/legacy-app/deployment.yaml"]  # foreign folder untouched


def test_grouping_change_supersedes_prs(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    units = [make_unit("api"), make_unit("web"), make_unit("shop", team="shop")]
    _sync(env_repo, forge, units)
    assert len(forge.list("open")) == 3
    report = _sync(env_repo, forge, units, grouping="team")
    actions = report.actions()
    assert actions["meshgen/staging/team-payments"] == "opened"
    assert actions["meshgen/staging/team-shop"] == "opened"
    assert [
        actions[b] for b in (API, "meshgen/staging/production/web", "meshgen/staging/production/shop")
    ] == ["closed"] * 3
    comment = forge.comments(forge.list("closed")[-1].number)[-1]["body"]
    assert "superseded" in comment and "meshgen/staging/team-" in comment
    assert {p.branch for p in forge.list("open")} == {
        "meshgen/staging/team-payments",
        "meshgen/staging/team-shop",
    }
    env_wide = _sync(env_repo, forge, units, grouping="env")
    assert env_wide.actions()["meshgen/staging/all"] == "opened"
    assert {p.branch for p in forge.list("open")} == {"meshgen/staging/all"}


def test_unit_no_longer_rendered_closes_its_open_pr(
    origin: Origin, env_repo: EnvRepo, forge: LocalForge
) -> None:
    _sync(env_repo, forge, [make_unit("api"), make_unit("web")])
    report = _sync(env_repo, forge, [make_unit("api")])
    assert report.actions() == {API: "unchanged", "meshgen/staging/production/web": "closed"}
    assert "no longer rendered" in forge.comments(2)[-1]["body"]


def test_auto_merge(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    report = _sync(env_repo, forge, [make_unit("api"), make_unit("web")], auto_merge=True)
    assert set(report.actions().values()) == {"merged"}
    files = origin.files("main")
    assert (
        "staging/production/api/virtualservice.yaml" in files
        and "staging/production/web/virtualservice.yaml" in files
    )
    assert all(p.merge_sha for p in forge.list("merged"))
    assert _sync(env_repo, forge, [make_unit("api"), make_unit("web")]).results == ()


def test_template_override(origin: Origin, env_repo: EnvRepo, forge: LocalForge, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "body.md.j2").write_text(
        "Custom for {{ env | code }}: {% for u in units %}{{ u.name | code }}{% endfor %}\n"
    )
    _sync(env_repo, forge, [make_unit("api")], template_dir=templates)
    pr = forge.get(1)
    # The template decides the text; the hidden marker naming the rendering is always appended.
    assert pr.body.startswith("Custom for `staging`: `production/api`\n<!-- meshgen: branch=")
    assert pr.title == "meshgen(staging): add production/api"  # default title still used


def test_closed_pr_rejects_that_rendering(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    _sync(env_repo, forge, [make_unit("api", weight=10)])
    forge.close(1, comment="not now")  # a reviewer says no
    branches = {b: origin.tip(b).id for b in origin.repo.branches.local}
    again = _sync(env_repo, forge, [make_unit("api", weight=10)])
    assert again.actions() == {API: "rejected"} and again.results[0].number == 1
    assert forge.list("open") == []
    assert {b: origin.tip(b).id for b in origin.repo.branches.local} == branches  # nothing pushed
    # A deliberate retry opens it again ...
    retried = _sync(env_repo, forge, [make_unit("api", weight=10)], retry_rejected=True)
    assert retried.actions() == {API: "opened"} and retried.results[0].number == 2
    forge.close(2)
    # ... and so does a changed rendering.
    changed = _sync(env_repo, forge, [make_unit("api", weight=20)])
    assert changed.actions() == {API: "opened"} and changed.results[0].number == 3


def test_prs_meshgen_closes_reject_nothing(origin: Origin, env_repo: EnvRepo, forge: LocalForge) -> None:
    _sync(env_repo, forge, [make_unit("api", weight=10)])
    _merge_to_main(origin, API)
    closed = _sync(env_repo, forge, [make_unit("api", weight=10)])  # no diff any more: meshgen closes it
    assert closed.actions() == {API: "closed"}
    # Someone changes the folder on main by hand: the same rendering must be proposed again.
    origin.commit_on(
        "main", {"staging/production/api/virtualservice.yaml": manifest("VirtualService", "api", "weight: 99")}
    )
    again = _sync(env_repo, forge, [make_unit("api", weight=10)])
    assert again.actions() == {API: "opened"}


def test_blueprint_strings_cannot_break_markdown(
    origin: Origin, env_repo: EnvRepo, forge: LocalForge
) -> None:
    nasty = "```\n# Heading <script>alert(1)</script> [x](http://evil) @everyone"
    unit = make_unit("api", warnings=(nasty,))

    def describe(old: Any, new: Any) -> list[str]:
        return ["```", "line with ``` inside"]

    _sync(env_repo, forge, [unit], describe=describe, blueprint_author=nasty)
    body = forge.get(1).body
    assert "<script>" not in body and "\n# Heading" not in body and "](http" not in body
    assert "````text\n```\nline with ``` inside\n````" in body  # fence longer than any run inside


def test_units_must_render_into_owned_folders(env_repo: EnvRepo, forge: LocalForge) -> None:
    bad = Unit("staging", "production", "api", None, "staging/api", {"a.yaml": b"x"})
    with pytest.raises(Exception, match="meshgen owns exactly"):
        _sync(env_repo, forge, [bad])


def test_branch_names() -> None:
    unit = make_unit("api", team="Payments Team")
    assert branch_for(unit, "service") == "meshgen/staging/production/api"
    assert branch_for(unit, "team") == "meshgen/staging/team-payments-team"
    assert branch_for(unit, "env") == "meshgen/staging/all"
    assert branch_for(make_unit("_mesh", team=None), "service") == "meshgen/staging/_mesh"


def _sync_in_process(origin_path: str, cache: str, barrier: Any, out: Any) -> None:
    repo = EnvRepo(origin_path, cache_dir=cache, identity=BOT)
    forge = LocalForge(origin_path, identity=BOT)
    barrier.wait(60)  # start together; never hang the suite if a sibling died
    report = sync_env(repo, forge, [make_unit("api")], env="staging", env_path="staging", describe=semantic)
    out.put([(r.branch, r.action, r.number) for r in report.results])


@pytest.mark.slow
@pytest.mark.parametrize("shared_cache", [False, True], ids=["two-machines", "one-cache"])
def test_two_processes_at_once_open_exactly_one_pr(
    origin: Origin, tmp_path: Path, shared_cache: bool
) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    caches = [tmp_path / ("cache" if shared_cache else f"cache{i}") for i in range(4)]
    procs = [
        ctx.Process(target=_sync_in_process, args=(str(origin.path), str(c), barrier, out)) for c in caches
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [out.get(timeout=5) for _ in procs]
    forge = LocalForge(origin.path)
    prs = forge.list()
    assert len(prs) == 1 and prs[0].state == "open" and prs[0].branch == API
    assert all(r == [(API, r[0][1], 1)] for r in results)
    assert sum(r[0][1] == "opened" for r in results) == 1
    # The branch holds the one expected tree on top of main.
    assert origin.tip(API).parent_ids == [origin.tip("main").id]
