"""Reviewer decisions stick (issue 10, item 2), end to end: real Redis, the local forge, the CLI and the API."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sync_support import REDIS_DB_URL, RedisNS, env_repo, prs_for, set_split

from meshgen.api.app import create_app
from meshgen.cli import main
from meshgen.gitops.commands import pr as pr_command
from meshgen.forges.local import LocalForge
from meshgen.gitops.sync import sync_repository
from meshgen.settings import Settings


def _state(settings: Settings, service: str) -> dict:
    public = settings.model_copy(update={"api_public_reads": True})
    with TestClient(create_app(public)) as client:
        client.app.state.meshgen.view.refresh(force=True)  # type: ignore[attr-defined]
        answer = client.get(f"/api/v1/rollouts/production/shop/{service}")
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


def test_closing_rejects_at_once_and_later_syncs_open_nothing(root: Path, settings: Settings, rns: RedisNS) -> None:
    job = sync_repository(root, settings, records=rns.records)
    cart = next(p for p in job.prs if p.branch.endswith("/cart"))
    assert _state(settings, "cart")["state"] == "awaiting-review"
    env = {"MESHGEN_REDIS_URL": REDIS_DB_URL, "MESHGEN_REDIS_PREFIX": rns.prefix}
    out = CliRunner().invoke(pr_command, ["--repo", str(env_repo(root)), "close", str(cart.number),
                                          "--comment", "not like this"], env=env)
    assert out.exit_code == 0, out.output
    assert "recorded the rejection on 1 rollout(s)" in out.output
    rollout = _state(settings, "cart")
    assert rollout["state"] == "rejected" and "--retry-rejected" in rollout["reason"]
    assert _state(settings, "checkout")["state"] == "awaiting-review"

    # Any later push (here: another service's change) syncs: nothing is reopened for cart.
    set_split(root, "checkout", 40)
    again = sync_repository(root, settings, records=rns.records)
    assert [(p.action, p.number) for p in again.prs if p.branch.endswith("/cart")] == [("rejected", cart.number)]
    assert any("rejected in pull request" in w and "/cart" in w for w in again.warnings)
    assert [p.state for p in prs_for(root, "cart")] == ["closed"]
    assert _state(settings, "cart")["state"] == "rejected"

    # The terminal report counts what happened, by action (nothing changed is not "changes").
    plain = CliRunner().invoke(main, ["sync", str(root)], env=env)
    assert plain.exit_code == 0, plain.output
    summary = plain.output.strip().splitlines()[-1]
    assert ": succeeded, pull requests 1 rejected, " in summary and " unchanged (render " in summary, summary

    # The deliberate retry, through the CLI.
    out = CliRunner().invoke(main, ["sync", str(root), "--retry-rejected", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert [p.state for p in prs_for(root, "cart")] == ["open", "closed"]
    assert _state(settings, "cart")["state"] == "awaiting-review"


def test_a_changed_rendering_opens_a_new_pr(root: Path, settings: Settings, rns: RedisNS) -> None:
    job = sync_repository(root, settings, records=rns.records)
    cart = next(p for p in job.prs if p.branch.endswith("/cart"))
    LocalForge(env_repo(root)).close(cart.number or 0)
    set_split(root, "cart", 30)
    again = sync_repository(root, settings, records=rns.records)
    opened = [p for p in again.prs if p.branch.endswith("/cart")]
    assert [p.action for p in opened] == ["opened"] and opened[0].number != cart.number
    assert _state(settings, "cart")["state"] == "awaiting-review"
