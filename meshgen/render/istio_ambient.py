"""Istio's ambient data plane (meshgen.yaml `istio.dataplane: ambient`): what differs from sidecars.

In ambient mode there is no sidecar. ztunnel (one per node) carries every connection over mTLS
and enforces L4 policy; HTTP features run in a *waypoint*, an Envoy deployment per namespace
(a Gateway of class istio-waypoint) that a Service is bound to with the label
`istio.io/use-waypoint: <waypoint>`. Istio's ambient documentation says how each API applies:

* Routing is Gateway API: HTTPRoutes with the Service as parentRef (GAMMA), served by the
  waypoint. Istio's classic VirtualService/DestinationRule-subset routing must not be mixed with
  it, so versions are Services `<service>-<version>` (as for Linkerd) and the route table of
  render/gatewayapi.py keeps first-match-wins under Gateway API's most-specific-match order.
  Per-rule timeouts are `timeouts.request`; HTTPRoute `retry` is experimental-channel in the
  Gateway API release meshgen validates against, and Gateway API has no fault injection.
* L7 policies (AuthorizationPolicy with methods/paths/claims, RequestAuthentication, Telemetry)
  are *attached* to the waypoint with `targetRefs` naming the Service. ztunnel cannot evaluate
  L7 attributes (a selector-bound policy with them fails closed as DENY) and, behind a waypoint,
  sees the waypoint's identity instead of the caller's. So a service's access rules go to
  ztunnel (workload selector) only when the service needs no waypoint at all and every rule
  names only callers; otherwise the whole policy is attached to the waypoint.
* DestinationRule traffic policy (load balancing, connection pool, outlier detection) is applied
  by the waypoint, per destination host: the Service and each `<service>-<version>` Service.
* PeerAuthentication is enforced by ztunnel; DISABLE is ignored (ambient pods always use mTLS).

meshgen renders the waypoint Gateway from a `kind: Namespace` blueprint and cannot label
Services it does not own: a service that needs the waypoint gets a pull-request note saying
which label to add (README, "Istio ambient").
"""

from __future__ import annotations

from typing import Any

from meshgen.blueprint.base import format_duration
from meshgen.blueprint.model import NamespaceBlueprint, ServiceBlueprint
from meshgen.render import istio as sidecar
from meshgen.render.base import Capability, RenderContext, Resource, metadata, resource
from meshgen.render.gatewayapi import (
    GATEWAY_GROUP,
    Atom,
    service_http_routes,
    url_rewrite,
    version_service,
    version_services,
)
from meshgen.render.observability import NOTE_ANNOTATION
from meshgen.render.routing import EffectiveRoute, effective_routes

WAYPOINT_CLASS = "istio-waypoint"
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
INGRESS_USE_WAYPOINT_LABEL = "istio.io/ingress-use-waypoint"
ROUTE_API = f"{GATEWAY_GROUP}/v1"

_PREC = (" Gateway API picks the most specific match, so meshgen adds the overlaps of earlier routes as extra "
         "matches to keep first-match-wins (the meshgen.dev/precedence annotation says where it cannot).")
_RETRY = ("HTTPRoute `retry` is experimental-channel in the Gateway API release meshgen validates against "
          "(standard from v1.7), and a VirtualService must not be mixed with HTTPRoutes on a waypoint; the waypoint "
          "applies Istio's mesh-wide default retry policy (meshConfig.defaultHttpRetryPolicy)")
_DR = "DestinationRule trafficPolicy for <service> and each <service>-<version> Service, applied by the waypoint"
_ATTACHED = "attached to the waypoint (targetRefs: the Service)"
_NO_DISABLE = "ztunnel always uses mTLS between ambient pods, so disable is ignored (rendered, without effect)"

