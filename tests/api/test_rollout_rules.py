"""The rollout state machine (meshgen.rollout), rule by rule, without Redis, Git or HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import unit
from argo_fakes import application

from meshgen.rollout import STATES, AppFacts, app_facts, decide, normalize_repo_url

M, L, B, X, HEAD = "m" * 40, "l" * 40, "b" * 40, "x" * 40, "h" * 40
# The history the rules see: B ← M ← L; X is a sibling of M; HEAD is the PR branch (parent of M).
_DESCENDANTS = {(M, M), (L, M), (L, L), (M, HEAD), (L, HEAD), (M, B), (L, B), (X, B)}


def contains(descendant: str, ancestor: str) -> bool | None:
    if descendant not in (M, L, B, X, HEAD) or ancestor not in (M, L, B, X, HEAD):
        return None
    return (descendant, ancestor) in _DESCENDANTS or descendant == ancestor


def facts(**kw: Any) -> AppFacts:
    return app_facts(application("api-staging", **kw))


def merged(**kw: Any) -> Any:
    return unit(pr_state="merged", merge=M, head=HEAD, **kw)


def state_of(u: Any, f: AppFacts | None, **kw: Any) -> str:
    return decide(u, f, contains=contains, app_name="api-staging", **kw).state


# ---- before Argo CD -------------------------------------------------------------------


def test_rendering_and_render_failed_win_over_everything() -> None:
    assert state_of(unit(render_state="rendering", pr_state="merged", merge=M), facts(revision=M)) == "rendering"
    d = decide(unit(render_state="render-failed", render_error="a.yaml:3:1: bad"), None, contains=contains)
    assert (d.state, d.reason) == ("render-failed", "a.yaml:3:1: bad")


def test_open_pr_awaits_review_and_closed_pr_is_rejected() -> None:
    assert state_of(unit(pr_state="open"), None) == "awaiting-review"
    d = decide(unit(pr_state="closed", number=7), None, contains=contains)
    assert d.state == "rejected" and "#7" in d.reason and "closed without merging" in d.reason


def test_closed_pr_of_a_rendering_the_base_already_holds_is_up_to_date() -> None:
    assert state_of(unit(pr_state="closed", up_to_date=True), None) == "up-to-date"


def test_no_pr_and_not_up_to_date_depends_on_the_job() -> None:
    assert state_of(unit(), None, job_state="running") == "rendering"
    assert state_of(unit(), None, job_state="queued") == "rendering"
    d = decide(unit(), None, contains=contains, job_state="failed")
    assert d.state == "unknown" and "jobs" in d.reason


def test_up_to_date_unless_argocd_reports_a_problem() -> None:
    assert state_of(unit(up_to_date=True), None) == "up-to-date"
    assert state_of(unit(up_to_date=True), facts(revision=L)) == "up-to-date"
    assert state_of(unit(up_to_date=True), facts(revision=L, health="Degraded")) == "degraded"
    assert state_of(unit(up_to_date=True), facts(revision=L, health="Progressing")) == "progressing"
    assert state_of(unit(up_to_date=True), facts(revision=L, health="Unknown")) == "up-to-date"


# ---- the merged pull request against Argo CD --------------------------------------------


def test_merge_commit_synced_and_healthy_is_healthy_and_live() -> None:
    d = decide(merged(), facts(revision=M), contains=contains)
    assert (d.state, d.live, d.used_argocd) == ("healthy", True, True)


def test_a_descendant_of_the_merge_commit_is_live() -> None:
    assert decide(merged(), facts(revision=L), contains=contains).live is True
    assert state_of(merged(), facts(revision=L)) == "healthy"


def test_a_revision_without_the_merge_awaits_sync() -> None:
    for rev in (B, X):
        d = decide(merged(), facts(revision=rev), contains=contains)
        assert (d.state, d.live) == ("awaiting-sync", False)
        assert rev[:12] in d.reason and M[:12] in d.reason


def test_revision_missing_from_the_mirror_is_unknown_not_awaiting() -> None:
    d = decide(merged(), facts(revision="f" * 40), contains=contains)
    assert d.state == "unknown" and "mirror" in d.reason


def test_no_synced_revision_yet_awaits_sync() -> None:
    assert state_of(merged(), facts(revision=None, phase=None)) == "awaiting-sync"


def test_without_merge_sha_the_head_commit_is_checked() -> None:
    u = unit(pr_state="merged", merge=None, head=HEAD)
    d = decide(u, facts(revision=M), contains=contains)
    assert d.state == "healthy" and d.live
    assert decide(unit(pr_state="merged", merge=None, head=""), facts(revision=M), contains=contains).state == "unknown"


def test_app_missing_is_unknown_and_no_argocd_stops_at_awaiting_sync() -> None:
    d = decide(merged(), None, contains=contains, app_name="api-staging")
    assert d.state == "unknown" and "api-staging" in d.reason and "nameTemplate" in d.reason
    # What the README promises for the embedded setup: without Argo CD a merge stops at awaiting-sync.
    d = decide(merged(), None, contains=contains, argocd_configured=False)
    assert d.state == "awaiting-sync" and "argocd" in d.reason


@pytest.mark.parametrize("condition", ["ComparisonError", "InvalidSpecError"])
def test_error_conditions_degrade(condition: str) -> None:
    f = facts(revision=M, conditions=[{"type": condition, "message": "rpc error: repo not found"}])
    d = decide(merged(), f, contains=contains)
    assert d.state == "degraded" and condition in d.reason and "repo not found" in d.reason


def test_other_conditions_do_not_degrade() -> None:
    f = facts(revision=M, conditions=[{"type": "SyncError", "message": "x"}, {"type": "OrphanedResourceWarning",
                                                                            "message": "y"}])
    assert state_of(merged(), f) == "healthy"


@pytest.mark.parametrize("phase", ["Failed", "Error"])
def test_failed_operation_degrades(phase: str) -> None:
    d = decide(merged(), facts(revision=M, phase=phase, message="one or more objects failed to apply"),
               contains=contains)
    assert d.state == "degraded" and "failed to apply" in d.reason


def test_running_operation_is_progressing() -> None:
    assert state_of(merged(), facts(revision=M, operation=True)) == "progressing"
    assert state_of(merged(), facts(revision=M, phase="Running", finished_at=None)) == "progressing"


def test_health_is_trusted_only_when_reconciled_after_the_sync_finished() -> None:
    early = facts(revision=M, reconciled_at="2026-01-01T09:59:59Z", finished_at="2026-01-01T10:00:00Z")
    assert not early.health_trusted
    d = decide(merged(), early, contains=contains)
    assert d.state == "progressing" and "reconciledAt" in d.reason
    same = facts(revision=M, reconciled_at="2026-01-01T10:00:00Z", finished_at="2026-01-01T10:00:00Z")
    assert same.health_trusted and state_of(merged(), same) == "healthy"
    # Offsets are compared as instants, not as text.
    tz = facts(revision=M, reconciled_at="2026-01-01T11:00:01+01:00", finished_at="2026-01-01T10:00:00Z")
    assert tz.health_trusted


def test_no_operation_state_means_health_is_trusted() -> None:
    f = facts(revision=M, phase=None)
    assert f.health_trusted and state_of(merged(), f) == "healthy"


@pytest.mark.parametrize(("health", "state"), [("Suspended", "progressing"), ("Progressing", "progressing"),
                                               ("Degraded", "degraded"), ("Missing", "degraded"),
                                               ("Unknown", "unknown"), ("Healthy", "healthy")])
def test_health_mapping(health: str, state: str) -> None:
    assert state_of(merged(), facts(revision=M, health=health)) == state


def test_out_of_sync_alone_does_not_demote_a_healthy_app_but_is_reported() -> None:
    d = decide(merged(), facts(revision=L, sync="OutOfSync"), contains=contains)
    assert d.state == "healthy" and any("OutOfSync" in n for n in d.notes)


def test_out_of_sync_checks_what_the_last_sync_applied() -> None:
    # sync.revision is the compared-to branch tip; the cluster runs what the last operation applied.
    f = facts(revision=L, applied=B, sync="OutOfSync")
    assert state_of(merged(), f) == "awaiting-sync"
    assert state_of(merged(), facts(revision=L, applied=M, sync="OutOfSync")) == "healthy"


def test_multi_source_uses_the_environment_repository_revision() -> None:
    env_url = "git@git.example.com:platform/env.git"
    f = facts(revisions=["1.2.3", L], sources=["https://charts.example.com", "https://git.example.com/platform/env"])
    assert f.revisions == ("1.2.3", L) and len(f.source_repos) == 2
    assert decide(merged(), f, contains=contains, env_repo_url=env_url).state == "healthy"
    stale_env = facts(revisions=[L, B], sources=["https://git.example.com/other.git",
                                                 "https://git.example.com/platform/env.git"])
    # The other repository's revision L must not count: only the environment repository's B does.
    assert decide(merged(), stale_env, contains=contains, env_repo_url=env_url).state == "awaiting-sync"
    # Without a matching source, any revision may carry the merge.
    assert decide(merged(), stale_env, contains=contains, env_repo_url=None).state == "healthy"


def test_normalize_repo_url() -> None:
    same = {normalize_repo_url(u) for u in ("https://git.example.com/a/env.git", "git@git.example.com:a/env.git",
                                            "ssh://git@git.example.com/a/env", "HTTPS://git.example.com/a/env/")}
    assert len(same) == 1


def test_every_state_is_reachable() -> None:
    reached = {
        state_of(unit(render_state="rendering"), None), state_of(unit(render_state="render-failed"), None),
        state_of(unit(up_to_date=True), None), state_of(unit(pr_state="open"), None),
        state_of(unit(pr_state="closed"), None), state_of(merged(), facts(revision=B)),
        state_of(merged(), facts(revision=M, health="Suspended")), state_of(merged(), facts(revision=M)),
        state_of(merged(), facts(revision=M, health="Degraded")), state_of(merged(), None),
    }
    assert reached == set(STATES)
