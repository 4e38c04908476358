"""The Istio renderer: blueprints in, Istio (and Prometheus Operator / Grafana) resources out.

What each blueprint field becomes is summarised in the spec table (Istio column); the
details live here. Everything is built from plain dicts in a fixed order, so the same
blueprint always renders byte-for-byte the same YAML.

Durations. Istio reads its CRDs into protobuf messages with the legacy
`github.com/golang/protobuf/jsonpb` unmarshaler (istio/istio pkg/util/protomarshal, and
the `*_json.gen.go` shims that istio/tools protoc-gen-golang-jsonshim generates for
istio/api use the same package). Its `google.protobuf.Duration` case calls Go's
`time.ParseDuration`, and the CRD schemas check durations with CEL `duration(self)`, which
takes the same syntax. So `500ms`, `10m`, `1h`, `1m30s` are accepted as written, and we
keep the user's readable form in every Istio field. Two places are not read by Istio:
Envoy's own JSON parser reads the rate-limit filter's `fill_interval` (canonical proto3
JSON: seconds with an `s` suffix only), and Prometheus Operator's interval pattern has no
fractional seconds; both get their own formatting below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from meshgen.blueprint.base import DNSLabel, Duration, Strict, Version, version_tuple
from meshgen.blueprint.model import (
    JWT,
    MTLS,
    AccessRule,
    Backend,
    CircuitBreaker,
    ConnectionPool,
    Egress,
    Ingress,
    IngressBlueprint,
    IngressTLS,
    LoadBalancing,
    Match,
    MeshBlueprint,
    NamespaceBlueprint,
    RateLimit,
    RetryPolicy,
    ServiceBlueprint,
    StringMatch,
    Telemetry,
)
from meshgen.names import dns_name, rendered_gateway_name
from meshgen.render.base import (
    Capability,
    GateSeries,
    MeasuredVersion,
    Mesh,
    RenderContext,
    Resource,
    metadata,
    resource,
    settings_section,
)
from meshgen.render.features import FEATURES
from meshgen.render.observability import (
    MONITORING_API,
    NOTE_ANNOTATION,
    dashboard_configmap,
    prometheus_duration,
    promql_string,
    service_dashboard,
    service_monitors,
)
from meshgen.render.observability import (
    endpoint as monitor_endpoint,
)
from meshgen.render.routing import EffectiveRoute, effective_routes, has_routing, ingress_routes

if TYPE_CHECKING:
    from meshgen.blueprint.config import Config


class IstioSettings(Strict):
    # meshgen.yaml `istio:`, a user contract (../shared/spec/blueprint-v1.md); a docstring would enter its JSON schema
    version: Version = "1.24"
    root_namespace: DNSLabel = Field(default="istio-system", alias="rootNamespace")
    ingress_selector: dict[str, str] = Field(default_factory=lambda: {"istio": "ingressgateway"}, alias="ingressSelector")
    # sidecar: VirtualService/DestinationRule, selector-bound policies. ambient: Gateway API HTTPRoutes on
    # the Service, L7 policies bound to the namespace's waypoint (README "Istio ambient").
    dataplane: Literal["sidecar", "ambient"] = "sidecar"
    waypoint: DNSLabel = "waypoint"  # ambient: the waypoint Gateway of each namespace (istioctl's default name)

    @cached_property
    def release(self) -> tuple[int, int]:
        return version_tuple(self.version)


def settings(config: Config) -> IstioSettings:
    """The `istio:` section of meshgen.yaml."""
    return settings_section(config, "istio", IstioSettings)

ENVOY_FILTER_API = "networking.istio.io/v1alpha3"

_MTLS_MODES = {"strict": "STRICT", "permissive": "PERMISSIVE", "disable": "DISABLE"}
_LB_SIMPLE = {"round-robin": "ROUND_ROBIN", "least-request": "LEAST_REQUEST", "random": "RANDOM"}
_EGRESS_PROTOCOLS = {
    "http": "HTTP",
    "https": "HTTPS",
    "tls": "TLS",
    "tcp": "TCP",
    "http2": "HTTP2",
    "grpc": "GRPC",
}

_CAPABILITIES: dict[str, Capability] = {
    "versions": Capability(
        "full", "DestinationRule subsets: name = version, labels = the version's pod labels"
    ),
    "routes.split": Capability("full", "VirtualService route destinations with weights"),
    "routes.split.matched": Capability("full", "weights on any VirtualService http route, matched or not"),
    "routes.to.matched": Capability("full", "each VirtualService http route has its own destinations"),
    "routes.to.service": Capability(
        "full", "destination.host = the service as written (a short name resolves in the service's namespace)"
    ),
    "routes.match.headers": Capability("full", "VirtualService match.headers (exact/prefix/regex)"),
    "routes.match.path": Capability("full", "VirtualService match.uri (exact/prefix/regex)"),
    "routes.match.method": Capability(
        "full", "match.method; several methods become one match entry per method (entries are ORed)"
    ),
    "routes.rewrite": Capability("full", "VirtualService rewrite.uri (replaces the matched prefix)"),
    "timeout": Capability("full", "VirtualService http[].timeout"),
    "retries": Capability(
        "full", "VirtualService http[].retries (attempts, retryOn); never retry = attempts: 0"
    ),
    "retries.never": Capability("full", "VirtualService http[].retries.attempts: 0 (Istio retries twice by default)"),
    "retries.perTryTimeout": Capability("full", "VirtualService retries.perTryTimeout"),
    "retries.budget": Capability("none", "Istio has no retry budget; only per-route attempts can be set"),
    "routes.fault.delay": Capability("full", "VirtualService fault.delay (percentage, fixedDelay)"),
    "routes.fault.abort": Capability("full", "VirtualService fault.abort (percentage, httpStatus)"),
    "loadBalancing": Capability("full", "DestinationRule trafficPolicy.loadBalancer.simple"),
    "loadBalancing.consistentHash": Capability(
        "full",
        "DestinationRule loadBalancer.consistentHash (httpHeaderName, httpCookie, useSourceIp, "
        "httpQueryParameterName); a cookie is hashed when present, Istio generates none without a ttl",
    ),
    "connectionPool": Capability("full", "DestinationRule trafficPolicy.connectionPool (tcp and http)"),
    "circuitBreaker.consecutive5xxErrors": Capability("full", "outlierDetection.consecutive5xxErrors"),
    "circuitBreaker.consecutiveGatewayErrors": Capability(
        "full", "outlierDetection.consecutiveGatewayErrors"
    ),
    "circuitBreaker.consecutiveLocalOriginFailures": Capability(
        "full", "outlierDetection.consecutiveLocalOriginFailures with splitExternalLocalOriginErrors: true"
    ),
    "circuitBreaker.interval": Capability("full", "outlierDetection.interval"),
    "circuitBreaker.baseEjectionTime": Capability("full", "outlierDetection.baseEjectionTime"),
    "circuitBreaker.maxEjectionPercent": Capability(
        "full", "outlierDetection.maxEjectionPercent (a whole number; fractions are rounded)"
    ),
    "circuitBreaker.minHealthPercent": Capability(
        "full", "outlierDetection.minHealthPercent (a whole number; fractions are rounded)"
    ),
    "mtls": Capability(
        "full", "PeerAuthentication selecting the workload, mtls.mode STRICT/PERMISSIVE/DISABLE"
    ),
    "mtls.ports": Capability(
        "full", "PeerAuthentication portLevelMtls, keyed by the workload port (a service port's targetPort)"
    ),
    "access": Capability(
        "full",
        "AuthorizationPolicy (ALLOW) with one rule per access rule; access: [] = ALLOW with no rules (deny all)",
    ),
    "access.methods": Capability("full", "AuthorizationPolicy rules[].to.operation.methods"),
    "access.paths": Capability("full", "AuthorizationPolicy rules[].to.operation.paths"),
    "access.jwtClaims": Capability(
        "full", "rules[].from.source.requestPrincipals ['*'] + when request.auth.claims[<claim>]"
    ),
    "jwt": Capability("full", "RequestAuthentication jwtRules"),
    "rateLimit": Capability(
        "full",
        "EnvoyFilter inserting envoy.filters.http.local_ratelimit on SIDECAR_INBOUND (enabled and enforced); "
        "EnvoyFilter is not a stable Istio API, review it on Istio upgrades",
    ),
    "ingress": Capability("full", "VirtualService hosts + gateways [<gateway>, mesh]"),
    "ingress.gateway.rendered": Capability(
        "full", "Gateway <service>-gateway in the service namespace, selecting the ingress gateway pods"
    ),
    "ingress.tls": Capability(
        "full",
        "Gateway server on 443 HTTPS (SIMPLE/MUTUAL, credentialName) plus an 80 -> 443 redirect; "
        "the credential secret must live in the ingress gateway's namespace",
    ),
    "edge.routes": Capability(
        "full", "VirtualService <name> with the hosts, bound to the gateway only (gateways: [<gateway>], no mesh); "
        "destinations by FQDN; no implicit default route (unmatched requests get 404)"),
    "edge.rewrite": Capability("full", "VirtualService rewrite.uri"),
    "edge.timeout": Capability("full", "VirtualService http[].timeout"),
    "edge.retries": Capability("full", "VirtualService http[].retries"),
    "edge.fault": Capability("full", "VirtualService http[].fault"),
    "edge.crossNamespace": Capability("full", "destination.host = <service>.<namespace>.svc.<clusterDomain>"),
    "edge.gateway.rendered": Capability(
        "full", "Gateway <name> in the Ingress namespace, selecting the ingress gateway pods"),
    "edge.tls": Capability("full", "Gateway server on 443 HTTPS (credentialName) plus an 80 -> 443 redirect"),
    "egress": Capability(
        "full", "ServiceEntry (MESH_EXTERNAL) per host, exported to the service's namespace only"
    ),
    "telemetry.tracing": Capability("full", "Telemetry tracing (randomSamplingPercentage, providers)"),
    "telemetry.accessLogs": Capability(
        "full", "Telemetry accessLogging (provider, default envoy; or disabled)"
    ),
    "telemetry.metrics": Capability("full", "Telemetry metrics (providers; disabled = ALL_METRICS override)"),
    "observability.serviceMonitor": Capability("full", "Prometheus Operator ServiceMonitor"),
    "observability.podMonitor": Capability("full", "Prometheus Operator PodMonitor"),
    "observability.dashboard": Capability(
        "full", 'Grafana dashboard ConfigMap (grafana_dashboard: "1") from Istio metrics'
    ),
    "namespace.mtls": Capability("full", "PeerAuthentication `default` in the namespace"),
    "namespace.mtls.ports": Capability(
        "none", "Istio's portLevelMtls needs a workload selector, so per-port modes cannot be namespace-wide"
    ),
    "namespace.deny-all": Capability("full", "AuthorizationPolicy `deny-all` with an empty spec"),
    "mesh.telemetry": Capability("full", "Telemetry `mesh-default` in the Istio root namespace"),
    "mesh.mtls": Capability("full", "PeerAuthentication `default` in the Istio root namespace"),
    "mesh.mtls.ports": Capability(
        "none", "Istio's portLevelMtls needs a workload selector, so per-port modes cannot be mesh-wide"
    ),
    "mesh.observability": Capability(
        "full",
        "ServiceMonitor for istiod and PodMonitor `envoy-stats` for the sidecars, in the root namespace",
    ),
}
assert set(_CAPABILITIES) == set(FEATURES), sorted(set(_CAPABILITIES) ^ set(FEATURES))


class IstioRenderer:
    """Renders blueprints for Istio: sidecar mode here, `istio.dataplane: ambient` in istio_ambient.py.
    Stateless; one instance can render many."""

    mesh: ClassVar[str] = "istio"

    # --- declarations ------------------------------------------------------------------------

    @classmethod
    def flavours(cls, config: Config) -> str:
        major, minor = settings(config).release
        return f"istio {major}.{minor}" + (" ambient" if settings(config).dataplane == "ambient" else "")

    @classmethod
    def capabilities(cls, config: Config) -> dict[str, Capability]:
        caps = _CAPABILITIES
        if settings(config).dataplane == "ambient":
            from meshgen.render import istio_ambient

            caps = {**caps, **istio_ambient.CAPABILITIES}
        return {key: caps[key] for key in FEATURES}

    # --- kind: Service -------------------------------------------------------------------------

    def render_service(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
        if settings(ctx.config).dataplane == "ambient":
            from meshgen.render.istio_ambient import AmbientServiceRender

            r: _ServiceRender = AmbientServiceRender(svc, ctx)
            ctx.notes.extend(r.waypoint_note())
        else:
            r = _ServiceRender(svc, ctx)
        out: list[Resource] = []
        out += r.gateway()
        out += r.routing()
        out += r.destination_rule()
        out += r.peer_authentication()
        out += r.request_authentication()
        out += r.authorization_policy()
        out += r.rate_limit()
        out += r.service_entries()
        out += r.telemetry()
        out += r.monitors()
        out += r.dashboard()
        return out

    # --- kind: Ingress -------------------------------------------------------------------------

    def render_ingress(self, ing: IngressBlueprint, ctx: RenderContext) -> list[Resource]:
        if settings(ctx.config).dataplane == "ambient":
            from meshgen.render.istio_ambient import AmbientIngressRender

            return AmbientIngressRender(ing, ctx).render()
        return _IngressRender(ing, ctx).render()

    # --- kind: Namespace -----------------------------------------------------------------------

    def render_namespace(self, ns: NamespaceBlueprint, ctx: RenderContext) -> list[Resource]:
        v = _Versions(ctx.config)
        if settings(ctx.config).dataplane == "ambient":
            from meshgen.render import istio_ambient

            return istio_ambient.render_namespace(ns, ctx, v)
        out: list[Resource] = []
        if ns.mtls is not None and "namespace.mtls" not in ctx.skipped:
            out.append(_default_peer_authentication(v, ns.namespace, ns.mtls, ctx))
        if ns.access == "deny-all" and "namespace.deny-all" not in ctx.skipped:
            # An ALLOW-by-default policy with no rules matches nothing: every request to every
            # workload in the namespace is denied unless another ALLOW policy matches it.
            out.append(
                resource(
                    v.security,
                    "AuthorizationPolicy",
                    metadata(
                        "deny-all",
                        ns.namespace,
                        ctx,
                        annotations={
                            NOTE_ANNOTATION: "empty spec: denies every request in the namespace that no "
                            "service's own access policy allows"
                        },
                    ),
                    spec={},
                )
            )
        return out

    # --- kind: Mesh ----------------------------------------------------------------------------

    def render_mesh(self, mesh: MeshBlueprint, ctx: RenderContext) -> list[Resource]:
        v = _Versions(ctx.config)
        root = settings(ctx.config).root_namespace
        out: list[Resource] = []
        if mesh.mtls is not None and "mesh.mtls" not in ctx.skipped:
            out.append(_default_peer_authentication(v, root, mesh.mtls, ctx))
        if mesh.telemetry is not None and "mesh.telemetry" not in ctx.skipped:
            spec = _telemetry_spec(mesh.telemetry, frozenset())
            if spec:
                out.append(resource(v.telemetry, "Telemetry", metadata("mesh-default", root, ctx), spec=spec))
        if mesh.observability is not None and "mesh.observability" not in ctx.skipped:
            obs = mesh.observability
            if obs.service_monitor is not None:
                sm = obs.service_monitor
                endpoint_ = monitor_endpoint(sm, default_port="http-monitoring")
                out.append(
                    resource(
                        MONITORING_API,
                        "ServiceMonitor",
                        metadata("istiod", root, ctx),
                        spec={
                            "selector": {"matchLabels": {"istio": "pilot"}},
                            "namespaceSelector": {"matchNames": [root]},
                            "endpoints": [endpoint_],
                        },
                    )
                )
            # Sidecar metrics (istio_requests_total, ...) are what every service dashboard reads,
            # so the proxies are scraped whenever mesh observability is on. A podMonitor entry
            # tunes it; without one it takes the serviceMonitor's interval.
            pm = obs.pod_monitor
            interval = pm.interval if pm is not None and pm.interval is not None else None
            if interval is None and obs.service_monitor is not None:
                interval = obs.service_monitor.interval
            endpoint = {
                "port": (pm.port if pm is not None and pm.port else "http-envoy-prom"),
                "path": (pm.path if pm is not None and pm.path else "/stats/prometheus"),
            }
            if interval is not None:
                endpoint["interval"] = prometheus_duration(interval)
            out.append(
                resource(
                    MONITORING_API,
                    "PodMonitor",
                    metadata("envoy-stats", root, ctx),
                    spec={
                        # Istio's sample: every pod that does not opt out; only pods with an
                        # `http-envoy-prom` port (the istio-proxy container) yield targets.
                        "selector": {
                            "matchExpressions": [
                                {"key": "istio-prometheus-ignore", "operator": "DoesNotExist"}
                            ]
                        },
                        "namespaceSelector": {"any": True},
                        "jobLabel": "envoy-stats",
                        "podMetricsEndpoints": [endpoint],
                    },
                )
            )
            if obs.dashboard:
                # In ambient mode the waypoints report L7 metrics (ztunnel only TCP ones).
                reporter = "waypoint" if settings(ctx.config).dataplane == "ambient" else "destination"
                out.append(dashboard_configmap("istio-mesh", root, None, None, ctx, IstioSignals(reporter)))
        return out


# --- helpers shared by the three kinds -------------------------------------------------------


class _Versions:
    """API versions for the configured Istio release (v1 APIs from 1.22 on)."""

    def __init__(self, config: Config) -> None:
        v1 = settings(config).release >= (1, 22)
        self.networking = "networking.istio.io/v1" if v1 else "networking.istio.io/v1beta1"
        self.security = "security.istio.io/v1" if v1 else "security.istio.io/v1beta1"
        self.telemetry = "telemetry.istio.io/v1" if v1 else "telemetry.istio.io/v1alpha1"


def istio_duration(d: Duration) -> str:
    """A duration for an Istio CRD field: the user's text (Go time.ParseDuration syntax)."""
    return str(d)


