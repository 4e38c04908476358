"""Canary gates: what each mesh's metrics say about the version being rolled out, and the verdict.

The default queries follow Flagger's built-in checks (fluxcd/flagger pkg/metrics/observers: request
success rate and request duration p99, per mesh), adapted to how meshgen names a version: by the
pod labels the blueprint declares for it, not by a workload name. Which series they read and how
they select a version is the mesh's (its registration's `gate_series`, e.g. meshgen.render.istio).

A step passes only on a measurement: fewer requests than `minRequests`, or a gate with no data, is
`inconclusive` (the step waits), never a pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from meshgen.canary.prometheus import Prometheus
from meshgen.render.base import GateSeries
from meshgen.render.registry import UnknownMesh, mesh

Outcome = Literal["pass", "fail", "inconclusive"]

_PLACEHOLDER = re.compile(r"\{(namespace|service|version|interval)\}")


@dataclass(frozen=True)
class Target:
    """The version a canary measures."""

    mesh: str  # a registered mesh (meshgen.render.registry)
    namespace: str
    service: str
    version: str  # the name in the blueprint's `versions`
    pod_labels: Mapping[str, str] = field(default_factory=dict)  # workload + version labels of its pods
    dataplane: str = "sidecar"  # who reports the requests: the mesh's `dataplane` of the settings in force

    @property
    def version_value(self) -> str:
        """What `{version}` means in queries: the pods' `version` label, as Istio reports it."""
        for key in ("version", "app.kubernetes.io/version"):
            if key in self.pod_labels:
                return self.pod_labels[key]
        return self.version


@dataclass(frozen=True)
class Gate:
    """One condition a step must meet: `min <= value <= max` (either bound may be absent)."""

    name: str
    query: str  # PromQL with the placeholders still in
    min: float | None = None
    max: float | None = None
    unit: str = ""

    @property
    def threshold(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{_fmt(self.min)}..{_fmt(self.max)}{self.unit}"
        if self.min is not None:
            return f">= {_fmt(self.min)}{self.unit}"
        return f"<= {_fmt(self.max or 0)}{self.unit}"

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None  # None: no data
    threshold: str
    ok: bool | None  # None: not decided (no data)
    query: str


@dataclass(frozen=True)
class Measurement:
    outcome: Outcome
    requests: float | None
    gates: tuple[GateResult, ...]
    reason: str  # one sentence for the job record, the API and the next step's PR

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if g.ok is False)


def promql_range(seconds: float) -> str:
    """A PromQL range for a window: whole seconds where exact, else milliseconds (`300s`, `1500ms`)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def fill(query: str, target: Target, interval: float) -> str:
    """A custom gate's query with {namespace} {service} {version} {interval} filled in.

    Only these four placeholders are replaced, so PromQL's own braces (`{app="x"}`) stay as written.
    The values are DNS labels and label values (validated on load), inserted as written.
    """
    values = {
        "namespace": target.namespace,
        "service": target.service,
        "version": target.version_value,
        "interval": promql_range(interval),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], query)


def _series(target: Target) -> GateSeries:
    try:
        found = mesh(target.mesh)
    except UnknownMesh as exc:
        raise ValueError(f"no default canary queries for mesh {target.mesh!r}: {exc}") from None
    return found.gate_series(target)


def _selector(series: GateSeries, *extra: str) -> str:
    return "{" + ", ".join([*series.matchers, *extra]) + "}"


def request_count_query(target: Target, interval: float) -> str:
    s = _series(target)
    return f"sum(increase({s.requests}{_selector(s)}[{promql_range(interval)}]))"


def success_rate_query(target: Target, interval: float) -> str:
    """% of requests that did not fail. `or vector(0)`: with every request failing, the failure
    series is all there is, and the rate of good requests must read 0, not "no data"."""
    s = _series(target)
    window = promql_range(interval)
    every = f"sum(rate({s.requests}{_selector(s)}[{window}]))"
    bad = f"(sum(rate({s.requests}{_selector(s, s.failed)}[{window}])) or vector(0))"
    return f"(1 - {bad} / {every}) * 100"


def latency_p99_query(target: Target, interval: float) -> str:
    s = _series(target)
    return (f"histogram_quantile(0.99, sum by (le) (rate({s.latency_ms_buckets}{_selector(s)}"
            f"[{promql_range(interval)}])))")


def default_gates(target: Target, interval: float, *, success_rate: float | None,
                  latency_p99_ms: float | None) -> list[Gate]:
    gates: list[Gate] = []
    if success_rate is not None:
        gates.append(Gate("successRate", success_rate_query(target, interval), min=success_rate, unit="%"))
    if latency_p99_ms is not None:
        gates.append(Gate("latencyP99", latency_p99_query(target, interval), max=latency_p99_ms, unit="ms"))
    return gates


def measure(prometheus: Prometheus, target: Target, gates: Sequence[Gate], *, min_requests: int,
            interval: float, at: float | None = None) -> Measurement:
    """Query every gate once over the window ending `at` (default: now) and give the verdict.

    Raises PrometheusError when Prometheus cannot answer: that is "wait", decided by the caller.
    """
    requests = prometheus.query(request_count_query(target, interval), at=at)
    window = promql_range(interval)
    if requests is None or requests < min_requests:
        seen = 0 if requests is None else math.floor(requests)
        return Measurement("inconclusive", requests, (), (
            f"{seen} request(s) to {target.version} in the last {window}, fewer than minRequests "
            f"{min_requests}: waiting for traffic"))
    results: list[GateResult] = []
    for gate in gates:
        query = fill(gate.query, target, interval)
        value = prometheus.query(query, at=at)
        ok = None if value is None else gate.holds(value)
        results.append(GateResult(gate.name, value, gate.threshold, ok, query))
    failed = [r for r in results if r.ok is False]
    if failed:
        what = ", ".join(f"{r.name} {_fmt(r.value or 0)} (needs {r.threshold})" for r in failed)
        return Measurement("fail", requests, tuple(results), f"{target.version} failed: {what}")
    missing = [r.name for r in results if r.ok is None]
    if missing:
        return Measurement("inconclusive", requests, tuple(results),
                           f"no data for {', '.join(missing)} over the last {window}: waiting")
    return Measurement("pass", requests, tuple(results),
                       f"{target.version} passed every gate over {math.floor(requests)} request(s)")


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
