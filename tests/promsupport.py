"""A real Prometheus (Debian's `prometheus` package) scraping a mesh-metrics exporter in the test process.

The exporter serves Istio's and Linkerd's request metrics with their standard labels (the names
and labels the default gate queries rely on), for versions whose traffic a test controls: requests
per second, the share that fails and the latency every request takes. Counters grow continuously
with time, as a proxy's do, so Prometheus's rate() and increase() see real traffic. Series for the
other reporter (Istio `reporter="source"`) and direction (Linkerd `outbound`) are served too: a
query that forgets to filter them counts every request twice, and the tests notice.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from helpers import free_port, wait_for
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

ISTIO_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000)
LINKERD_BUCKETS = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
                   10000, 20000, 30000, 40000, 50000)


@dataclass
class Traffic:
    """What one version of one service is receiving now."""

    rps: float = 0.0
    error_ratio: float = 0.0  # share of requests answered 5xx
    latency_ms: float = 20.0
    # integrated since the start (updated whenever the traffic changes and at every scrape)
    total: float = 0.0
    errors: float = 0.0
    since: float = 0.0


class MeshExporter(Collector):
    """Istio and Linkerd request metrics for (mesh, namespace, service, version) keys."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traffic: dict[tuple[str, str, str, str], Traffic] = {}
        self._labels: dict[tuple[str, str, str, str], dict[str, str]] = {}

    def set(self, mesh: str, namespace: str, service: str, version: str, *, rps: float,
            error_ratio: float = 0.0, latency_ms: float = 20.0, pod_labels: dict[str, str] | None = None) -> None:
        key = (mesh, namespace, service, version)
        with self._lock:
            now = time.time()
            traffic = self._traffic.get(key)
            if traffic is None:
                traffic = self._traffic[key] = Traffic(since=now)
            self._advance(traffic, now)
            traffic.rps, traffic.error_ratio, traffic.latency_ms = rps, error_ratio, latency_ms
            self._labels[key] = dict(pod_labels or {"app": service, "version": version})

    @staticmethod
    def _advance(traffic: Traffic, now: float) -> None:
        elapsed = max(0.0, now - traffic.since)
        traffic.total += traffic.rps * elapsed
        traffic.errors += traffic.rps * traffic.error_ratio * elapsed
        traffic.since = now

    def collect(self) -> Iterator[Any]:
        with self._lock:
            now = time.time()
            snapshot = []
            for key, traffic in sorted(self._traffic.items()):
                self._advance(traffic, now)
                snapshot.append((key, traffic.total, traffic.errors, traffic.latency_ms, self._labels[key]))
        yield from self._istio([s for s in snapshot if s[0][0] in ("istio", "istio-ambient")])
        yield from self._linkerd([s for s in snapshot if s[0][0] == "linkerd"])

    @staticmethod
    def _buckets(bounds: tuple[float, ...], latency: float, count: float) -> list[tuple[str, float]]:
        out = [(str(b), count if latency <= b else 0.0) for b in bounds]
        return [*out, ("+Inf", count)]

    def _istio(self, rows: list[Any]) -> Iterator[Any]:
        names = ["reporter", "destination_service_namespace", "destination_service_name", "destination_version",
                 "destination_workload", "destination_workload_namespace", "response_code"]
        requests = CounterMetricFamily("istio_requests", "Istio standard request count", labels=names)
        latency = HistogramMetricFamily("istio_request_duration_milliseconds", "Istio request duration",
                                        labels=names[:-1])
        for (mesh, ns, svc, version), total, errors, latency_ms, pod in rows:
            label = pod.get("version", version)
            # Ambient: no sidecars; the waypoint reports, under the version Service meshgen routes to
            # (a sidecar-ful client still reports as the source).
            reporters = ("waypoint", "source") if mesh == "istio-ambient" else ("destination", "source")
            service = f"{svc}-{version}" if mesh == "istio-ambient" else svc
            for reporter in reporters:
                base = [reporter, ns, service, label, f"{svc}-{version}", ns]
                requests.add_metric([*base, "200"], total - errors)
                requests.add_metric([*base, "503"], errors)
                latency.add_metric(base, self._buckets(ISTIO_BUCKETS, latency_ms, total),
                                   sum_value=total * latency_ms)
        yield requests
        yield latency

    def _linkerd(self, rows: list[Any]) -> Iterator[Any]:
        # One family per metric name: the label names are the union of every version's pod labels
        # (an empty value is an absent label to Prometheus).
        pod_names = sorted({name for *_, pod in rows for name in pod})
        names = ["direction", "namespace", "deployment", *pod_names]
        responses = CounterMetricFamily("response", "Linkerd proxy responses",
                                        labels=[*names, "classification", "status_code"])
        latency = HistogramMetricFamily("response_latency_ms", "Linkerd proxy response latency", labels=names)
        for (_, ns, svc, version), total, errors, latency_ms, pod in rows:
            for direction in ("inbound", "outbound"):
                base = [direction, ns, f"{svc}-{version}", *(pod.get(n, "") for n in pod_names)]
                responses.add_metric([*base, "success", "200"], total - errors)
                responses.add_metric([*base, "failure", "503"], errors)
                latency.add_metric(base, self._buckets(LINKERD_BUCKETS, latency_ms, total),
                                   sum_value=total * latency_ms)
        yield responses
        yield latency


@dataclass
class PrometheusServer:
    url: str
    exporter: MeshExporter
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise RuntimeError("Prometheus is not installed; scripts/test installs Debian's `prometheus` package "
                           "(apt-get install prometheus)")
    return found


def start_prometheus(workdir: Path) -> PrometheusServer:
    """The exporter on a free port, and Prometheus scraping it every second on another."""
    exporter = MeshExporter()
    registry = CollectorRegistry()
    registry.register(exporter)
    exporter_port = free_port()
    start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: mesh\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
    )
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    server = PrometheusServer(url, exporter, process)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}")
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200

    try:
        wait_for(ready, 30, "Prometheus to be ready", ignore=(httpx.HTTPError,))
    except BaseException:
        server.stop()
        raise
    return server