def proto_seconds(d: Duration) -> str:
    """Canonical proto3 JSON duration (seconds with an `s` suffix), for Envoy config."""
    return _number(d.seconds) + "s"


def _number(x: float) -> str:
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.3f}".rstrip("0").rstrip(".")


def _string_match(m: StringMatch) -> dict[str, str]:
    return {m.kind: m.value}


def _gateway(v: _Versions, name: str, hosts: list[str], tls: IngressTLS | None,
             meta: Callable[[str], dict[str, Any]], ctx: RenderContext) -> Resource:
    """A Gateway meshgen renders: HTTP on 80, or HTTPS on 443 with an 80 -> 443 redirect."""
    if tls is None:
        servers: list[dict[str, Any]] = [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}]
    else:
        servers = [
            {
                "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                "hosts": hosts,
                # The secret is read from the ingress gateway's namespace, not this one.
                "tls": {"mode": tls.mode.upper(), "credentialName": tls.credential_name},
            },
            {
                "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                "hosts": hosts,
                "tls": {"httpsRedirect": True},
            },
        ]
    spec = {"selector": dict(settings(ctx.config).ingress_selector), "servers": servers}
    return resource(v.networking, "Gateway", meta(name), spec=spec)


def _default_peer_authentication(v: _Versions, namespace: str, mtls: MTLS, ctx: RenderContext) -> Resource:
    """`default` without a selector: the namespace's mode, or the whole mesh's in the root namespace."""
    return resource(v.security, "PeerAuthentication", metadata("default", namespace, ctx),
                    spec={"mtls": {"mode": _MTLS_MODES[mtls.mode]}})


