"""After a merge the unit keeps its pull request (state merged, merge_sha), with few forge calls;
auto-merge, lost records, `meshgen pr merge` and the records' version counter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sync_support import REDIS_DB_URL, RedisNS, env_repo, make_root, set_split

from meshgen.gitops import sync as sync_module
from meshgen.gitops.commands import pr as pr_command
from meshgen.forges.local import LocalForge
from meshgen.gitops.sync import sync_repository
from meshgen.records import JobRecord, Records, UnitRecord
from meshgen.settings import Settings


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts the read calls a sync makes on its forge (every call goes through _TimedForge)."""
    seen: Counter[str] = Counter()
    timed = sync_module._TimedForge
    get, listing = timed.get, timed.list

    def counted_get(self: Any, number: int) -> Any:
        seen["get"] += 1
        return get(self, number)

    def counted_list(self: Any, state: Any = None) -> Any:
        seen[f"list:{state}"] += 1
        return listing(self, state)

    monkeypatch.setattr(timed, "get", counted_get)
    monkeypatch.setattr(timed, "list", counted_list)
    yield seen


def _unit(records: Records, service: str) -> UnitRecord:
    unit = records.get_unit("production", "shop", service)
    assert unit is not None
    return unit


def test_merged_pr_stays_on_the_unit_with_one_get_then_none(root: Path, settings: Settings, rns: RedisNS,
                                                             calls: Counter[str]) -> None:
    job = sync_repository(root, settings, records=rns.records)
    forge = LocalForge(env_repo(root))
    number = next(p.number for p in job.prs if p.branch.endswith("/cart"))
    assert number is not None
    merged = forge.merge(number)
    calls.clear()
    sync_repository(root, settings, records=rns.records)
    cart = _unit(rns.records, "cart")
    assert cart.pr is not None and cart.pr.state == "merged" and cart.pr.merge_sha == merged.merge_sha
    assert cart.pr.head_sha == merged.head_sha and cart.up_to_date
    assert calls["get"] == 1 and calls["list:merged"] == 0  # only the PR that left the open listing
    calls.clear()
    sync_repository(root, settings, records=rns.records)  # nothing new: the merged ref is settled
    assert calls["get"] == 0 and calls["list:merged"] == 0
    assert _unit(rns.records, "cart").pr == cart.pr
    # A new change opens a new pull request; once merged, the unit follows it.
    set_split(root, "cart", 30)
    job = sync_repository(root, settings, records=rns.records)
    second = next(p.number for p in job.prs if p.branch.endswith("/cart"))
    assert second is not None and second != number
    reopened = _unit(rns.records, "cart").pr
    assert reopened is not None and reopened.state == "open" and reopened.number == second
    merged_again = forge.merge(second)
    sync_repository(root, settings, records=rns.records)
    latest = _unit(rns.records, "cart").pr
    assert latest is not None and latest.number == second and latest.merge_sha == merged_again.merge_sha


