"""Prometheus metrics, derived from what the workers recorded in Redis.

Syncs run in Celery workers and polls in beat or another replica, so counters kept in this
process would miss them. Instead each scrape reads what changed since the last one (new job
ids from the `jobs` sorted set, plus jobs that were still running) and folds finished jobs
into per-process totals. Every API replica therefore exports the same totals; aggregate
with max(), not sum().

Canaries are read from their records at every scrape: the weight and the last gate values as
gauges, and transitions counted from each record's history (a step that ended passed, failed,
inconclusive, promoted, rolled-back or aborted), so the count is the same on every replica and
after a restart. A canary that starts again (retry, a new `to`) begins a new history, which
Prometheus sees as a counter reset: query with increase()/rate(), which handle resets.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from meshgen.argocd.poller import ArgoKeys
from meshgen.records import CanaryRecord, JobRecord, Records, StepResult

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TERMINAL = ("succeeded", "partial", "failed")


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.total += value
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


class JobTally:
    """Totals over job records, updated incrementally (each finished job is counted once)."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.finished: Counter[str] = Counter()
        self.prs: Counter[str] = Counter()
        self.render = _Histogram()
        self.push = _Histogram()
        self.in_progress: Counter[str] = Counter()
        self._done: set[str] = set()
        self._pending: set[str] = set()
        self._watermark = "-inf"
        self._lock = threading.Lock()

    def update(self) -> None:
        client, prefix = self.records.client, self.records.prefix
        with self._lock:
            fresh = client.zrangebyscore(prefix + "jobs", self._watermark, "+inf", withscores=True)
            ids = {(i.decode() if isinstance(i, bytes) else i) for i, _ in fresh} - self._done
            if fresh:
                self._watermark = repr(max(score for _, score in fresh))  # inclusive: ties are re-read
            todo = sorted(ids | self._pending)
            self._pending = set()
            self.in_progress = Counter()
            for i in range(0, len(todo), 500):
                chunk = todo[i:i + 500]
                for job_id, raw in zip(chunk, client.mget([f"{prefix}job:{j}" for j in chunk]), strict=True):
                    if raw:
                        self._fold(job_id, JobRecord.model_validate_json(raw))

    def _fold(self, job_id: str, job: JobRecord) -> None:
        if job.state not in _TERMINAL:
            self._pending.add(job_id)
            self.in_progress[job.state] += 1
            return
        self._done.add(job_id)
        self.finished[job.state] += 1
        for key, hist in (("render", self.render), ("push", self.push)):
            if key in job.timings:
                hist.observe(job.timings[key])
        for pr in job.prs:
            self.prs[pr.action] += 1


class MeshgenCollector(Collector):
    def __init__(self, records: Records, tally: JobTally, rollout_counts: Callable[[], dict[str, int]],
                 argocd_configured: bool) -> None:
        self.records = records
        self.tally = tally
        self.rollout_counts = rollout_counts
        self.argocd_configured = argocd_configured
        self.keys = ArgoKeys(records.prefix)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("meshgen_redis_up", "Whether this scrape could read Redis.")
        try:
            self.tally.update()
            errors, polled, last_error = self.records.client.mget(
                [self.keys.poll_errors, self.keys.polled, self.keys.last_error])
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - a scrape must still answer when Redis is down
            errors = polled = last_error = None
            up.add_metric([], 0)
        yield up
        t = self.tally
        jobs = CounterMetricFamily("meshgen_jobs", "Sync jobs finished, by final state.", labels=["state"])
        for state in _TERMINAL:
            jobs.add_metric([state], t.finished[state])
        yield jobs
        running = GaugeMetricFamily("meshgen_jobs_in_progress", "Sync jobs queued or running.", labels=["state"])
        for state in ("queued", "running"):
            running.add_metric([state], t.in_progress[state])
        yield running
        yield t.render.family("meshgen_render_duration_seconds", "Render time of finished sync jobs.")
        yield t.push.family("meshgen_push_duration_seconds", "Environment-repository push time of finished sync jobs.")
        prs = CounterMetricFamily("meshgen_pull_requests", "Pull-request actions taken by sync jobs.",
                                  labels=["action"])
        for action in ("opened", "updated", "unchanged", "closed", "merged"):
            prs.add_metric([action], t.prs[action])
        yield prs
        poll_errors = CounterMetricFamily("meshgen_argocd_poll_errors", "Failed Argo CD polls.")
        poll_errors.add_metric([], float(errors or 0))
        yield poll_errors
        if polled:
            last = GaugeMetricFamily("meshgen_argocd_last_poll_timestamp_seconds",
                                     "Unix time of the last successful Argo CD poll.")
            last.add_metric([], float(polled))
            yield last
        failing = GaugeMetricFamily("meshgen_argocd_poll_failing",
                                    "1 when the last Argo CD poll error is newer than the last success.")
        failing.add_metric([], float(_failing(last_error, polled)))
        yield failing
        rollouts = GaugeMetricFamily("meshgen_rollouts", "Rollouts (env, namespace, service) by state.",
                                     labels=["state"])
        for state, count in self.rollout_counts().items():
            rollouts.add_metric([state], count)
        yield rollouts
        try:
            canaries = list(self.records.iter_canaries())
        except Exception:  # noqa: BLE001 - Redis down: meshgen_redis_up says so
            canaries = []
        yield from canary_families(canaries)


#: Every ended step counts; "pending" is a step still in progress, not a transition.
TRANSITION_RESULTS: tuple[StepResult, ...] = ("passed", "failed", "inconclusive", "promoted", "rolled-back",
                                              "aborted")


def canary_families(canaries: Iterable[CanaryRecord]) -> Iterator[Metric]:
    unit = ["env", "namespace", "service"]
    weight = GaugeMetricFamily("meshgen_canary_weight", "Percent of traffic the canary version receives per the "
                               "environment branch.", labels=unit)
    gates = GaugeMetricFamily("meshgen_canary_gate_value", "The canary's last measured value of each gate "
                              "(absent when the gate had no data).", labels=[*unit, "gate"])
    transitions: Counter[str] = Counter()
    for canary in canaries:
        labels = [canary.env, canary.namespace, canary.service]
        weight.add_metric(labels, canary.weight)
        for gate in canary.gates:
            if gate.value is not None:
                gates.add_metric([*labels, gate.name], gate.value)
        transitions.update(step.result for step in canary.history)
    total = CounterMetricFamily("meshgen_canary_transitions", "Canary steps that ended, by result (counted from "
                                "the canaries' histories).", labels=["result"])
    for result in TRANSITION_RESULTS:
        total.add_metric([result], transitions[result])
    yield weight
    yield gates
    yield total


def _failing(last_error: Any, polled: Any) -> bool:
    if not last_error:
        return False
    try:
        at = float(json.loads(last_error)["at"])
    except (ValueError, KeyError, TypeError):
        return False
    return polled is None or at > float(polled)


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
