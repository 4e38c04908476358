"""The canary controller end to end: every step a merged pull request on the local forge, gated on a real
Prometheus, measured only once the fake Argo CD runs the step healthy (see canary_world.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import TOKENS
from argo_fakes import ArgoCDServer
from canary_world import BRANCH, World, blueprint, make_world, summary, titles
from helpers import free_port
from promsupport import PrometheusServer, start_prometheus
from sync_support import RedisNS, clean_prefix, redis_namespace

from meshgen.canary.steps import read_weight

pytestmark = pytest.mark.slow

STEP = "meshgen(production): canary shop/cart v2 {}%"


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture
def rns() -> Iterator[RedisNS]:
    with redis_namespace("canary") as ns:
        yield ns


@pytest.fixture
def argo() -> Iterator[ArgoCDServer]:
    server = ArgoCDServer(TOKENS["argocd"])
    yield server
    server.stop()


@pytest.fixture
def world(tmp_path: Path, rns: RedisNS, argo: ArgoCDServer, prom: PrometheusServer) -> World:
    return make_world(tmp_path, rns, argo, prom)


def test_a_good_canary_is_promoted_one_merged_pr_per_step(world: World) -> None:
    world.traffic(rps=40)
    first = world.start(blueprint())
    rec = world.until("the canary to be promoted", lambda r: r.phase == "promoted")
    prs = world.prs()
    assert titles(prs) == [("meshgen(production): add shop/cart", "merged"), (STEP.format(20), "merged"),
                           (STEP.format(50), "merged"), (STEP.format(100), "merged")], titles(prs)
    assert prs[0].number == first.number
    # Each step's description carries the previous step's gate values; the first has none.
    assert "Previous step" not in prs[1].body
    assert "Previous step (20%): passed" in prs[2].body and "successRate" in prs[2].body
    assert "Previous step (50%): passed" in prs[3].body and "latencyP99" in prs[3].body
    # The base carries the weight, mesh-neutrally, on the objects the split changed.
    assert read_weight(world.base_files().values()) == ("v2", 100)
    assert [(h.weight, h.pr, h.result) for h in rec.history] == [
        (20, prs[1].number, "passed"), (50, prs[2].number, "passed"), (100, prs[3].number, "promoted")]
    assert rec.weight == 100 and rec.step == 2 and all(g.ok for g in rec.gates)
    # Promoted is final: more passes open nothing and an ordinary sync keeps 100%.
    for _ in range(2):
        job = world.sync()
        assert job.prs == [], job.prs
    assert len(world.prs()) == 4 and world.record().phase == "promoted"  # type: ignore[union-attr]