def test_many_merges_take_one_listing_per_env(root: Path, settings: Settings, rns: RedisNS, calls: Counter[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_module, "GET_BY_NUMBER_MAX", 1)
    job = sync_repository(root, settings, records=rns.records)
    forge = LocalForge(env_repo(root))
    merged = {p.branch.rsplit("/", 1)[1]: forge.merge(p.number or 0) for p in job.prs}
    calls.clear()
    sync_repository(root, settings, records=rns.records)
    assert calls["list:merged"] == 1 and calls["get"] == 0
    for service, pr in merged.items():
        ref = _unit(rns.records, service).pr
        assert ref is not None and ref.state == "merged" and ref.merge_sha == pr.merge_sha


def test_lost_records_are_recovered_from_the_merged_listing(root: Path, settings: Settings, rns: RedisNS,
                                                            calls: Counter[str]) -> None:
    job = sync_repository(root, settings, records=rns.records)
    forge = LocalForge(env_repo(root))
    merged = {p.branch.rsplit("/", 1)[1]: forge.merge(p.number or 0) for p in job.prs}
    for service in merged:
        rns.records.delete_unit("production", "shop", service)
    calls.clear()
    sync_repository(root, settings, records=rns.records)
    assert calls["list:merged"] == 1
    for service, pr in merged.items():
        ref = _unit(rns.records, service).pr
        assert ref is not None and ref.number == pr.number and ref.merge_sha == pr.merge_sha


def test_a_pr_closed_by_hand_then_resolved_in_the_base_is_not_a_merge(root: Path, settings: Settings,
                                                                      rns: RedisNS) -> None:
    job = sync_repository(root, settings, records=rns.records)
    forge = LocalForge(env_repo(root))
    cart = next(p for p in job.prs if p.branch.endswith("/cart"))
    forge.close(cart.number or 0, comment="not now")
    (root / "blueprints" / "cart.yaml").unlink()  # and the blueprint goes away: nothing left to do
    sync_repository(root, settings, records=rns.records)
    assert rns.records.get_unit("production", "shop", "cart") is None


def test_auto_merge_records_the_merge_commit(tmp_path: Path, rns: RedisNS, calls: Counter[str]) -> None:
    root = make_root(tmp_path / "auto", ["cart"], extra_config="envRepo: {autoMerge: [production]}\n")
    settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, lock_ttl=2, lock_wait=5)
    job = sync_repository(root, settings, records=rns.records)
    assert [p.action for p in job.prs] == ["merged"]
    tip = str(LocalForge(env_repo(root)).repo.references["refs/heads/main"].target)
    ref = _unit(rns.records, "cart").pr
    assert ref is not None and ref.state == "merged" and ref.merge_sha == tip
    calls.clear()
    sync_repository(root, settings, records=rns.records)
    assert _unit(rns.records, "cart").pr == ref and calls["get"] == 0 and calls["list:merged"] == 0


def test_pr_merge_command_updates_the_records_at_once(root: Path, settings: Settings, rns: RedisNS) -> None:
    job = sync_repository(root, settings, records=rns.records)
    cart = next(p for p in job.prs if p.branch.endswith("/cart"))
    before = rns.records.version()
    env = {"MESHGEN_REDIS_URL": REDIS_DB_URL, "MESHGEN_REDIS_PREFIX": rns.prefix}
    out = CliRunner().invoke(pr_command, ["--repo", str(env_repo(root)), "merge", str(cart.number)], env=env)
    assert out.exit_code == 0, out.output
    assert "recorded the merge on 1 rollout(s)" in out.output
    ref = _unit(rns.records, "cart").pr
    tip = str(LocalForge(env_repo(root)).repo.references["refs/heads/main"].target)
    assert ref is not None and ref.state == "merged" and ref.merge_sha == tip
    assert rns.records.version() > before
    other = _unit(rns.records, "checkout").pr
    assert other is not None and other.state == "open"  # only the merged PR's units change
    # --no-records, and an unreachable Redis, leave the records to the next sync.
    checkout = next(p for p in job.prs if p.branch.endswith("/checkout"))
    out = CliRunner().invoke(pr_command, ["--repo", str(env_repo(root)), "merge", str(checkout.number)],
                             env={"MESHGEN_REDIS_URL": "redis://127.0.0.1:1/0", "MESHGEN_REDIS_PREFIX": rns.prefix})
    assert out.exit_code == 0 and "merged #" in out.output and "recorded" not in out.output
    assert _unit(rns.records, "checkout").pr.state == "open"  # type: ignore[union-attr]
    sync_repository(root, settings, records=rns.records)
    assert _unit(rns.records, "checkout").pr.state == "merged"  # type: ignore[union-attr]


def test_every_record_write_bumps_the_version(rns: RedisNS) -> None:
    records = rns.records
    assert records.version() == 0
    records.save_job(JobRecord(id="j1"))
    records.save_unit(UnitRecord(env="production", namespace="shop", service="cart"))
    records.delete_unit("production", "shop", "cart")
    assert records.version() == 3
    assert records.client.get(rns.prefix + "version") == b"3"