# Only what differs from the sidecar table (istio._CAPABILITIES).
CAPABILITIES: dict[str, Capability] = {
    "versions": Capability(
        "full", "one Service <service>-<version> per version (workload + version labels, the service's ports): "
        "HTTPRoute backends are Services, DestinationRule subsets are not used"),
    "routes.split": Capability("full", "HTTPRoute (parentRef: the Service, served by the waypoint) backendRefs weights"),
    "routes.split.matched": Capability("full", "HTTPRoute rule with weighted backendRefs"),
    "routes.to.matched": Capability("full", "each HTTPRoute rule has its own backendRefs"),
    "routes.to.service": Capability("full", "HTTPRoute backendRef to the other Service"),
    "routes.match.headers": Capability("full", "HTTPRoute header matches (prefix → RegularExpression)." + _PREC),
    "routes.match.path": Capability("full", "HTTPRoute path match (PathPrefix matches whole path elements)." + _PREC),
    "routes.match.method": Capability("full", "HTTPRoute method match." + _PREC),
    "routes.rewrite": Capability(
        "full", "HTTPRoute URLRewrite filter (ReplacePrefixMatch for a prefix, ReplaceFullPath for an exact path); "
        "a regex path cannot be rewritten"),
    "timeout": Capability("full", "HTTPRoute rules[].timeouts.request"),
    "retries": Capability("none", _RETRY),
    "retries.never": Capability("none", _RETRY + ", which cannot be turned off per route"),
    "retries.perTryTimeout": Capability("none", _RETRY),
    "routes.fault.delay": Capability("none", "Gateway API has no fault injection (VirtualService fault needs the sidecar data plane)"),
    "routes.fault.abort": Capability("none", "Gateway API has no fault injection (VirtualService fault needs the sidecar data plane)"),
    "loadBalancing": Capability("full", _DR + " (loadBalancer.simple)"),
    "loadBalancing.consistentHash": Capability("full", _DR + " (loadBalancer.consistentHash)"),
    "connectionPool": Capability("full", _DR + " (connectionPool)"),
    "circuitBreaker.consecutive5xxErrors": Capability("full", _DR + " (outlierDetection)"),
    "circuitBreaker.consecutiveGatewayErrors": Capability("full", _DR + " (outlierDetection)"),
    "circuitBreaker.consecutiveLocalOriginFailures": Capability("full", _DR + " (outlierDetection)"),
    "circuitBreaker.interval": Capability("full", _DR + " (outlierDetection)"),
    "circuitBreaker.baseEjectionTime": Capability("full", _DR + " (outlierDetection)"),
    "circuitBreaker.maxEjectionPercent": Capability("full", _DR + " (outlierDetection, a whole number)"),
    "circuitBreaker.minHealthPercent": Capability("full", _DR + " (outlierDetection, a whole number)"),
    "mtls": Capability("partial", "PeerAuthentication selecting the workload, enforced by ztunnel: strict refuses "
                       "plaintext, permissive accepts it; " + _NO_DISABLE),
    "mtls.ports": Capability("partial", "PeerAuthentication portLevelMtls, enforced by ztunnel; " + _NO_DISABLE),
    "access": Capability(
        "full", "AuthorizationPolicy (ALLOW): enforced by ztunnel (workload selector) when the service needs no "
        "waypoint and every rule names only callers; otherwise " + _ATTACHED + ", which sees the caller's identity "
        "(behind a waypoint ztunnel sees the waypoint's); access: [] = ALLOW with no rules"),
    "access.methods": Capability("full", "AuthorizationPolicy to.operation.methods, " + _ATTACHED),
    "access.paths": Capability("full", "AuthorizationPolicy to.operation.paths, " + _ATTACHED),
    "access.jwtClaims": Capability("full", "requestPrincipals + when request.auth.claims[...], " + _ATTACHED),
    "jwt": Capability("full", "RequestAuthentication jwtRules, " + _ATTACHED),
    "rateLimit": Capability(
        "none", "the per-pod local rate limit is an EnvoyFilter on the sidecar; there is no sidecar in ambient mode, "
        "and an EnvoyFilter on the waypoint (alpha) would limit every service behind it together"),
    "ingress": Capability(
        "full", "the ingress gateway's VirtualService (hosts + gateways: [<gateway>] only; versions reach their "
        "<service>-<version> Services); mesh traffic is routed by the HTTPRoute"),
    "edge.routes": Capability(
        "full", "VirtualService <name> with the hosts, bound to the gateway only (gateways: [<gateway>]); "
        "destinations by FQDN, a version by its <service>-<version> Service; no implicit default route (404)"),
    "telemetry.tracing": Capability("full", "Telemetry tracing, " + _ATTACHED),
    "telemetry.accessLogs": Capability("full", "Telemetry accessLogging, " + _ATTACHED),
    "telemetry.metrics": Capability("full", "Telemetry metrics, " + _ATTACHED),
    "observability.dashboard": Capability(
        "full", 'Grafana dashboard ConfigMap (grafana_dashboard: "1") from the waypoint\'s Istio metrics '
        '(reporter="waypoint"; ztunnel reports TCP metrics only)'),
    "namespace.mtls": Capability("partial", "PeerAuthentication `default` in the namespace (ztunnel); " + _NO_DISABLE),
    "namespace.deny-all": Capability(
        "full", "AuthorizationPolicy `deny-all` for ztunnel that allows only the namespace's waypoint, and "
        "`deny-all-waypoint` attached to the waypoint with no rules; kind: Namespace also renders the waypoint"),
    "mesh.mtls": Capability("partial", "PeerAuthentication `default` in the Istio root namespace (ztunnel); " + _NO_DISABLE),
    "mesh.observability": Capability(
        "partial", "ServiceMonitor for istiod and the `envoy-stats` PodMonitor, which scrapes the Envoy pods (waypoints "
        "and gateways); ztunnel's own metrics are not scraped"),
}


