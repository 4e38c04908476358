"""Canary controller benchmarks (issue 11), each beside a baseline measured in the same run.

1. step overhead: one canary walks steps 5, 10, ..., 100 (approval auto, local forge, a real
   Prometheus scraping the mesh exporter every second, the Argo CD stand-in reporting each step
   healthy). Timed per step: from the moment the measurement that passes returns to the moment
   the next step's pull request is merged (LocalForge.merge returns). Baseline: the same weight
   change made by a person through meshgen (edit the blueprint's route weights, `sync` opens the
   pull request, merge it), timed from the edit to the merge.
2. 200 canaries in flight on one worker: 200 services, each with a canary at its first step,
   measuring; every pass (meshgen.gitops.jobs.run_canary_tick, what the worker's Celery beat task
   runs) reads the steps back from Git and the forge, asks Argo CD, and queries Prometheus for
   every gate of every canary (too little traffic, so each stays inconclusive and the next pass does
   it all again). Reported: every pass's time. Also timed: the pass that starts all 200 canaries
   (200 step pull requests opened and merged). Baseline: the same pass over 200 services without
   a canary.

Reproduce:  .venv/bin/python bench/canary_bench.py                         (steps of 5%, 200 canaries)
            .venv/bin/python bench/canary_bench.py --canaries 20 --passes 2   (quick)
            .venv/bin/python bench/canary_bench.py --skip steps --skip passes  (only the pass starting 200)
Needs Redis at --redis (default redis://127.0.0.1:6379/13; keys under a unique prefix, removed after)
and Debian's `prometheus` (scripts/test installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pygit2
import redis

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
sys.path.insert(0, str(TOP / "tests"))
sys.path.insert(0, str(TOP / "tests" / "api"))
sys.path.insert(0, str(TOP / "tests" / "canary"))

from api_support import TOKENS  # noqa: E402
from argo_fakes import ArgoCDServer, application  # noqa: E402
from promsupport import PrometheusServer, start_prometheus  # noqa: E402

import meshgen.canary.controller as controller  # noqa: E402
from meshgen.forges.local import LocalForge  # noqa: E402
from meshgen.gitops.jobs import run_canary_tick  # noqa: E402
from meshgen.gitops.sync import sync_repository  # noqa: E402
from meshgen.records import Records  # noqa: E402
from meshgen.settings import Settings  # noqa: E402

controller.install()  # as the worker, the CLI and `meshgen up` do

ENV = "production"


def blueprint(service: str, *, steps: list[int], interval: str, min_requests: int,
              canary: bool = True, weight: int = 0, failure_limit: int = 0) -> str:
    route = "to: v1" if weight == 0 else f"to: {{v1: {100 - weight}, v2: {weight}}}"
    text = f"""\
service: {service}
namespace: shop
team: shop
versions: {{v1: {{version: v1}}, v2: {{version: v2}}}}
routes:
  - name: default
    {route}
"""
    if canary:
        text += f"""\
canary:
  stable: v1
  to: v2
  steps: {steps}
  interval: {interval}
  gates: {{successRate: 99, latencyP99: 500ms}}
  minRequests: {min_requests}
  failureLimit: {failure_limit}
  approval: auto
