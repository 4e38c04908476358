"""The canary controller end to end: every step a merged pull request on the local forge, gated on a real
Prometheus, measured only once the fake Argo CD runs the step healthy (see canary_world.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from api_support import TOKENS
from argo_fakes import ArgoCDServer
from canary_world import World, blueprint, make_world, summary, titles
from helpers import free_port
from promsupport import PrometheusServer
from sync_support import RedisNS, clean_prefix

from meshgen.canary.steps import read_weight

pytestmark = pytest.mark.slow

STEP = "meshgen(production): canary shop/cart v2 {}%"


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


def test_a_bad_canary_is_rolled_back_by_a_merged_pr_and_opens_no_further_step(world: World) -> None:
    world.traffic(rps=40, error_ratio=0.5)
    world.start(blueprint())
    written = world.base_files()
    rec = world.until("the canary to be rolled back", lambda r: r.phase == "rolled-back")
    prs = world.prs()
    assert [p.state for p in prs] == ["merged", "merged", "merged"], titles(prs)
    assert prs[1].title == STEP.format(20)
    rollback = prs[2]
    assert re.fullmatch(r"meshgen\(production\): roll back canary shop/cart v2 \(successRate 5\d(\.\d+)? < 99%\)",
                        rollback.title), rollback.title
    assert "Canary rollback" in rollback.body and "| successRate |" in rollback.body
    # Back to the blueprint as written, byte for byte: no canary annotation is left.
    assert world.base_files() == written and read_weight(written.values()) == (None, 0)
    failed = [g for g in rec.gates if g.ok is False]
    assert [g.name for g in failed] == ["successRate"] and failed[0].value is not None and failed[0].value < 99
    assert [(h.weight, h.result) for h in rec.history] == [(20, "failed"), (0, "rolled-back")]
    assert "successRate" in rec.reason
    # It stays rolled back: healthy traffic now changes nothing until the canary section changes or a retry.
    world.traffic(rps=40)
    for _ in range(3):
        assert world.sync().prs == []
    assert len(world.prs()) == 3 and world.record().phase == "rolled-back"  # type: ignore[union-attr]
    world.rns.records.request_canary_command("production", "shop", "cart", "retry")
    world.until("the retried canary to be promoted", lambda r: r.phase == "promoted")
    assert [p.title for p in world.prs()[3:]] == [STEP.format(w) for w in (20, 50, 100)]


def test_too_little_traffic_waits_and_never_passes(world: World) -> None:
    world.traffic(rps=0.5)  # a request every two seconds: fewer than minRequests (5) in a 3 s window
    world.start(blueprint())
    rec = world.until("the step to be measured", lambda r: r.phase == "inconclusive")
    assert "fewer than minRequests 5" in rec.reason, summary(rec)
    for _ in range(4):
        world.sync()
        rec = world.record()  # type: ignore[assignment]
        assert rec.phase == "inconclusive" and rec.weight == 20, summary(rec)
    assert [p.title for p in world.prs()[1:]] == [STEP.format(20)]
    world.traffic(rps=40)  # traffic arrives: the step passes and the next one opens
    world.until("the 50% step", lambda r: r.weight == 50)


def test_prometheus_down_waits_with_the_reason(tmp_path: Path, rns: RedisNS, argo: ArgoCDServer,
                                               prom: PrometheusServer) -> None:
    world = make_world(tmp_path, rns, argo, prom, prometheus_url=f"http://127.0.0.1:{free_port()}")
    world.start(blueprint())
    rec = world.until("the step to wait for Prometheus", lambda r: r.phase == "inconclusive")
    assert "unreachable" in rec.reason and "prometheus.url" in rec.reason, summary(rec)
    for _ in range(3):
        world.sync()
    rec = world.record()  # type: ignore[assignment]
    assert rec.phase == "inconclusive" and rec.weight == 20 and rec.gates == []
    assert [p.title for p in world.prs()[1:]] == [STEP.format(20)]


def test_argo_cd_not_running_the_step_waits(world: World) -> None:
    world.traffic(rps=40)
    world.start(blueprint())
    world.sync()  # opens and merges the 20% step
    before = world.tip()
    for _ in range(3):
        world.sync()
        world.argo.put(__import__("argo_fakes").application(  # Argo CD still runs the previous commit
            "cart-production", revision=world.prs()[0].merge_sha, repo_url=str(world.repo_path)))
    rec = world.record()
    assert rec is not None and rec.phase == "progressing" and "does not contain" in rec.reason, summary(rec)
    assert world.tip() == before and [p.title for p in world.prs()[1:]] == [STEP.format(20)]


def test_a_flushed_redis_resumes_from_the_environment_repository(world: World) -> None:
    world.traffic(rps=40)
    world.start(blueprint())
    world.until("the 50% step", lambda r: r.weight == 50)
    clean_prefix(world.rns.client, world.rns.prefix)  # every record gone, the canary's too
    world.sync()
    rec = world.record()
    assert rec is not None and rec.weight == 50 and rec.phase in ("progressing", "measuring"), summary(rec)
    # Rebuilt from the forge's merged step PRs; the 50% step is measured again before it advances.
    assert [(h.weight, h.pr) for h in rec.history][:2] == [(20, world.prs()[1].number), (50, world.prs()[2].number)]
    world.until("the canary to be promoted", lambda r: r.phase == "promoted")
    assert [p.title for p in world.prs()[1:]] == [STEP.format(w) for w in (20, 50, 100)]


def test_manual_approval_waits_for_a_person_and_an_ordinary_sync_keeps_the_step(world: World) -> None:
    world.traffic(rps=40)
    world.start(blueprint(approval="manual"))
    rec = world.until("the 20% PR", lambda r: r.phase == "awaiting-approval")
    step = world.prs("open")
    assert [p.title for p in step] == [STEP.format(20)] and "#%d" % step[0].number in rec.reason
    head = step[0].head_sha
    # An ordinary sync (also after a blueprint edit) keeps the step PR's weight and text.
    world.write(blueprint(approval="manual").replace("team: shop", "team: shop\ntimeout: 5s"))
    world.sync()
    again = world.prs("open")
    assert [p.title for p in again] == [STEP.format(20)] and again[0].head_sha != head
    assert "timeout" in again[0].body and "Canary step" in again[0].body
    world.sync()
    assert world.prs("open")[0].head_sha == again[0].head_sha  # no churn
    world.forge.merge(again[0].number)  # the person approves
    world.follow()
    rec = world.until("the 50% PR", lambda r: r.phase == "awaiting-approval" and r.weight == 20
                      and len(world.prs("open")) == 1 and "50%" in world.prs("open")[0].title)


def test_two_workers_passes_open_one_pr_per_step(world: World) -> None:
    """Two workers' canary passes at once (each its own Redis connection, as two processes have), under the
    writer lock every writer takes: the steps still go one merged PR at a time."""
    import threading

    from sync_support import redis_client

    from meshgen.gitops.jobs import run_canary_tick
    from meshgen.records import Records

    world.traffic(rps=40)
    world.start(blueprint())
    stop = threading.Event()
    errors: list[BaseException] = []
    ran: list[str] = []

    def passes() -> None:
        records = Records(redis_client(), world.rns.prefix)
        try:
            while not stop.is_set():
                job = run_canary_tick(world.settings, records)
                ran.append(job.state if job else "skipped")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            records.client.close()

    racers = [threading.Thread(target=passes) for _ in range(2)]
    for t in racers:
        t.start()
    try:
        world.until("the canary to be promoted", lambda r: r.phase == "promoted", timeout=90, sync=False)
    finally:
        stop.set()
        for t in racers:
            t.join(timeout=60)
    assert errors == [] and "succeeded" in ran
    assert titles(world.prs()[1:]) == [(STEP.format(w), "merged") for w in (20, 50, 100)]


def test_two_worker_processes_open_one_pr_per_step(world: World, tmp_path: Path) -> None:
    """Two real Celery workers take the canary ticks (two at a time, as two beats or a retry storm would send
    them): one step pull request per step, each merged once."""
    from sync_support import running_worker, worker_env

    from meshgen.gitops.jobs import CANARY_TASK_NAME, make_celery

    world.traffic(rps=40)
    world.start(blueprint())
    env = worker_env(world.root, world.rns.prefix, MESHGEN_ARGOCD_TOKEN=TOKENS["argocd"])
    settings = world.settings.model_copy(update={"queue": env["MESHGEN_QUEUE"]})
    app = make_celery(settings)

    def ticks() -> None:
        for _ in range(2):
            app.send_task(CANARY_TASK_NAME, queue=settings.queue)

    try:
        with running_worker(env, tmp_path / "w1.log"), running_worker(env, tmp_path / "w2.log"):
            world.until("the canary to be promoted", lambda r: r.phase == "promoted", timeout=120, each=ticks,
                        sync=False)
    finally:
        app.close()
    assert titles(world.prs()[1:]) == [(STEP.format(w), "merged") for w in (20, 50, 100)]


def test_a_worker_killed_mid_step_resumes_at_the_same_step(world: World, tmp_path: Path) -> None:
    """A real Celery worker runs the canary ticks (as beat sends them); the first is killed while pushing the
    20% step. The next worker starts that same step again, and the canary goes on one PR per step."""
    from helpers import wait_for
    from sync_support import WorkerProcess, running_worker, worker_env

    from meshgen.gitops.jobs import CANARY_TASK_NAME, make_celery

    world.traffic(rps=40)
    world.start(blueprint())
    mark = tmp_path / "paused"
    base_env = worker_env(world.root, world.rns.prefix, MESHGEN_ARGOCD_TOKEN=TOKENS["argocd"])
    settings = world.settings.model_copy(update={"queue": base_env["MESHGEN_QUEUE"]})
    app = make_celery(settings)

    def tick() -> None:
        app.send_task(CANARY_TASK_NAME, queue=settings.queue)

    try:
        doomed = WorkerProcess({**base_env, "MESHGEN_TEST_PAUSE_AT": "before-push",
                                "MESHGEN_TEST_PAUSE_MARK": str(mark)}, tmp_path / "doomed.log")
        try:
            doomed.wait_ready()
            tick()
            wait_for(mark.exists, 60, "the first worker to pause before pushing the 20% step")
        finally:
            doomed.kill()
        assert world.prs()[1:] == [] and read_weight(world.base_files().values()) == (None, 0)
        with running_worker(base_env, tmp_path / "second.log"):
            rec = world.until("the canary to be promoted", lambda r: r.phase == "promoted", timeout=120,
                              each=tick, sync=False)
    finally:
        app.close()
    assert titles(world.prs()[1:]) == [(STEP.format(w), "merged") for w in (20, 50, 100)]
    assert [h.weight for h in rec.history if h.pr is not None] == [20, 50, 100]


def test_linkerd_httproute_canary_is_promoted(tmp_path: Path, rns: RedisNS, argo: ArgoCDServer,
                                              prom: PrometheusServer) -> None:
    """Linkerd (Gateway API HTTPRoute backendRefs), gated on response_total / response_latency_ms_bucket."""
    world = make_world(tmp_path, rns, argo, prom, mesh="linkerd")
    world.traffic(rps=40)
    world.start(blueprint(steps="[50, 100]"))
    world.until("the canary to be promoted", lambda r: r.phase == "promoted")
    assert titles(world.prs()[1:]) == [(STEP.format(w), "merged") for w in (50, 100)]
    routes = [data for name, data in world.base_files().items() if name.startswith("httproute-")]
    assert routes and all(b"meshgen.dev/canary-weight: '100'" in r or b'meshgen.dev/canary-weight: "100"' in r
                          for r in routes), routes


def test_linkerd_smi_trafficsplit_canary_is_promoted(tmp_path: Path, rns: RedisNS, argo: ArgoCDServer,
                                                     prom: PrometheusServer) -> None:
    """Linkerd with SMI (split.smi-spec.io TrafficSplit, linkerd-smi): the same steps, the split's weights."""
    world = make_world(tmp_path, rns, argo, prom, mesh="linkerd", extra="linkerd: {trafficSplit: smi}\n")
    world.traffic(rps=40)
    world.start(blueprint(steps="[50, 100]"))
    world.until("the canary to be promoted", lambda r: r.phase == "promoted")
    assert titles(world.prs()[1:]) == [(STEP.format(w), "merged") for w in (50, 100)]
    splits = [yaml.safe_load(data) for name, data in world.base_files().items() if name.startswith("trafficsplit-")]
    assert len(splits) == 1, sorted(world.base_files())
    weights = {b["service"]: int(b["weight"]) for b in splits[0]["spec"]["backends"]}
    assert weights.get("cart-v2") == 100 and weights.get("cart-v1", 0) == 0, weights
    assert splits[0]["metadata"]["annotations"]["meshgen.dev/canary-weight"] == "100"