def _service_ref(name: str) -> list[dict[str, str]]:
    return [{"group": "", "kind": "Service", "name": name}]


def waypoint_principal(ctx: RenderContext, namespace: str) -> str:
    """The identity a namespace's waypoint calls workloads with (its service account is named after it)."""
    return f"{ctx.config.trust_domain}/ns/{namespace}/sa/{sidecar.settings(ctx.config).waypoint}"


class AmbientServiceRender(sidecar._ServiceRender):
    """A service for the ambient data plane: the sidecar pieces, re-bound where ambient differs."""

    def __init__(self, svc: ServiceBlueprint, ctx: RenderContext) -> None:
        super().__init__(svc, ctx)
        self.signals = sidecar.IstioSignals(
            reporter="waypoint", aliases=tuple(version_service(svc.service, v) for v in sorted(svc.versions)))
        self.routes = effective_routes(svc)

    # --- what needs the waypoint ----------------------------------------------------------

    def _http_routed(self) -> bool:
        return any(r.match is not None or r.backends or r.rewrite is not None
                   or (r.timeout is not None and self.on("timeout")) for r in self.routes)

    def _l7_access(self) -> bool:
        return any(r.methods or r.paths or r.jwt_claims for r in self.svc.access or ())

    def needs_waypoint(self) -> bool:
        """Whether anything of this service runs in the waypoint (so the Service must be bound to it)."""
        svc = self.svc
        return (self._http_routed() or (self._l7_access() and self.on("access")) or bool(self._traffic_policy())
                or (svc.jwt is not None and self.on("jwt")) or bool(self._telemetry_spec()))

    def waypoint_note(self) -> list[str]:
        if not self.needs_waypoint():
            return []
        ns, wp = self.ns, sidecar.settings(self.ctx.config).waypoint
        # Without ingress-use-waypoint, traffic from an ingress gateway skips the waypoint and with it
        # every policy attached there.
        return [(f"istio ambient: this service runs L7 features in the waypoint; label the Service {ns}/{self.svc.service} "
                 f"(not managed by meshgen) with {USE_WAYPOINT_LABEL}: {wp} and {INGRESS_USE_WAYPOINT_LABEL}: \"true\", "
                 f"and make sure namespace {ns} has the waypoint Gateway {wp} (a kind: Namespace blueprint renders it; "
                 f"or istioctl waypoint apply -n {ns})")]

    def bind(self, attached: bool) -> dict[str, Any]:
        return {"targetRefs": _service_ref(self.svc.service)} if attached else {"selector": self.selector()}

    # --- routing: version Services, HTTPRoutes, the edge VirtualService -----------------------

    def routing(self) -> list[Resource]:
        out: list[Resource] = []
        if self.svc.versions and self.on("versions"):
            out += version_services(self.svc, self.ctx)
        if self._http_routed():
            out += service_http_routes(
                self.svc, self.routes, self.ctx, api_version=ROUTE_API, keys=[()] * len(self.routes),
                annotations_of=lambda _key: {}, backends_of=lambda r: r.backends, rule_extra=self._rule_extra,
            )
        out += self.virtual_service()
        return out

    def _rule_extra(self, route: EffectiveRoute, atom: Atom) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if route.rewrite is not None and self.on("routes.rewrite"):
            extra["filters"] = [url_rewrite(route, atom)]
        if route.timeout is not None and self.on("timeout"):
            extra["timeouts"] = {"request": format_duration(route.timeout.seconds)}
        return extra

    def virtual_service(self) -> list[Resource]:
        """Only the ingress gateway's: mesh traffic is the HTTPRoutes'."""
        gw = self.gateway_ref()
        if gw is None:
            return []
        assert self.svc.ingress is not None
        http = [route for er in self.routes if (route := self.http_route(er)) is not None]
        spec = {"hosts": list(self.svc.ingress.hosts), "gateways": [gw], "http": http}
        return [resource(self.v.networking, "VirtualService", self.meta(self.svc.service), spec=spec)]

    def destinations(self, er: EffectiveRoute) -> list[dict[str, Any]]:
        return _version_hosts(super().destinations(er), self.svc.service)

    # --- DestinationRules: one per destination host ------------------------------------------

    def _traffic_policy(self) -> dict[str, Any]:
        svc, policy = self.svc, dict[str, Any]()
        if svc.load_balancing is not None and (lb := self.load_balancer(svc.load_balancing)):
            policy["loadBalancer"] = lb
        if svc.connection_pool is not None and self.on("connectionPool") and (
                pool := self.connection_pool(svc.connection_pool)):
            policy["connectionPool"] = pool
        if svc.circuit_breaker is not None and (outlier := self.outlier_detection(svc.circuit_breaker)):
            policy["outlierDetection"] = outlier
        return policy

    def destination_rule(self) -> list[Resource]:
        policy = self._traffic_policy()
        if not policy:
            return []
        hosts = [self.svc.service]
        if self.on("versions"):
            hosts += [version_service(self.svc.service, v) for v in sorted(self.svc.versions)]
        return [resource(self.v.networking, "DestinationRule", self.meta(host),
                         spec={"host": host, "trafficPolicy": policy}) for host in hosts]

    # --- policies: ztunnel or the waypoint ------------------------------------------------------

    def request_authentication(self) -> list[Resource]:
        return _rebind(super().request_authentication(), self.bind(True))

    def authorization_policy(self) -> list[Resource]:
        return _rebind(super().authorization_policy(), self.bind(self.needs_waypoint()))

    def _telemetry_spec(self) -> dict[str, Any]:
        if self.svc.telemetry is None:
            return {}
        return sidecar._telemetry_spec(self.svc.telemetry, self.skipped)

    def telemetry(self) -> list[Resource]:
        spec = self._telemetry_spec()
        if not spec:
            return []
        return [resource(self.v.telemetry, "Telemetry", self.meta(self.svc.service),
                         spec={**self.bind(True), **spec})]

    def rate_limit(self) -> list[Resource]:
        return []  # declared `none`: nothing to attach it to without a sidecar