"""
    return text


class Fleet:
    """N services in one environment: blueprints on disk, the local forge, Argo CD following the base."""

    def __init__(self, tmp: Path, name: str, records: Records, argo: ArgoCDServer, prom: PrometheusServer) -> None:
        self.root = tmp / name
        (self.root / "blueprints").mkdir(parents=True)
        (self.root / "meshgen.yaml").write_text(
            f"environments:\n  {ENV}: {{mesh: istio, path: {ENV}}}\n"
            f"argocd: {{mode: rest, url: '{argo.url}', staleAfter: 10m}}\n"
            f"prometheus: {{url: '{prom.url}'}}\n")
        self.records = records
        self.argo = argo
        self.settings = Settings(root=self.root, redis_url=_url(records), redis_prefix=records.prefix,
                                 lock_ttl=600, lock_wait=600,
                                 argocd_token=TOKENS["argocd"])
        self.services: list[str] = []

    @property
    def repo_path(self) -> Path:
        return self.root / ".meshgen" / "env-repo"

    @property
    def forge(self) -> LocalForge:
        return LocalForge(self.repo_path)

    def write(self, service: str, text: str) -> None:
        (self.root / "blueprints" / f"{service}.yaml").write_text(text)
        if service not in self.services:
            self.services.append(service)

    def sync(self) -> Any:
        return sync_repository(self.root, self.settings, records=self.records)

    def merge_open(self) -> int:
        forge = self.forge
        opened = forge.list("open")
        for pr in opened:
            forge.merge(pr.number)
        return len(opened)

    def tip(self) -> str:
        return str(pygit2.Repository(str(self.repo_path)).references["refs/heads/main"].target)

    def follow(self) -> None:
        """Argo CD runs the base's tip, healthy, for every service (what a synced cluster reports)."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        tip = self.tip()
        for service in self.services:
            self.argo.put(application(f"{service}-{ENV}", revision=tip, repo_url=str(self.repo_path),
                                      health="Healthy", finished_at=now, reconciled_at=now))

    def poll(self) -> float:
        """One Argo CD poll into Redis (Celery beat's meshgen.argocd.poll, on its own schedule in a
        deployment); the controller reads these cached Applications instead of asking Argo CD."""
        from meshgen.argocd.poller import poll_once
        from meshgen.blueprint.loading import load_config

        started = time.perf_counter()
        if not poll_once(load_config(self.root)[0], self.settings, self.records).ok:
            raise SystemExit("the Argo CD poll failed")
        return time.perf_counter() - started

    def tick(self) -> float:
        """One canary pass as the worker's beat task runs it; its wall time."""
        started = time.perf_counter()
        job = run_canary_tick(self.settings, self.records)
        elapsed = time.perf_counter() - started
        if job is None or job.state not in ("succeeded", "partial"):
            raise SystemExit(f"the canary pass did not succeed: {job}")
        return elapsed


def _url(records: Records) -> str:
    kw = records.client.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


@contextlib.contextmanager
def step_timer() -> Iterator[list[float]]:
    """Seconds from each passing measurement to the merge of the pull request that follows it
    (instrumentation around the controller's own calls; nothing is replaced)."""
    samples: list[float] = []
    passed_at: list[float] = []
    original_measure, original_merge = controller.measure, LocalForge.merge

    def measure(*args: Any, **kwargs: Any) -> Any:
        result = original_measure(*args, **kwargs)
        if result.outcome == "pass":
            passed_at[:] = [time.perf_counter()]
        return result

    def merge(self: LocalForge, number: int, *args: Any, **kwargs: Any) -> Any:
        merged = original_merge(self, number, *args, **kwargs)
        if passed_at:
            samples.append(time.perf_counter() - passed_at.pop())
        return merged

    controller.measure = measure  # type: ignore[assignment]
    LocalForge.merge = merge  # type: ignore[method-assign]
    try:
        yield samples
    finally:
        controller.measure = original_measure
        LocalForge.merge = original_merge  # type: ignore[method-assign]


