"""Prometheus Operator monitors and Grafana dashboards, the same for every mesh.

A mesh gives only what differs: the PromQL of its golden signals (`GoldenSignals`) and the
port its proxy serves metrics on (the PodMonitor default). Everything else — selectors,
endpoint fields, interval syntax, the dashboard's panels and the ConfigMap Grafana's sidecar
picks up — is built here once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from meshgen.blueprint.base import Duration
from meshgen.blueprint.model import Monitor, ServiceBlueprint
from meshgen.names import dns_name
from meshgen.render.base import RenderContext, Resource, metadata, resource

MONITORING_API = "monitoring.coreos.com/v1"
NOTE_ANNOTATION = "meshgen.dev/note"
_PROM_DURATION = re.compile(r"(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)\Z")


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class GoldenSignals(Protocol):
    """A mesh's PromQL for the four dashboard panels."""

    @property
    def mesh(self) -> str:
        """The mesh's name: a dashboard tag."""

    def queries(self, service: str | None, namespace: str | None) -> dict[str, str]:
        """requests (per second), errors (share), latency (p99, ms) and mtls (share) for a service
        (or the whole mesh when service is None)."""


@dataclass(frozen=True)
class _Panel:
    key: str
    title: str
    unit: str
    legend: str


_PANELS = (
    _Panel("requests", "Request rate", "reqps", "requests/s"),
    _Panel("errors", "Error rate (5xx share)", "percentunit", "5xx share"),
    _Panel("latency", "Latency p99", "ms", "p99"),
    _Panel("mtls", "mTLS share", "percentunit", "mutual TLS share"),
)


def prometheus_duration(d: Duration) -> str:
    """A duration in Prometheus' syntax (units y w d h m s ms, no fractions)."""
    if _PROM_DURATION.match(str(d)):
        return str(d)
    ms = round(d.seconds * 1000)
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out or "0"


def endpoint(mon: Monitor, *, default_port: str | None, default_path: str | None = None) -> dict[str, Any]:
    """A ServiceMonitor endpoint / PodMonitor podMetricsEndpoint from a blueprint monitor."""
    out: dict[str, Any] = {}
    port = mon.port or default_port
    if port:
        out["port"] = port
    if mon.path or default_path:
        out["path"] = mon.path or default_path
    if mon.interval is not None:
        out["interval"] = prometheus_duration(mon.interval)
    return out


def service_monitors(svc: ServiceBlueprint, ctx: RenderContext, *, proxy_port: str | None = None) -> list[Resource]:
    """`observability.serviceMonitor` / `podMonitor` of a service.

    Both default to the first service port's name (by the convention that the Service's
    targetPort names the container port); a mesh whose proxy serves the workload's traffic
    metrics on its own port gives it as `proxy_port`, the PodMonitor's default.
    """
    obs = svc.observability
    if obs is None:
        return []
    ns, out = svc.namespace, []
    if obs.service_monitor is not None and "observability.serviceMonitor" not in ctx.skipped:
        # Assumption: the Kubernetes Service of this workload carries the label app=<service>
        # (the usual convention; meshgen does not render the Service).
        spec = {
            "selector": {"matchLabels": {"app": svc.service}},
            "namespaceSelector": {"matchNames": [ns]},
            "endpoints": [endpoint(obs.service_monitor, default_port=svc.ports[0].name)],
        }
        meta = metadata(svc.service, ns, ctx, service=svc.service,
                        annotations={NOTE_ANNOTATION: f"selects the Kubernetes Service labelled app={svc.service}"})
        out.append(resource(MONITORING_API, "ServiceMonitor", meta, spec=spec))
    if obs.pod_monitor is not None and "observability.podMonitor" not in ctx.skipped:
        spec = {
            "selector": {"matchLabels": dict(svc.workload_labels)},
            "namespaceSelector": {"matchNames": [ns]},
            "podMetricsEndpoints": [endpoint(obs.pod_monitor, default_port=proxy_port or svc.ports[0].name)],
        }
        out.append(resource(MONITORING_API, "PodMonitor", metadata(svc.service, ns, ctx, service=svc.service), spec=spec))
    return out


def service_dashboard(svc: ServiceBlueprint, ctx: RenderContext, signals: GoldenSignals) -> list[Resource]:
    """`observability.dashboard`: the golden-signals dashboard of a service."""
    obs = svc.observability
    if obs is None or not obs.dashboard or "observability.dashboard" in ctx.skipped:
        return []
    return [dashboard_configmap(svc.service, svc.namespace, svc.service, svc.namespace, ctx, signals)]


def dashboard_configmap(name: str, namespace: str, service: str | None, service_ns: str | None,
                        ctx: RenderContext, signals: GoldenSignals) -> Resource:
    """A ConfigMap `<name>-dashboard` labelled grafana_dashboard: "1" (Grafana's sidecar loads it)."""
    body = json.dumps(grafana_dashboard(service, service_ns, signals), indent=2, sort_keys=True) + "\n"
    return resource("v1", "ConfigMap",
                    metadata(dns_name(name, "dashboard"), namespace, ctx, service=service,
                             labels={"grafana_dashboard": "1"}),
                    data={f"{name}.json": body})


def grafana_dashboard(service: str | None, namespace: str | None, signals: GoldenSignals) -> dict[str, Any]:
    q = signals.queries(service, namespace)
    who = f"{service} ({namespace})" if service else f"{signals.mesh.capitalize()} mesh"
    uid_src = f"{namespace}/{service}" if service else f"{signals.mesh}-mesh"
    panels = [
        {
            "id": i + 1,
            "type": "timeseries",
            "title": p.title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": q[p.key], "legendFormat": p.legend}],
        }
        for i, p in enumerate(_PANELS)
    ]
    return {
        "title": f"{who}: golden signals",
        "uid": "meshgen-" + hashlib.sha256(uid_src.encode()).hexdigest()[:12],
        "tags": ["meshgen", signals.mesh],
        "editable": False,
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "templating": {
            "list": [{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"}]
        },
        "panels": panels,
    }
