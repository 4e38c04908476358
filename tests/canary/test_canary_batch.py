"""The canaries of one pass that need a pull request share one environment re-sync (not one each).

The re-syncs are counted by wrapping the real `resync` callable the sync hands the controller (a subclass
installed like the controller itself); everything else is the real thing: local forge, Redis, a real
Prometheus, the Argo CD stand-in (see canary_world.py).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pygit2
import pytest
from argo_fakes import ArgoCDServer, application
from canary_world import PullRequest, World, blueprint, make_world  # (its module moves on main)
from promsupport import PrometheusServer
from sync_support import RedisNS

from meshgen.canary.controller import EnvPass, Resync
from meshgen.canary.steps import read_weight
from meshgen.gitops.envrepo import managed_files
from meshgen.gitops.lifecycle import SyncReport
from meshgen.gitops.sync import install_canary_controller
from meshgen.records import CanaryRecord
from meshgen.units import Unit

pytestmark = pytest.mark.slow

SERVICES = ("cart", "checkout", "payment")
ENV = "production"


def branch(service: str) -> str:
    return f"meshgen/{ENV}/shop/{service}"


def step_title(service: str, weight: int) -> str:
    return f"meshgen({ENV}): canary shop/{service} v2 {weight}%"


@pytest.fixture
def resyncs() -> Iterator[list[dict[str, int]]]:
    """Every re-sync the controller asks for: {branch: the weight its canary note carries}."""
    seen: list[dict[str, int]] = []

    class CountingPass(EnvPass):
        def reconcile(self, resync: Resync) -> None:
            def counted(units: Mapping[str, Unit], notes: Mapping[str, dict[str, Any]], *,
                        refresh: Collection[str] = ()) -> SyncReport:
                seen.append({b: int(n["weight"]) for b, n in notes.items()})
                return resync(units, notes, refresh=refresh)

            super().reconcile(counted)

    previous = install_canary_controller(CountingPass)
    try:
        yield seen
    finally:
        install_canary_controller(previous)


@pytest.fixture
def world(tmp_path: Path, rns: RedisNS, argo: ArgoCDServer, prom: PrometheusServer) -> World:
    return make_world(tmp_path, rns, argo, prom)


def write(world: World, service: str, text: str, team: str = "shop") -> None:
    (world.root / "blueprints" / f"{service}.yaml").write_text(
        text.replace("service: cart", f"service: {service}").replace("team: shop", f"team: {team}"))


def follow(world: World) -> None:
    """Argo CD runs the base's tip, healthy, for every service."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for service in SERVICES:
        world.argo.put(application(f"{service}-{ENV}", revision=world.tip(), repo_url=str(world.repo_path),
                                   health="Healthy", finished_at=now, reconciled_at=now))


def record(world: World, service: str) -> CanaryRecord:
    rec = world.rns.records.get_canary(ENV, "shop", service)
    assert rec is not None, service
    return rec


def canary_prs(world: World) -> list[PullRequest]:
    return sorted((p for p in world.forge.list() if "canary" in p.title), key=lambda p: p.number)


def changed_folders(world: World, pr: PullRequest) -> tuple[str, set[str]]:
    """(the commit the PR's head was built on, the service folders its head changes)."""
    repo = pygit2.Repository(str(world.repo_path))
    head = repo[pr.head_sha].peel(pygit2.Commit)
    parent = head.parents[0]
    paths = {d.delta.new_file.path for d in repo.diff(parent, head)}
    return str(parent.id), {p.rsplit("/", 1)[0] for p in paths}


def base_weight(world: World, service: str) -> tuple[str | None, int]:
    repo = pygit2.Repository(str(world.repo_path))
    tree = repo.references["refs/heads/main"].peel(pygit2.Commit).tree
    return read_weight(managed_files(repo, tree, f"{ENV}/shop/{service}").values())


def start_all(world: World, resyncs: list[dict[str, int]], **kw: Any) -> None:
    """Every blueprint delivered as written (merged by a person), then one pass starts every canary."""
    for service in SERVICES:
        write(world, service, blueprint(**kw))
        world.prom.exporter.set("istio", "shop", service, "v2", rps=40,
                                pod_labels={"app": service, "version": "v2"})
    world.sync()
    for pr in world.forge.list("open"):
        world.forge.merge(pr.number)
    follow(world)
    resyncs.clear()
    world.sync()
    follow(world)


