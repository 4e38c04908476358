"""A base branch that merges only up-to-date branches (GitHub's strict required checks, GitLab's
fast-forward merges): the canaries started in one pass all end merged in that pass.

The forge is the real local forge with that protection setting added (`UpToDateOnly`: a merge whose head
does not contain the base tip is refused, as GitHub answers 405 "Head branch is out of date"), installed
for the controller with a subclass of EnvPass the way test_canary_batch.py counts re-syncs; everything
else is the real thing (Redis, a real Prometheus, the Argo CD stand-in: canary_world.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from argo_fakes import ArgoCDServer
from canary_world import World, make_world
from promsupport import PrometheusServer
from sync_support import RedisNS
from test_canary_batch import SERVICES, base_weight, branch, canary_prs, record, start_all, step_title

from meshgen.canary.controller import EnvPass, Resync
from meshgen.forges.base import ForgeError, PullRequest
from meshgen.forges.local import LocalForge
from meshgen.gitops.lifecycle import SyncReport
from meshgen.gitops.sync import install_canary_controller
from meshgen.units import Unit

pytestmark = pytest.mark.slow


class UpToDateOnly(LocalForge):
    """The local forge behind a base branch that requires branches to be up to date before merging."""

    refused: ClassVar[list[int]] = []

    def merge(self, number: int) -> PullRequest:
        pr = self.get(number)
        base = self.repo.references.get(f"refs/heads/{pr.base}")
        head = self.repo.references.get(f"refs/heads/{pr.branch}")
        if pr.state == "open" and base is not None and head is not None:
            b, h = base.target, head.target
            if h != b and not self.repo.descendant_of(h, b):
                UpToDateOnly.refused.append(number)
                raise ForgeError(f"merging pull request #{number} failed: Head branch is out of date")
        return super().merge(number)


@pytest.fixture
def world(tmp_path: Path, rns: RedisNS, argo: ArgoCDServer, prom: PrometheusServer) -> World:
    return make_world(tmp_path, rns, argo, prom)


@pytest.fixture
def resyncs(world: World) -> Iterator[list[tuple[set[str], set[str]]]]:
    """Every re-sync the controller asks for: (the branches its notes carry, the branches it refreshes)."""
    seen: list[tuple[set[str], set[str]]] = []
    UpToDateOnly.refused = []

    class StrictPass(EnvPass):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.forge = UpToDateOnly(world.repo_path)

        def reconcile(self, resync: Resync) -> None:
            def counted(units: Mapping[str, Unit], notes: Mapping[str, dict[str, Any]], *,
                        refresh: Collection[str] = ()) -> SyncReport:
                seen.append((set(notes), set(refresh)))
                return resync(units, notes, refresh=refresh)

            super().reconcile(counted)

    previous = install_canary_controller(StrictPass)
    try:
        yield seen
    finally:
        install_canary_controller(previous)


def test_steps_started_together_all_merge_onto_an_up_to_date_only_base(
        world: World, resyncs: list[tuple[set[str], set[str]]]) -> None:
    start_all(world, [])  # test_canary_batch's counter is not installed: ours counts
    everyone = {branch(s) for s in SERVICES}
    # The batch's one re-sync, then each refused step rebuilt alone on the base the previous merge left.
    assert resyncs == [
        (everyone, set()),
        ({branch("checkout"), branch("payment")}, {branch("checkout")}),
        ({branch("payment")}, {branch("payment")})], resyncs
    prs = canary_prs(world)
    assert sorted((p.title, p.state) for p in prs) == [(step_title(s, 20), "merged") for s in SERVICES]
    assert len(UpToDateOnly.refused) == 2  # checkout and payment, once each
    for service in SERVICES:
        assert base_weight(world, service) == ("v2", 20)
        rec = record(world, service)
        assert (rec.phase, rec.weight) == ("progressing", 20), rec.reason
    assert world.forge.list("open") == []