def test_pause_resume_abort_retry_and_promote(world: World) -> None:
    """People's commands (records.request_canary_command, what the API's write endpoints send)."""
    records = world.rns.records

    def command(name: str) -> None:
        records.request_canary_command("production", "shop", "cart", name)  # type: ignore[arg-type]

    world.traffic(rps=40)
    world.start(blueprint())
    world.until("the 20% step", lambda r: r.weight == 20)
    command("pause")
    for _ in range(3):
        world.sync()
        rec = world.record()
        assert rec is not None and rec.phase == "paused" and rec.weight == 20, summary(rec)  # type: ignore[arg-type]
    command("resume")
    world.until("the 50% step", lambda r: r.weight == 50)
    command("abort")
    rec = world.until("the abort", lambda r: r.phase == "rolled-back")
    assert rec.weight == 0 and "aborted by a person" in rec.reason
    assert world.prs()[-1].title == "meshgen(production): roll back canary shop/cart v2 (aborted by a person)"
    assert read_weight(world.base_files().values()) == (None, 0)
    command("retry")
    world.until("the retried 20% step", lambda r: r.weight == 20)
    command("promote")
    world.until("the canary to be promoted", lambda r: r.phase == "promoted")
    assert [p.title for p in world.prs()[1:]] == [
        STEP.format(20), STEP.format(50), "meshgen(production): roll back canary shop/cart v2 (aborted by a person)",
        STEP.format(20), STEP.format(100)]
    assert all(p.state == "merged" for p in world.prs())


def test_the_next_canary_starts_after_a_promotion(world: World) -> None:
    """v2 promoted; the blueprint now says stable v2, to v3: the old annotations are settled (no traffic
    change), then the v3 canary starts from v2 at 100."""
    world.traffic(rps=40)
    world.start(blueprint(steps="[50, 100]"))
    world.until("v2 to be promoted", lambda r: r.phase == "promoted")
    world.write(blueprint(steps="[50, 100]", to="v3").replace("stable: v1", "stable: v2").replace("to: v1", "to: v2"))
    world.prom.exporter.set("istio", "shop", "cart", "v3", rps=40, pod_labels={"version": "v3"})
    rec = world.until("the v3 canary to be promoted", lambda r: r.phase == "promoted" and r.to == "v3")
    assert [p.title for p in world.prs()[3:]] == [
        "meshgen(production): settle canary shop/cart on v2 before v3",
        "meshgen(production): canary shop/cart v3 50%", "meshgen(production): canary shop/cart v3 100%"]
    assert read_weight(world.base_files().values()) == ("v3", 100) and rec.stable == "v2"
