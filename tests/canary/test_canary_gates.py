"""Canary gates measured on a real Prometheus scraping Istio's and Linkerd's metric families.

Each test sets the traffic a version receives, then polls the verdict until Prometheus has the
samples to give one (scraped every second): no test asserts a timing, only what the verdict is
once there is data, and that it is never `pass` before.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import free_port, wait_for
from promsupport import PrometheusServer

from meshgen.canary.gates import (
    Gate,
    Measurement,
    Target,
    default_gates,
    fill,
    measure,
    request_count_query,
)
from meshgen.canary.prometheus import Prometheus, PrometheusError

pytestmark = pytest.mark.slow

WINDOW = 4.0  # seconds of history each measurement looks at (four scrapes)


def _target(mesh: str, service: str, version: str = "v2", **labels: str) -> Target:
    pod = labels or {"app": service, "version": version}
    if mesh == "istio-ambient":
        return Target(mesh="istio", namespace="payments", service=service, version=version, pod_labels=pod,
                      dataplane="ambient")
    return Target(mesh=mesh, namespace="payments", service=service, version=version, pod_labels=pod)


def _settled(prom: PrometheusServer, target: Target, gates: list[Gate], *, min_requests: int,
             want: str) -> Measurement:
    """Measure until the verdict is `want`; every verdict seen before must be inconclusive."""
    client = Prometheus(prom.url)
    seen: list[Measurement] = []

    def check() -> Measurement | None:
        result = measure(client, target, gates, min_requests=min_requests, interval=WINDOW)
        seen.append(result)
        assert result.outcome in (want, "inconclusive"), result
        return result if result.outcome == want else None

    found = wait_for(check, 60, f"a {want} verdict", interval=0.5)
    assert isinstance(found, Measurement)
    return found


@pytest.mark.parametrize("mesh", ["istio", "istio-ambient", "linkerd"])
def test_a_healthy_version_passes_with_its_values(prom: PrometheusServer, mesh: str) -> None:
    target = _target(mesh, f"healthy-{mesh}")
    prom.exporter.set(mesh, "payments", target.service, "v1", rps=40, error_ratio=0.5, latency_ms=3000)
    prom.exporter.set(mesh, "payments", target.service, "v2", rps=40, error_ratio=0.0, latency_ms=40)
    gates = default_gates(target, WINDOW, success_rate=99, latency_p99_ms=500)
    result = _settled(prom, target, gates, min_requests=20, want="pass")
    values = {g.name: g.value for g in result.gates}
    # v1's failures and latency are not v2's: the selector isolates the version.
    assert values["successRate"] == pytest.approx(100)
    assert values["latencyP99"] is not None and values["latencyP99"] <= 50
    # Requests over a full window, counted once: the other reporter / direction is not added in
    # (counting both would read about twice the 40 rps x 4 s sent).
    client, sent = Prometheus(prom.url), 40 * WINDOW
    full = wait_for(lambda: (n := client.query(request_count_query(target, WINDOW))) and n > sent * 0.8 and n,
                    60, "a full window of requests", interval=0.5)
    assert isinstance(full, float) and full < sent * 1.4


@pytest.mark.parametrize("mesh", ["istio", "istio-ambient", "linkerd"])
def test_errors_fail_the_success_rate_gate_and_say_the_value(prom: PrometheusServer, mesh: str) -> None:
    target = _target(mesh, f"failing-{mesh}")
    prom.exporter.set(mesh, "payments", target.service, "v2", rps=50, error_ratio=0.2, latency_ms=40)
    gates = default_gates(target, WINDOW, success_rate=99, latency_p99_ms=500)
    result = _settled(prom, target, gates, min_requests=20, want="fail")
    (failed,) = result.failed
    assert failed.name == "successRate"
    assert failed.value == pytest.approx(80, abs=1)
    assert "successRate 80" in result.reason and ">= 99%" in result.reason


def test_every_request_failing_reads_zero_not_no_data(prom: PrometheusServer) -> None:
    target = _target("istio", "all-failing")
    prom.exporter.set("istio", "payments", target.service, "v2", rps=30, error_ratio=1.0, latency_ms=40)
    gates = default_gates(target, WINDOW, success_rate=99, latency_p99_ms=None)
    result = _settled(prom, target, gates, min_requests=10, want="fail")
    assert result.failed[0].value == pytest.approx(0)


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_slow_responses_fail_the_latency_gate(prom: PrometheusServer, mesh: str) -> None:
    target = _target(mesh, f"slow-{mesh}")
    prom.exporter.set(mesh, "payments", target.service, "v2", rps=50, error_ratio=0.0, latency_ms=2000)
    gates = default_gates(target, WINDOW, success_rate=99, latency_p99_ms=500)
    result = _settled(prom, target, gates, min_requests=20, want="fail")
    (failed,) = result.failed
    assert failed.name == "latencyP99" and failed.value is not None and failed.value > 1000


def test_too_little_traffic_is_inconclusive_never_a_pass(prom: PrometheusServer) -> None:
    target = _target("istio", "quiet")
    prom.exporter.set("istio", "payments", target.service, "v2", rps=1, error_ratio=0.0, latency_ms=10)
    client = Prometheus(prom.url)
    gates = default_gates(target, WINDOW, success_rate=99, latency_p99_ms=500)
    # Wait until Prometheus sees the quiet traffic at all, then check the verdict holds back.
    wait_for(lambda: client.query(request_count_query(target, WINDOW)), 60, "the first samples", interval=0.5)
    result = measure(client, target, gates, min_requests=1000, interval=WINDOW)
    assert result.outcome == "inconclusive"
    assert "fewer than minRequests 1000" in result.reason and result.gates == ()


def test_a_custom_gate_fills_placeholders_and_keeps_promql_braces(prom: PrometheusServer) -> None:
    target = _target("istio", "custom")
    prom.exporter.set("istio", "payments", target.service, "v2", rps=20, error_ratio=0.0, latency_ms=10)
    query = ('sum(rate(istio_requests_total{reporter="destination",destination_service_name="{service}",'
             'destination_service_namespace="{namespace}",destination_version="{version}"}[{interval}]))')
    assert fill(query, target, WINDOW) == (
        'sum(rate(istio_requests_total{reporter="destination",destination_service_name="custom",'
        'destination_service_namespace="payments",destination_version="v2"}[4s]))')
    low = Gate("rps", query, max=5)
    result = _settled(prom, target, [low], min_requests=10, want="fail")
    assert result.failed[0].value is not None and result.failed[0].value > 5
    assert result.failed[0].threshold == "<= 5"


def test_prometheus_down_is_an_error_that_names_the_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusError, match=rf"Prometheus at {url} is unreachable"):
        measure(Prometheus(url), _target("istio", "x"), [], min_requests=1, interval=WINDOW)


def test_a_rejected_query_says_why(prom: PrometheusServer) -> None:
    with pytest.raises(PrometheusError, match=r"rejected the query \(bad_data: .*\); query: sum\(\("):
        Prometheus(prom.url).query("sum((")


def test_a_query_selecting_many_series_is_refused(prom: PrometheusServer) -> None:
    prom.exporter.set("istio", "payments", "many", "v2", rps=5)
    client = Prometheus(prom.url)
    wait_for(lambda: client.query('count(istio_requests_total{destination_service_name="many"})'), 60,
             "samples of the service")
    with pytest.raises(PrometheusError, match=r"selects \d+ series; a gate query must reduce to one number"):
        client.query('istio_requests_total{destination_service_name="many"}')


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A server at prometheus.url that answers what Prometheus would not."""

    answers: ClassVar[dict[str, tuple[int, bytes]]] = {}
    seen_auth: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization", ""))
        query = self.path.split("query=", 1)[-1].split("&", 1)[0]
        status, body = self.answers.get(query, (200, b"{}"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def hostile() -> Iterator[str]:
    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the client stops reading an oversized answer on purpose: a broken pipe here is expected

    server = Quiet(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _answer(query: str, status: int, body: object) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    _Hostile.answers[query] = (status, raw)


def test_untrusted_answers_are_errors_not_crashes(hostile: str) -> None:
    token = "s3cr3t-token-value"
    client = Prometheus(hostile, token=token)
    cases = {
        "html": (200, b"<html>login</html>", "not JSON"),
        "nostatus": (200, {"data": {}}, "without a query API status"),
        "sample": (200, {"status": "success", "data": {"resultType": "vector", "result": [{"value": 5}]}},
                   "malformed sample"),
        "matrix": (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix result"),
        "word": (200, {"status": "success", "data": {"resultType": "scalar", "result": [1, "lots"]}},
                 "not a number"),
        "echo": (400, {"status": "error", "errorType": "bad_data", "error": f"token {token}\n\x1b[31m"},
                 "<redacted>"),
        "denied": (401, b"", "refused the query \\(401\\); set prometheus.tokenEnv"),
        "huge": (200, b"{" + b" " * (2 << 20) + b"}", "more than"),
    }
    for query, (status, body, message) in cases.items():
        _answer(query, status, body)
        with pytest.raises(PrometheusError, match=message) as caught:
            client.query(query)
        assert token not in str(caught.value) and "\x1b" not in str(caught.value)
    assert _Hostile.seen_auth[-1] == f"Bearer {token}"
    assert token not in repr(client)


def test_nan_and_empty_are_no_data(hostile: str) -> None:
    _answer("nan", 200, {"status": "success", "data": {"resultType": "vector",
                                                         "result": [{"metric": {}, "value": [1, "NaN"]}]}})
    _answer("empty", 200, {"status": "success", "data": {"resultType": "vector", "result": []}})
    client = Prometheus(hostile)
    assert client.query("nan") is None
    assert client.query("empty") is None


def test_no_default_queries_for_an_unknown_mesh(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no default canary queries for mesh 'consul'"):
        request_count_query(_target("consul", "x"), WINDOW)


def test_ambient_is_measured_from_the_waypoint_not_the_sidecar_reporter(prom: PrometheusServer) -> None:
    """Under ambient there is no `reporter="destination"`: the sidecar queries would wait forever."""
    ambient = _target("istio-ambient", "ambient-only")
    prom.exporter.set("istio-ambient", "payments", ambient.service, "v2", rps=30, error_ratio=0.0, latency_ms=20)
    client = Prometheus(prom.url)
    wait_for(lambda: client.query(request_count_query(ambient, WINDOW)), 60, "waypoint samples", interval=0.5)
    sidecar = _target("istio", "ambient-only")
    assert client.query(request_count_query(sidecar, WINDOW)) is None