def _telemetry_spec(
    tel: Telemetry, skipped: frozenset[str], selector: Mapping[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if selector is not None:
        spec["selector"] = {"matchLabels": dict(selector)}
    if tel.tracing is not None and "telemetry.tracing" not in skipped:
        tracing: dict[str, Any] = {}
        if tel.tracing.provider:
            tracing["providers"] = [{"name": tel.tracing.provider}]
        if tel.tracing.sampling_percent is not None:
            tracing["randomSamplingPercentage"] = tel.tracing.sampling_percent
        if tracing:
            spec["tracing"] = [tracing]
    if tel.access_logs is not None and "telemetry.accessLogs" not in skipped:
        if tel.access_logs.enabled:
            spec["accessLogging"] = [{"providers": [{"name": tel.access_logs.provider or "envoy"}]}]
        else:
            spec["accessLogging"] = [{"disabled": True}]
    if tel.metrics is not None and "telemetry.metrics" not in skipped:
        metrics: dict[str, Any] = {}
        if tel.metrics.provider:
            metrics["providers"] = [{"name": tel.metrics.provider}]
        if not tel.metrics.enabled:
            metrics["overrides"] = [{"match": {"metric": "ALL_METRICS"}, "disabled": True}]
        if metrics:
            spec["metrics"] = [metrics]
    has_content = any(k in spec for k in ("tracing", "accessLogging", "metrics"))
    return spec if has_content else {}


@dataclass(frozen=True)
class IstioSignals:
    """Golden signals over Istio's standard metrics, as reported where the L7 proxy runs: the
    destination's sidecar (`reporter="destination"`) or, in ambient mode, the waypoint
    (`reporter="waypoint"`; ztunnel reports TCP metrics only)."""

    reporter: str = "destination"
    mesh: str = "istio"
    # Other Services the service's traffic is reported under: in ambient mode a version's requests
    # go to its own Service `<service>-<version>`, and the waypoint reports that name.
    aliases: tuple[str, ...] = ()

    def queries(self, service: str | None, namespace: str | None) -> dict[str, str]:
        sel = [f'reporter="{self.reporter}"']
        if service is not None and self.aliases:
            sel.append(f'destination_service_name=~"{"|".join((service, *self.aliases))}"')
        elif service is not None:
            sel.append(f'destination_service_name="{service}"')
        if namespace is not None:
            sel.append(f'destination_service_namespace="{namespace}"')
        base = ",".join(sel)
        total = f"sum(rate(istio_requests_total{{{base}}}[5m]))"
        errors = f'sum(rate(istio_requests_total{{{base},response_code=~"5.."}}[5m]))'
        mtls = f'sum(rate(istio_requests_total{{{base},connection_security_policy="mutual_tls"}}[5m]))'
        return {
            "requests": total,
            "errors": f"{errors} / {total}",
            "latency": f"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{base}}}[5m])) by (le))",
            "mtls": f"{mtls} / {total}",
        }


def golden_signal_queries(service: str | None, namespace: str | None) -> dict[str, str]:
    """PromQL for the four dashboard panels (sidecar mode)."""
    return IstioSignals().queries(service, namespace)


# --- kind: Service, piece by piece ----------------------------------------------------------


class _ServiceRender:
    def __init__(self, svc: ServiceBlueprint, ctx: RenderContext) -> None:
        self.svc = svc
        self.ctx = ctx
        self.skipped = ctx.skipped
        self.v = _Versions(ctx.config)
        self.ns = svc.namespace
        self.labels = svc.workload_labels
        self.signals = IstioSignals()

    def on(self, feature: str) -> bool:
        return feature not in self.skipped

    def meta(self, name: str, **kw: Any) -> dict[str, Any]:
        return metadata(name, self.ns, self.ctx, service=self.svc.service, **kw)

    def selector(self) -> dict[str, Any]:
        return {"matchLabels": dict(self.labels)}

    # --- ingress / gateway ----------------------------------------------------------------

    def _ingress(self) -> Ingress | None:
        ing = self.svc.ingress
        if ing is None or not self.on("ingress"):
            return None
        if ing.gateway is None:
            # Without the rendered gateway there is nothing to bind to; without TLS a gateway
            # would serve plain HTTP where the owner asked for HTTPS. Both fail closed.
            if not self.on("ingress.gateway.rendered"):
                return None
            if ing.tls is not None and not self.on("ingress.tls"):
                return None
        return ing

    def gateway_ref(self) -> str | None:
        ing = self._ingress()
        if ing is None:
            return None
        return ing.gateway or rendered_gateway_name(self.svc.service)

    def gateway(self) -> list[Resource]:
        ing = self._ingress()
        if ing is None or ing.gateway is not None:
            return []
        return [_gateway(self.v, rendered_gateway_name(self.svc.service), list(ing.hosts), ing.tls,
                         self.meta, self.ctx)]

    # --- VirtualService -------------------------------------------------------------------

    def routing(self) -> list[Resource]:
        """What carries the routes: the VirtualService (the ambient data plane overrides this)."""
        return self.virtual_service()

    def waypoint_note(self) -> list[str]:
        return []

    def needs_virtual_service(self) -> bool:
        svc = self.svc
        faults = any(r.fault is not None for r in svc.routes)
        return has_routing(svc) or self.gateway_ref() is not None or faults

    def virtual_service(self) -> list[Resource]:
        if not self.needs_virtual_service():
            return []
        http = [route for er in effective_routes(self.svc) if (route := self.http_route(er)) is not None]
        spec: dict[str, Any] = {"hosts": [self.svc.service]}
        gw = self.gateway_ref()
        if gw is not None:
            assert self.svc.ingress is not None
            spec["hosts"] += [h for h in self.svc.ingress.hosts if h not in spec["hosts"]]
            spec["gateways"] = [gw, "mesh"]
        spec["http"] = http
        return [resource(self.v.networking, "VirtualService", self.meta(self.svc.service), spec=spec)]

    def http_route(self, er: EffectiveRoute) -> dict[str, Any] | None:
        route: dict[str, Any] = {"name": er.name}
        if er.match is not None:
            matches = self.matches(er.match)
            if matches is None:
                return None  # a condition this mesh may not express: the route never matches
            route["match"] = matches
        route["route"] = self.destinations(er)
        if er.rewrite is not None and self.on("routes.rewrite"):
            route["rewrite"] = {"uri": _slash_safe_rewrite(route, er)}
        if er.timeout is not None and self.on("timeout"):
            route["timeout"] = istio_duration(er.timeout)
        if er.retries is not None and self.on("retries"):
            route["retries"] = self.retries(er)
        fault = self.fault(er)
        if fault:
            route["fault"] = fault
        return route

    def matches(self, m: Match) -> list[dict[str, Any]] | None:
        base: dict[str, Any] = {}
        if m.headers:
            if not self.on("routes.match.headers"):
                return None
            base["headers"] = {name: _string_match(sm) for name, sm in m.headers.items()}
        if m.path is not None:
            if not self.on("routes.match.path"):
                return None
            base["uri"] = _string_match(m.path)
        if m.method:
            if not self.on("routes.match.method"):
                return None
            # Fields within one match entry are ANDed and entries are ORed, so "GET or POST"
            # is one entry per method, each carrying the other conditions.
            return [{**base, "method": {"exact": method}} for method in m.method]
        return [base]

    def destinations(self, er: EffectiveRoute) -> list[dict[str, Any]]:
        backends: tuple[Backend, ...] = er.backends
        split_key = "routes.split.matched" if er.match is not None else "routes.split"
        if len(backends) > 1 and (not self.on("routes.split") or not self.on(split_key)):
            backends = ()
        if any(b.service is not None for b in backends) and not self.on("routes.to.service"):
            backends = ()
        if not backends:
            return [{"destination": {"host": self.svc.service}}]
        out = []
        for b in backends:
            dest: dict[str, Any] = {"host": b.service or self.svc.service}
            if b.version is not None and self.on("versions"):
                dest["subset"] = b.version
            if b.port is not None:
                dest["port"] = {"number": b.port}
            entry: dict[str, Any] = {"destination": dest}
            if len(backends) > 1:
                entry["weight"] = b.weight
            out.append(entry)
        return out

    def retries(self, er: EffectiveRoute) -> dict[str, Any]:
        policy: RetryPolicy | None = er.retries
        assert policy is not None
        if er.never_retry:
            return {"attempts": 0}
        out: dict[str, Any] = {"attempts": policy.attempts}
        if policy.per_try_timeout is not None and self.on("retries.perTryTimeout"):
            out["perTryTimeout"] = istio_duration(policy.per_try_timeout)
        if policy.on:
            out["retryOn"] = ",".join(str(c) for c in policy.on)
        # policy.budget: Istio has no retry budget (capability "none"); never rendered.
        return out

    def fault(self, er: EffectiveRoute) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if er.fault is None:
            return out
        if er.fault.delay is not None and self.on("routes.fault.delay"):
            out["delay"] = {
                "percentage": {"value": er.fault.delay.percent},
                "fixedDelay": istio_duration(er.fault.delay.duration),
            }
        if er.fault.abort is not None and self.on("routes.fault.abort"):
            out["abort"] = {
                "percentage": {"value": er.fault.abort.percent},
                "httpStatus": er.fault.abort.status,
            }
        return out

    # --- DestinationRule ------------------------------------------------------------------

    def destination_rule(self) -> list[Resource]:
        svc = self.svc
        spec: dict[str, Any] = {"host": svc.service}
        policy: dict[str, Any] = {}
        if svc.load_balancing is not None:
            lb = self.load_balancer(svc.load_balancing)
            if lb:
                policy["loadBalancer"] = lb
        if svc.connection_pool is not None and self.on("connectionPool"):
            pool = self.connection_pool(svc.connection_pool)
            if pool:
                policy["connectionPool"] = pool
        if svc.circuit_breaker is not None:
            outlier = self.outlier_detection(svc.circuit_breaker)
            if outlier:
                policy["outlierDetection"] = outlier
        if policy:
            spec["trafficPolicy"] = policy
        if svc.versions and self.on("versions"):
            spec["subsets"] = [
                {"name": name, "labels": dict(labels)} for name, labels in svc.versions.items()
            ]
        if len(spec) == 1:
            return []
        return [resource(self.v.networking, "DestinationRule", self.meta(svc.service), spec=spec)]

    def load_balancer(self, lb: LoadBalancing) -> dict[str, Any]:
        if lb.consistent_hash is None:
            return {"simple": _LB_SIMPLE[lb.algorithm]} if self.on("loadBalancing") else {}
        if not self.on("loadBalancing.consistentHash"):
            return {}
        ch = lb.consistent_hash
        if ch.header is not None:
            return {"consistentHash": {"httpHeaderName": ch.header}}
        if ch.cookie is not None:
            return {"consistentHash": {"httpCookie": {"name": ch.cookie}}}
        if ch.source_ip:
            return {"consistentHash": {"useSourceIp": True}}
        return {"consistentHash": {"httpQueryParameterName": ch.query_parameter}}

    def connection_pool(self, cp: ConnectionPool) -> dict[str, Any]:
        tcp: dict[str, Any] = {}
        if cp.max_connections is not None:
            tcp["maxConnections"] = cp.max_connections
        if cp.connect_timeout is not None:
            tcp["connectTimeout"] = istio_duration(cp.connect_timeout)
        http: dict[str, Any] = {}
        if cp.max_pending_requests is not None:
            http["http1MaxPendingRequests"] = cp.max_pending_requests
        if cp.max_requests is not None:
            http["http2MaxRequests"] = cp.max_requests
        if cp.max_requests_per_connection is not None:
            http["maxRequestsPerConnection"] = cp.max_requests_per_connection
        if cp.h2_upgrade is not None:
            http["h2UpgradePolicy"] = "UPGRADE" if cp.h2_upgrade else "DO_NOT_UPGRADE"
        out: dict[str, Any] = {}
        if tcp:
            out["tcp"] = tcp
        if http:
            out["http"] = http
        return out

    def outlier_detection(self, cb: CircuitBreaker) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def on(key: str) -> bool:
            return self.on(f"circuitBreaker.{key}")

        if cb.consecutive_5xx_errors is not None and on("consecutive5xxErrors"):
            out["consecutive5xxErrors"] = cb.consecutive_5xx_errors
        if cb.consecutive_gateway_errors is not None and on("consecutiveGatewayErrors"):
            out["consecutiveGatewayErrors"] = cb.consecutive_gateway_errors
        if cb.consecutive_local_origin_failures is not None and on("consecutiveLocalOriginFailures"):
            out["consecutiveLocalOriginFailures"] = cb.consecutive_local_origin_failures
            out["splitExternalLocalOriginErrors"] = True
        if cb.interval is not None and on("interval"):
            out["interval"] = istio_duration(cb.interval)
        if cb.base_ejection_time is not None and on("baseEjectionTime"):
            out["baseEjectionTime"] = istio_duration(cb.base_ejection_time)
        if cb.max_ejection_percent is not None and on("maxEjectionPercent"):
            out["maxEjectionPercent"] = round(cb.max_ejection_percent)
        if cb.min_health_percent is not None and on("minHealthPercent"):
            out["minHealthPercent"] = round(cb.min_health_percent)
        return out

    # --- security -------------------------------------------------------------------------

    def peer_authentication(self) -> list[Resource]:
        mtls = self.svc.mtls
        if mtls is None or not self.on("mtls"):
            return []
        spec: dict[str, Any] = {"selector": self.selector(), "mtls": {"mode": _MTLS_MODES[mtls.mode]}}
        if mtls.ports and self.on("mtls.ports"):
            # portLevelMtls is keyed by the port the workload listens on. A blueprint port that
            # is a service port with a targetPort is translated; any other number is taken as is.
            target = {p.port: p.target_port for p in self.svc.ports if p.target_port is not None}
            spec["portLevelMtls"] = {
                str(target.get(port, port)): {"mode": _MTLS_MODES[mode]} for port, mode in mtls.ports.items()
            }
        return [resource(self.v.security, "PeerAuthentication", self.meta(self.svc.service), spec=spec)]

    def request_authentication(self) -> list[Resource]:
        jwt: JWT | None = self.svc.jwt
        if jwt is None or not self.on("jwt"):
            return []
        rule: dict[str, Any] = {"issuer": jwt.issuer}
        if jwt.jwks_uri is not None:
            rule["jwksUri"] = jwt.jwks_uri
        if jwt.audiences:
            rule["audiences"] = list(jwt.audiences)
        if jwt.forward_original_token is not None:
            rule["forwardOriginalToken"] = jwt.forward_original_token
        spec = {"selector": self.selector(), "jwtRules": [rule]}
        return [resource(self.v.security, "RequestAuthentication", self.meta(self.svc.service), spec=spec)]

    def principal(self, written: str) -> str:
        td = self.ctx.config.trust_domain
        parts = written.split("/")
        if len(parts) == 1:
            return f"{td}/ns/{self.ns}/sa/{written}"
        if len(parts) == 2:
            return f"{td}/ns/{parts[0]}/sa/{parts[1]}"
        return written

    def access_rule(self, rule: AccessRule) -> dict[str, Any] | None:
        """One Istio rule, or None when a condition is skipped (the rule then allows nothing,
        rather than allowing more than the owner wrote)."""
        if (
            (rule.methods and not self.on("access.methods"))
            or (rule.paths and not self.on("access.paths"))
            or (rule.jwt_claims and not self.on("access.jwtClaims"))
        ):
            return None
        out: dict[str, Any] = {}
        source: dict[str, Any] = {}
        if rule.from_:
            source["principals"] = [self.principal(p) for p in rule.from_]
        if rule.jwt_claims:
            source["requestPrincipals"] = ["*"]
        if source:
            out["from"] = [{"source": source}]
        operation: dict[str, Any] = {}
        if rule.methods:
            operation["methods"] = list(rule.methods)
        if rule.paths:
            operation["paths"] = list(rule.paths)
        if operation:
            out["to"] = [{"operation": operation}]
        if rule.jwt_claims:
            out["when"] = [
                {"key": f"request.auth.claims[{claim}]", "values": list(values)}
                for claim, values in rule.jwt_claims.items()
            ]
        return out

    def authorization_policy(self) -> list[Resource]:
        access = self.svc.access
        if access is None or not self.on("access"):
            return []
        spec: dict[str, Any] = {"selector": self.selector(), "action": "ALLOW"}
        rules = [r for rule in access if (r := self.access_rule(rule)) is not None]
        annotations = None
        if rules:
            spec["rules"] = rules
        else:
            # An ALLOW policy without rules matches no request; since an ALLOW policy now selects
            # the workload, every request that matches no other ALLOW policy is denied.
            annotations = {
                NOTE_ANNOTATION: "access: [] - an ALLOW policy with no rules: every request to this workload is denied"
            }
        meta = self.meta(self.svc.service, annotations=annotations)
        return [resource(self.v.security, "AuthorizationPolicy", meta, spec=spec)]

    # --- rate limit -----------------------------------------------------------------------

    def rate_limit(self) -> list[Resource]:
        rl: RateLimit | None = self.svc.rate_limit
        if rl is None or not self.on("rateLimit"):
            return []
        default_all = {"numerator": 100, "denominator": "HUNDRED"}
        limiter = {
            "stat_prefix": "http_local_rate_limiter",
            "token_bucket": {
                "max_tokens": rl.requests,
                "tokens_per_fill": rl.requests,
                "fill_interval": proto_seconds(rl.per),
            },
            # Both are needed: a filter that is only enabled counts requests but never rejects.
            "filter_enabled": {"runtime_key": "local_rate_limit_enabled", "default_value": dict(default_all)},
            "filter_enforced": {
                "runtime_key": "local_rate_limit_enforced",
                "default_value": dict(default_all),
            },
            "response_headers_to_add": [
                {
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    "header": {"key": "x-local-rate-limit", "value": "true"},
                }
            ],
        }
        spec = {
            "workloadSelector": {"labels": dict(self.labels)},
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": "SIDECAR_INBOUND",
                        "listener": {
                            "filterChain": {
                                "filter": {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "subFilter": {"name": "envoy.filters.http.router"},
                                }
                            }
                        },
                    },
                    "patch": {
                        "operation": "INSERT_BEFORE",
                        "value": {
                            "name": "envoy.filters.http.local_ratelimit",
                            "typed_config": {
                                "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                                "type_url": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                                "value": limiter,
                            },
                        },
                    },
                }
            ],
        }
        name = dns_name(self.svc.service, "ratelimit")
        return [resource(ENVOY_FILTER_API, "EnvoyFilter", self.meta(name), spec=spec)]

    # --- egress ---------------------------------------------------------------------------

    def service_entries(self) -> list[Resource]:
        if not self.svc.egress or not self.on("egress"):
            return []
        # One ServiceEntry per host: two entries for one host (e.g. 80 and 443) share it, since
        # two ServiceEntries for the same host would collide in name and in Istio.
        by_host: dict[str, list[Egress]] = {}
        for e in self.svc.egress:
            by_host.setdefault(e.host, []).append(e)
        out = []
        for host, entries in by_host.items():
            ports: list[dict[str, Any]] = []
            seen: set[int] = set()
            for e in entries:
                if e.port in seen:
                    continue
                seen.add(e.port)
                ports.append(
                    {
                        "number": e.port,
                        "name": f"{e.protocol}-{e.port}",
                        "protocol": _EGRESS_PROTOCOLS[e.protocol],
                    }
                )
            wildcard = host.startswith("*.")
            spec = {
                "hosts": [host],
                "ports": ports,
                "location": "MESH_EXTERNAL",
                # A wildcard host has no single address to resolve; Istio requires NONE for it.
                "resolution": "NONE" if wildcard else "DNS",
                "exportTo": ["."],
            }
            label = ("wildcard-" + host[2:]) if wildcard else host
            name = dns_name(self.svc.service, "egress", label.replace(".", "-"))
            out.append(resource(self.v.networking, "ServiceEntry", self.meta(name), spec=spec))
        return out

    # --- telemetry and observability ------------------------------------------------------

    def telemetry(self) -> list[Resource]:
        if self.svc.telemetry is None:
            return []
        spec = _telemetry_spec(self.svc.telemetry, self.skipped, selector=self.labels)
        if not spec:
            return []
        return [resource(self.v.telemetry, "Telemetry", self.meta(self.svc.service), spec=spec)]

    def monitors(self) -> list[Resource]:
        return service_monitors(self.svc, self.ctx)

    def dashboard(self) -> list[Resource]:
        return service_dashboard(self.svc, self.ctx, self.signals)


