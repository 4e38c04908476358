"""Canary gates: what each mesh's metrics say about the version being rolled out, and the verdict.

The default queries follow Flagger's built-in checks (fluxcd/flagger pkg/metrics/observers: request
success rate and request duration p99, per mesh), adapted to how meshgen names a version: by the
pod labels the blueprint declares for it, not by a workload name.

Istio (standard metrics, https://istio.io/latest/docs/reference/config/metrics/):
  istio_requests_total and istio_request_duration_milliseconds_bucket, as reported by the server
  side (`reporter="destination"`, so a request is counted once), selected by
  `destination_service_namespace`, `destination_service_name` and `destination_version`. Istio
  fills `destination_version` from the pod's `version` label (or `app.kubernetes.io/version`), so
  `{version}` is the value of that label in the blueprint's `versions` entry, else the version name.
  Under `istio.dataplane: ambient` no sidecar reports: the waypoint does (`reporter="waypoint"`), and
  the version's traffic is addressed to its version Service `<service>-<version>` (meshgen's ambient
  routing), so the service name matches either.
Linkerd (proxy metrics, scraped by linkerd-viz's Prometheus, which copies every pod label onto the
  series with `.`/`/` turned into `_` and the `linkerd.io/` prefix dropped):
  response_total and response_latency_ms_bucket with `direction="inbound"`, selected by `namespace`
  and the version's pod labels (workload labels + version labels); a failure is
  `classification="failure"` (5xx and gRPC errors).

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

Outcome = Literal["pass", "fail", "inconclusive"]

_PLACEHOLDER = re.compile(r"\{(namespace|service|version|interval)\}")
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class Target:
    """The version a canary measures."""

    mesh: str  # "istio" | "linkerd"
    namespace: str
    service: str
    version: str  # the name in the blueprint's `versions`
    pod_labels: Mapping[str, str] = field(default_factory=dict)  # workload + version labels of its pods
    dataplane: str = "sidecar"  # Istio only: "sidecar" | "ambient" (who reports the requests)

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


def _quote(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


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


def _selector(target: Target, *extra: str) -> str:
    if target.mesh == "istio" and target.dataplane == "ambient":
        version_service = f"{target.service}-{target.version}"
        parts = [
            'reporter="waypoint"',
            f"destination_service_namespace={_quote(target.namespace)}",
            f"destination_service_name=~{_quote(f'{target.service}|{version_service}')}",
            f"destination_version={_quote(target.version_value)}",
        ]
    elif target.mesh == "istio":
        parts = [
            'reporter="destination"',
            f"destination_service_namespace={_quote(target.namespace)}",
            f"destination_service_name={_quote(target.service)}",
            f"destination_version={_quote(target.version_value)}",
        ]
    elif target.mesh == "linkerd":
        parts = ['direction="inbound"', f"namespace={_quote(target.namespace)}"]
        for key in sorted(target.pod_labels):
            name = _LABEL_NAME.sub("_", key.removeprefix("linkerd.io/"))
            parts.append(f"{name}={_quote(target.pod_labels[key])}")
    else:
        raise ValueError(f"no default canary queries for mesh {target.mesh!r}")
    return "{" + ", ".join([*parts, *extra]) + "}"


def _families(mesh: str) -> tuple[str, str, str]:
    """(request counter, latency histogram buckets in ms, matcher of a failed request)."""
    if mesh == "istio":
        return "istio_requests_total", "istio_request_duration_milliseconds_bucket", 'response_code=~"5.."'
    return "response_total", "response_latency_ms_bucket", 'classification="failure"'


def request_count_query(target: Target, interval: float) -> str:
    counter, _, _ = _families(target.mesh)
    return f"sum(increase({counter}{_selector(target)}[{promql_range(interval)}]))"


def success_rate_query(target: Target, interval: float) -> str:
    """% of requests that did not fail. `or vector(0)`: with every request failing, the failure
    series is all there is, and the rate of good requests must read 0, not "no data"."""
    counter, _, failed = _families(target.mesh)
    window = promql_range(interval)
    every = f"sum(rate({counter}{_selector(target)}[{window}]))"
    bad = f"(sum(rate({counter}{_selector(target, failed)}[{window}])) or vector(0))"
    return f"(1 - {bad} / {every}) * 100"


def latency_p99_query(target: Target, interval: float) -> str:
    _, buckets, _ = _families(target.mesh)
    return (f"histogram_quantile(0.99, sum by (le) (rate({buckets}{_selector(target)}"
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