def test_canaries_started_in_one_pass_share_one_resync(world: World, resyncs: list[dict[str, int]]) -> None:
    start_all(world, resyncs)
    # One re-sync carried the first step of all three canaries.
    assert resyncs == [{branch(s): 20 for s in SERVICES}], resyncs
    prs = canary_prs(world)
    assert sorted((p.title, p.state) for p in prs) == [(step_title(s, 20), "merged") for s in SERVICES]
    built = [changed_folders(world, p) for p in prs]
    # Each pull request changes only its own canary's folder; all were built on the same base in that one
    # re-sync and merged one after the other (the later ones as true merges onto the moved base).
    assert len({parent for parent, _ in built}) == 1
    assert sorted(folders for _, folders in built) == [{f"{ENV}/shop/{s}"} for s in SERVICES]
    for service in SERVICES:
        assert base_weight(world, service) == ("v2", 20)
        rec = record(world, service)
        pr = next(p for p in prs if p.title == step_title(service, 20))
        assert (rec.phase, rec.weight, rec.step) == ("progressing", 20, 0), rec.reason
        assert f"#{pr.number} merged" in rec.reason
        assert [(h.weight, h.pr, h.result) for h in rec.history] == [(20, pr.number, "pending")]
    # The next pass opens nothing: the steps are merged and wait for Argo CD's window.
    resyncs.clear()
    assert world.sync().prs == [] and resyncs == []


def test_a_mixed_pass_rolls_back_steps_and_pauses_in_one_resync(world: World,
                                                                resyncs: list[dict[str, int]]) -> None:
    """cart fails its gates (rollback), checkout passes (next step), payment is paused by a person: the
    pass re-syncs once for the rollback and the step together, and leaves payment as it is."""
    start_all(world, resyncs, failure_limit=0)
    world.prom.exporter.set("istio", "shop", "cart", "v2", rps=40, error_ratio=0.5,
                            pod_labels={"app": "cart", "version": "v2"})
    world.rns.records.request_canary_command(ENV, "shop", "payment", "pause")
    resyncs.clear()
    world.sync()  # Argo CD reports the steps healthy: both windows start in this pass; payment pauses
    assert resyncs == [] and record(world, "payment").phase == "paused"
    moved: list[dict[str, int]] = []
    deadline = time.monotonic() + 60
    while not moved:
        assert time.monotonic() < deadline, {s: record(world, s).reason for s in SERVICES}
        time.sleep(4)  # past both 3 s windows: the pass measures cart and checkout together
        world.sync()
        follow(world)
        moved = list(resyncs)
    assert moved == [{branch("cart"): 0, branch("checkout"): 50}], moved
    titles = [(p.title, p.state) for p in canary_prs(world)][3:]
    assert len(titles) == 2 and ("meshgen(production): canary shop/checkout v2 50%", "merged") in titles
    assert any(t.startswith("meshgen(production): roll back canary shop/cart v2 (successRate") and s == "merged"
               for t, s in titles), titles
    cart, checkout, payment = (record(world, s) for s in SERVICES)
    assert (cart.phase, cart.weight) == ("rolled-back", 0) and "successRate" in cart.reason
    assert [(h.weight, h.result) for h in cart.history] == [(20, "failed"), (0, "rolled-back")]
    assert (checkout.phase, checkout.weight) == ("progressing", 50)
    assert [(h.weight, h.result) for h in checkout.history] == [(20, "passed"), (50, "pending")]
    assert (payment.phase, payment.weight) == ("paused", 20)
    assert base_weight(world, "cart") == (None, 0) and base_weight(world, "checkout") == ("v2", 50)
    assert base_weight(world, "payment") == ("v2", 20)
    assert world.forge.list("open") == []


def test_canaries_sharing_a_team_branch_step_one_at_a_time(tmp_path: Path, rns: RedisNS, argo: ArgoCDServer,
                                                            prom: PrometheusServer,
                                                            resyncs: list[dict[str, int]]) -> None:
    """Team grouping: cart and checkout share a branch, so each step is re-synced alone (as before the
    batching: a step pull request never carries another canary's step); payment's team has its own."""
    world = make_world(tmp_path, rns, argo, prom, extra="envRepo: {grouping: team}\n")
    for service, team in (("cart", "shop"), ("checkout", "shop"), ("payment", "pay")):
        write(world, service, blueprint(), team=team)
    world.sync()
    for pr in world.forge.list("open"):
        world.forge.merge(pr.number)
    resyncs.clear()
    world.sync()
    shop, pay = f"meshgen/{ENV}/team-shop", f"meshgen/{ENV}/team-pay"
    assert resyncs == [{shop: 20}, {shop: 20}, {pay: 20}], resyncs
    prs = canary_prs(world)
    assert [(p.title, p.state, p.branch) for p in prs] == [
        (step_title("cart", 20), "merged", shop), (step_title("checkout", 20), "merged", shop),
        (step_title("payment", 20), "merged", pay)]
    for service in SERVICES:
        assert base_weight(world, service) == ("v2", 20)
        rec = record(world, service)
        assert (rec.phase, rec.weight) == ("progressing", 20), rec.reason