def _slash_safe_rewrite(route: dict[str, Any], er: EffectiveRoute) -> str:
    """rewrite.uri for a route, keeping the path's slashes as "replace the matched prefix" means.

    Envoy replaces the prefix string literally: prefix `/v2` with rewrite `/` turns `/v2/users`
    into `//users`, and `/api/` with `/internal` turns `/api/x` into `/internalx`. Gateway API
    (Linkerd, ambient) replaces whole path segments. So a prefix without its slash, rewritten to a
    path ending in one, matches as `exact: /v2` or `prefix: /v2/` (the segments Gateway API means);
    a prefix ending in a slash keeps it in the rewrite."""
    rewrite = er.rewrite or ""
    path = er.match.path if er.match is not None else None
    if path is None or path.kind != "prefix" or path.value == "/":
        return rewrite
    if path.value.endswith("/"):
        return rewrite if rewrite.endswith("/") else rewrite + "/"
    if rewrite.endswith("/") and "match" in route:
        route["match"] = [{**m, "uri": {kind: value}} for m in route["match"]
                          for kind, value in (("exact", path.value), ("prefix", path.value + "/"))]
    return rewrite


# --- kind: Ingress ------------------------------------------------------------------------------


class _IngressRender(_ServiceRender):
    """A VirtualService bound to the gateway only, built with the route pieces of a service's.

    Only `destinations` differs: every destination is a service, named by its FQDN so that a
    service in another namespace resolves the same from the gateway as from anywhere.
    """

    def __init__(self, ing: IngressBlueprint, ctx: RenderContext) -> None:
        self.ing = ing
        self.ctx = ctx
        self.skipped = ctx.skipped
        self.v = _Versions(ctx.config)
        self.ns = ing.namespace

    def meta(self, name: str, **kw: Any) -> dict[str, Any]:
        return metadata(name, self.ns, self.ctx, service=self.ing.name, **kw)

    def render(self) -> list[Resource]:
        ing = self.ing
        out: list[Resource] = []
        if ing.gateway is None:
            # Nothing to bind to without the rendered gateway, and a gateway without the TLS the
            # owner asked for would serve plain HTTP: both fail closed.
            if not self.on("edge.gateway.rendered") or (ing.tls is not None and not self.on("edge.tls")):
                return []
            out.append(_gateway(self.v, ing.name, list(ing.hosts), ing.tls, self.meta, self.ctx))
        http = [route for er in ingress_routes(ing) if (route := self.http_route(er)) is not None]
        spec = {"hosts": list(ing.hosts), "gateways": [ing.gateway or ing.name], "http": http}
        out.append(resource(self.v.networking, "VirtualService", self.meta(ing.name), spec=spec))
        return out

    def on(self, feature: str) -> bool:
        edge = _EDGE_FEATURES.get(feature)
        return feature not in self.skipped and (edge is None or edge not in self.skipped)

    def host(self, service: str) -> str:
        name, _, rest = service.partition(".")
        ns = rest.split(".")[0] if rest else self.ns
        return f"{name}.{ns}.svc.{self.ctx.config.cluster_domain}"

    def destinations(self, er: EffectiveRoute) -> list[dict[str, Any]]:
        out = []
        for b in er.backends:
            assert b.service is not None  # IngressRoute checks every destination names a service
            dest: dict[str, Any] = {"host": self.host(b.service)}
            if b.version is not None:
                dest["subset"] = b.version
            if b.port is not None:
                dest["port"] = {"number": b.port}
            entry: dict[str, Any] = {"destination": dest}
            if len(er.backends) > 1:
                entry["weight"] = b.weight
            out.append(entry)
        return out