def bench_steps(tmp: Path, records: Records, argo: ArgoCDServer, prom: PrometheusServer,
                interval: str, step: int) -> dict[str, Any]:
    steps = list(range(step, 101, step))
    fleet = Fleet(tmp, "steps", records, argo, prom)
    prom.exporter.set("istio", "shop", "cart", "v2", rps=50, pod_labels={"version": "v2"})
    fleet.write("cart", blueprint("cart", steps=steps, interval=interval, min_requests=5))
    fleet.sync()
    fleet.merge_open()
    fleet.follow()
    deadline = time.monotonic() + 60 + len(steps) * 20
    with step_timer() as samples:
        while True:
            fleet.tick()
            fleet.follow()
            rec = records.get_canary(ENV, "shop", "cart")
            if rec is not None and rec.phase in ("promoted", "rolled-back"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the canary did not finish: {rec}")
            time.sleep(0.2)
    if rec.phase != "promoted":
        raise SystemExit(f"the canary was rolled back: {rec.reason}")
    prs = [p for p in fleet.forge.list("merged") if "canary" in p.title]

    # Baseline: a person moves the same weights through meshgen, one blueprint edit + sync + merge each.
    manual = Fleet(tmp, "manual", records_for(records, "manual"), argo, prom)
    manual.write("cart", blueprint("cart", steps=steps, interval=interval, min_requests=5, canary=False))
    manual.sync()
    manual.merge_open()
    by_hand: list[float] = []
    for weight in steps[1:]:
        started = time.perf_counter()
        manual.write("cart", blueprint("cart", steps=steps, interval=interval, min_requests=5, canary=False,
                                       weight=weight))
        manual.sync()
        if manual.merge_open() != 1:
            raise SystemExit("the manual step did not open exactly one pull request")
        by_hand.append(time.perf_counter() - started)
    return {"steps": len(steps), "merged_step_prs": len(prs), "overhead": samples, "by_hand": by_hand}


def records_for(records: Records, tag: str) -> Records:
    return Records(records.client, f"{records.prefix}{tag}:")


def bench_fleet(tmp: Path, records: Records, argo: ArgoCDServer, prom: PrometheusServer, n: int,
                passes: int, *, start_only: bool = False) -> dict[str, Any]:
    fleet = Fleet(tmp, "fleet", records_for(records, "fleet"), argo, prom)
    for i in range(n):
        service = f"svc{i:03d}"
        # Traffic that fails successRate, with a failureLimit never reached: every pass after a window
        # queries every gate of every canary and keeps it measuring at 10%.
        prom.exporter.set("istio", "shop", service, "v2", rps=5, error_ratio=0.5, pod_labels={"version": "v2"})
        fleet.write(service, blueprint(service, steps=[10, 50, 100], interval="2s", min_requests=1,
                                       failure_limit=100000))
    fleet.sync()
    added = fleet.merge_open()
    fleet.follow()
    env_syncs = _count_env_syncs()
    start_pass = fleet.tick()  # opens and merges the 10% step of every canary
    start_syncs = env_syncs()
    fleet.follow()
    started = [r for r in fleet.records.iter_canaries() if r.weight == 10]
    if start_only:
        return {"services": n, "added": added, "started": len(started), "start_pass": start_pass,
                "start_syncs": start_syncs}
    in_flight: list[float] = []
    direct: list[float] = []
    polls: list[float] = []
    queries = _count_queries()
    for _ in range(passes):
        time.sleep(2.2)  # every canary's measuring window (interval 2s) ends before the pass
        polls.append(fleet.poll())
        in_flight.append(fleet.tick())
    n_queries = queries() / passes
    for client in (fleet.records.client,):
        for key in client.scan_iter(match=f"{fleet.records.prefix}argocd:*"):
            client.delete(key)  # no poller: the controller asks Argo CD for each canary
    for _ in range(passes):
        time.sleep(2.2)
        direct.append(fleet.tick())
    phases: dict[str, int] = {}
    for rec in fleet.records.iter_canaries():
        phases[rec.phase] = phases.get(rec.phase, 0) + 1

    plain = Fleet(tmp, "plain", records_for(records, "plain"), argo, prom)
    for i in range(n):
        plain.write(f"svc{i:03d}", blueprint(f"svc{i:03d}", steps=[10], interval="2s", min_requests=1,
                                             canary=False))
    plain.sync()
    plain.merge_open()
    plain.follow()
    baseline = [plain.tick() for _ in range(passes)]
    return {"services": n, "added": added, "started": len(started), "start_pass": start_pass,
            "start_syncs": start_syncs, "in_flight": in_flight, "direct": direct, "polls": polls, "phases": phases, "baseline": baseline, "queries": n_queries}


def _count_queries() -> Any:
    """Prometheus queries made from now on (a counter around the client's own method)."""
    from meshgen.canary.prometheus import Prometheus

    count = [0]
    original = Prometheus.query

    def query(self: Prometheus, promql: str, **kwargs: Any) -> float | None:
        count[0] += 1
        return original(self, promql, **kwargs)

    Prometheus.query = query  # type: ignore[method-assign]

    def done() -> int:
        Prometheus.query = original  # type: ignore[method-assign]
        return count[0]

    return done


def _count_env_syncs() -> Any:
    """Whole-environment syncs (lifecycle.sync_env, as meshgen.gitops.sync calls it) from now on."""
    from meshgen.gitops import sync

    count = [0]
    original = sync.sync_env

    def sync_env(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    sync.sync_env = sync_env

    def done() -> int:
        sync.sync_env = original
        return count[0]

    return done


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--step", type=int, default=5, help="step size in percent (default 5: 20 steps)")
    parser.add_argument("--interval", default="3s", help="each step's measuring window")
    parser.add_argument("--canaries", type=int, default=200)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--skip", choices=["steps", "fleet", "passes"], action="append", default=[],
                        help="passes: of the fleet, only the pass that starts every canary")
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis)
    prefix = f"meshgen-bench-canary-{uuid.uuid4().hex[:8]}:"
    records = Records(client, prefix)
    tmp = Path(tempfile.mkdtemp(prefix="canary-bench-"))
    argo = ArgoCDServer(TOKENS["argocd"])
    (tmp / "prometheus").mkdir()
    prom = start_prometheus(tmp / "prometheus")
    os.environ.pop("MESHGEN_FORGE_TOKEN", None)
    print(f"# canary benchmarks — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    try:
        if "steps" not in args.skip:
            s = bench_steps(tmp, records, argo, prom, args.interval, args.step)
            o, b = s["overhead"], s["by_hand"]
            print(f"\n## step overhead ({s['steps']} steps, {s['merged_step_prs']} step pull requests merged)")
            print("| | samples | p50 | p95 | max |\n|---|---|---|---|---|")
            print(f"| passing measurement → next step's PR merged (meshgen) | {len(o)} | {_ms(o, .5)} | "
                  f"{_ms(o, .95)} | {_ms(o, 1)} |")
            print(f"| baseline: blueprint edit → sync → PR merged (a person's step) | {len(b)} | {_ms(b, .5)} | "
                  f"{_ms(b, .95)} | {_ms(b, 1)} |")
        if "fleet" not in args.skip:
            f = bench_fleet(tmp, records, argo, prom, args.canaries, args.passes, start_only="passes" in args.skip)
            start = (f"| the pass that starts every canary ({f['started']} step PRs opened and merged; "
                     f"{f['start_syncs']} environment syncs) | 1 | {f['start_pass'] * 1000:.0f} ms | |")
            if "passes" in args.skip:
                print(f"\n## {f['services']} canaries started in one pass\n| pass | runs | time | |\n|---|---|---|---|")
                print(start)
                return
            print(f"\n## {f['services']} canaries in flight on one worker ({f['started']} started; phases after "
                  f"the passes: {f['phases']})")
            print("| pass | runs | p50 | max |\n|---|---|---|---|")
            print(f"| canaries measuring (Git, forge, Argo CD, {f['queries']:.0f} Prometheus queries per pass) | "
                  f"{len(f['in_flight'])} | {_ms(f['in_flight'], .5)} | {_ms(f['in_flight'], 1)} |")
            print(f"| the same, no Argo CD poller (the controller reads each Application from Argo CD) | "
                  f"{len(f['direct'])} | {_ms(f['direct'], .5)} | {_ms(f['direct'], 1)} |")
            print(f"| (the Argo CD poll itself, beat's own task: {len(f['polls'])} runs, p50 {_ms(f['polls'], .5)}) | | | |")
            print(f"| baseline: the same pass, {f['services']} services without a canary | {len(f['baseline'])} | "
                  f"{_ms(f['baseline'], .5)} | {_ms(f['baseline'], 1)} |")
            print(start)
    finally:
        prom.stop()
        argo.stop()
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