class AmbientIngressRender(sidecar._IngressRender):
    """kind: Ingress: the sidecar's edge VirtualService, with versions as their own Services."""

    def destinations(self, er: EffectiveRoute) -> list[dict[str, Any]]:
        return _version_hosts(super().destinations(er), None)


def _version_hosts(destinations: list[dict[str, Any]], default: str | None) -> list[dict[str, Any]]:
    """A VirtualService destination `host: h, subset: v` as `host: h-v` (no subsets in ambient)."""
    for entry in destinations:
        dest = entry["destination"]
        version = dest.pop("subset", None)
        if version is not None:
            name, dot, rest = dest["host"].partition(".")
            dest["host"] = version_service(name or default or "", version) + dot + rest
    return destinations


def _rebind(resources: list[Resource], binding: dict[str, Any]) -> list[Resource]:
    """The same policies with the workload selector replaced by `binding` (selector or targetRefs)."""
    out = []
    for r in resources:
        spec = {k: v for k, v in r.body["spec"].items() if k != "selector"}
        out.append(resource(r.body["apiVersion"], r.kind, r.body["metadata"], spec={**binding, **spec}))
    return out


def render_namespace(ns: NamespaceBlueprint, ctx: RenderContext, v: Any) -> list[Resource]:
    """The namespace's waypoint, its mTLS default (ztunnel), and a deny-all that holds at both layers."""
    wp = sidecar.settings(ctx.config).waypoint
    out = [resource(f"{GATEWAY_GROUP}/v1", "Gateway",
                    metadata(wp, ns.namespace, ctx, labels={"istio.io/waypoint-for": "service"}),
                    spec={"gatewayClassName": WAYPOINT_CLASS,
                          "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]})]
    if ns.mtls is not None and "namespace.mtls" not in ctx.skipped:
        out.append(sidecar._default_peer_authentication(v, ns.namespace, ns.mtls, ctx))
    if ns.access == "deny-all" and "namespace.deny-all" not in ctx.skipped:
        # ztunnel: only the waypoint may connect (it carries the callers a service's own waypoint
        # policy allows); services without a waypoint open themselves with selector policies.
        out.append(resource(v.security, "AuthorizationPolicy", metadata(
            "deny-all", ns.namespace, ctx, annotations={NOTE_ANNOTATION: (
                "ztunnel: denies every connection in the namespace except from the waypoint and what a "
                "service's own access policy allows")}),
            spec={"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [
                waypoint_principal(ctx, ns.namespace)]}}]}]}))
        out.append(resource(v.security, "AuthorizationPolicy", metadata(
            "deny-all-waypoint", ns.namespace, ctx, annotations={NOTE_ANNOTATION: (
                "waypoint: an ALLOW policy with no rules denies every request that no service's own access "
                "policy allows")}),
            spec={"targetRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": wp}], "action": "ALLOW"}))
    return out