# The service-route feature a shared route piece checks, and the kind: Ingress feature it stands for.
_EDGE_FEATURES = {"routes.rewrite": "edge.rewrite", "timeout": "edge.timeout", "retries": "edge.retries",
                  "routes.fault.delay": "edge.fault", "routes.fault.abort": "edge.fault"}


# --- the mesh's registration -------------------------------------------------------------------


def _gate_series(target: MeasuredVersion) -> GateSeries:
    """Istio's standard metrics (https://istio.io/latest/docs/reference/config/metrics/):
    istio_requests_total and istio_request_duration_milliseconds_bucket as the server side reports them
    (`reporter="destination"`, so a request is counted once), selected by destination_service_namespace,
    destination_service_name and destination_version. Istio fills destination_version from the pod's
    `version` label (or app.kubernetes.io/version), hence MeasuredVersion.version_value. Under
    `dataplane: ambient` no sidecar reports: the waypoint does (`reporter="waypoint"`), and a version's
    traffic is addressed to its version Service `<service>-<version>` (ambient routing), so the service
    name matches either."""
    if target.dataplane == "ambient":
        reporter = 'reporter="waypoint"'
        name = f"destination_service_name=~{promql_string(f'{target.service}|{target.service}-{target.version}')}"
    else:
        reporter = 'reporter="destination"'
        name = f"destination_service_name={promql_string(target.service)}"
    return GateSeries(
        requests="istio_requests_total",
        latency_ms_buckets="istio_request_duration_milliseconds_bucket",
        failed='response_code=~"5.."',
        matchers=(reporter, f"destination_service_namespace={promql_string(target.namespace)}", name,
                  f"destination_version={promql_string(target.version_value)}"),
    )


MESH = Mesh(
    name="istio",
    settings=IstioSettings,
    renderer=IstioRenderer,
    example_flavours=({"version": "1.24"}, {"version": "1.24", "dataplane": "ambient"}),
    system_namespace=lambda config: settings(config).root_namespace,
    gate_series=_gate_series,
    dataplane=lambda config: settings(config).dataplane,
)
