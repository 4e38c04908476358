"""Linkerd renderer: blueprints into Linkerd (and Gateway API / SMI) resources.

Two flavours, chosen in meshgen.yaml `linkerd:`

* modern (default): Gateway API HTTPRoutes with Service parents for matches and weighted
  splits, `timeout.linkerd.io/*` and `retry.linkerd.io/*` annotations on those HTTPRoutes
  (2.16+), policy.linkerd.io Server/HTTPRoute/AuthorizationPolicy for access,
  HTTPLocalRateLimitPolicy (2.17+), EgressNetwork (2.17+);
* legacy: `trafficSplit: smi` (split.smi-spec.io TrafficSplit, as linkerd-smi serves it)
  and `routePolicy: serviceprofile` (ServiceProfile routes, timeouts, retry budget).

Facts this file relies on (read in Linkerd's docs and source, see the report):

* Linkerd picks an outbound route by *most specific match*, not by order: per request it
  compares (matched path length, method present, number of header matches), then takes
  the oldest HTTPRoute (creation time, then name) and the first rule on a tie
  (linkerd2-proxy `linkerd/http/route`). Blueprint routes are first-match-wins, so
  `_route_table` adds the overlap of every set of routes as an extra, more specific match
  that goes where the *first* of them goes. The most specific emitted match a request
  satisfies is then always the overlap of every route it satisfies, which the blueprint
  sends to the first of those routes.
* Retry/timeout annotations apply to a whole HTTPRoute, and an annotated route overrides
  the Service's annotations. Rules whose policies differ therefore go into separate
  HTTPRoutes named `<service>[-<port>]-<first route name>`.
* Retry/timeout annotations and outbound HTTPRoutes are ignored for a Service that has a
  ServiceProfile (the linkerd-smi adaptor creates one for every TrafficSplit apex).
* `retry.linkerd.io/http` accepts only `5xx`, `gateway-error`, a status code or a range;
  anything else invalidates the whole annotation.
* `balancer.linkerd.io/failure-accrual*` is read from the *parent* Service, the one
  clients call (policy controller `parse_accrual_config` on the parent), not from
  HTTPRoute backends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from meshgen.blueprint.base import format_duration
from meshgen.blueprint.config import Config
from meshgen.blueprint.model import (
    AccessRule,
    Backend,
    IngressBlueprint,
    Match,
    MeshBlueprint,
    Monitor,
    NamespaceBlueprint,
    RetryPolicy,
    ServiceBlueprint,
)
from meshgen.render.base import Capability, RenderContext, Resource, Support, metadata, resource
from meshgen.render.features import FEATURES
from meshgen.render.names import dns_name
from meshgen.render.routing import EffectiveRoute, effective_routes, ingress_routes

GATEWAY_GROUP = "gateway.networking.k8s.io"
POLICY_GROUP = "policy.linkerd.io"
ROUTABLE = ("http", "http2", "grpc")
PRECEDENCE_ANNOTATION = "meshgen.dev/precedence"
ALL_NETWORKS = ({"cidr": "0.0.0.0/0"}, {"cidr": "::/0"})
PROXY_ADMIN_PORT = "linkerd-admin"
# meshgen retry conditions that retry.linkerd.io/http can say, and how.
_HTTP_RETRY = {"5xx": "5xx", "gateway-error": "gateway-error", "retriable-4xx": "409"}


# --- names ----------------------------------------------------------------------------------


def version_service(service: str, version: str) -> str:
    return dns_name(service, version)


def identity(principal: str, namespace: str, trust_domain: str) -> str:
    """A blueprint `from` entry as a Linkerd proxy identity (MeshTLSAuthentication)."""
    parts = principal.split("/")
    if len(parts) == 1:
        ns, sa, td = namespace, parts[0], trust_domain
    elif len(parts) == 2:
        ns, sa, td = parts[0], parts[1], trust_domain
    else:  # <trust domain>/ns/<ns>/sa/<sa>
        td, ns, sa = parts[0], parts[2], parts[4]
    return f"{sa}.{ns}.serviceaccount.identity.linkerd.{td}"


def _escape(text: str) -> str:
    """Escape regex metacharacters the way both RE2 and Rust's regex accept."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in text)


# --- match algebra -------------------------------------------------------------------------


class Incomputable(Exception):
    """The overlap of two matches cannot be written as one Gateway API match."""


class Atom(NamedTuple):
    """One Gateway API HTTPRouteMatch: at most one path, one method, header matches.

    path is (kind, value) with kind exact | prefix | regex; a `/` prefix is None. headers
    are (name, kind, value) sorted by name, kind exact | regex. A tuple: the match algebra
    hashes and compares thousands of these per fleet.
    """

    path: tuple[str, str] | None = None
    method: str | None = None
    headers: tuple[tuple[str, str, str], ...] = ()

    def to_gateway(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.path is None:
            out["path"] = {"type": "PathPrefix", "value": "/"}
        else:
            kind, value = self.path
            out["path"] = {"type": {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}[kind],
                           "value": value}
        if self.headers:
            out["headers"] = [
                {"name": n, "type": "Exact" if k == "exact" else "RegularExpression", "value": v}
                for n, k, v in self.headers
            ]
        if self.method:
            out["method"] = self.method
        return out

    def sort_key(self) -> tuple[Any, ...]:
        return (self.path or ("", ""), self.method or "", self.headers)

    def describe(self) -> str:
        bits = []
        if self.path:
            bits.append(f"path {self.path[0]} {self.path[1]}")
        if self.method:
            bits.append(f"method {self.method}")
        bits.extend(f"header {n} {k} {v}" for n, k, v in self.headers)
        return ", ".join(bits) or "any request"


ANY_REQUEST = Atom()


def _prefix_trim(p: str) -> str:
    return p.rstrip("/")


def prefix_holds(prefix: str, path: str) -> bool:
    """Linkerd/Gateway PathPrefix: whole path elements, trailing slashes ignored."""
    p = _prefix_trim(prefix)
    if not p:
        return True
    rest = path.rstrip("/")
    if not rest.startswith(p):
        return False
    rest = rest[len(p):]
    return rest == "" or rest.startswith("/")


def _full(regex: str, value: str) -> bool:
    try:
        return re.fullmatch(regex, value) is not None
    except re.error:
        raise Incomputable(f"regex {regex!r}") from None


def _conj_path(a: tuple[str, str] | None, b: tuple[str, str] | None) -> tuple[str, str] | None | bool:
    """The overlap of two paths; False when nothing can satisfy both."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    (ka, va), (kb, vb) = sorted((a, b), key=lambda x: ("exact", "prefix", "regex").index(x[0]))
    if ka == "exact":
        if kb == "exact":
            return False
        holds = prefix_holds(vb, va) if kb == "prefix" else _full(vb, va)
        return (ka, va) if holds else False
    if ka == "prefix" and kb == "prefix":
        pa, pb = _prefix_trim(va), _prefix_trim(vb)
        if prefix_holds(pa or "/", pb or "/"):
            return (kb, vb)
        if prefix_holds(pb or "/", pa or "/"):
            return (ka, va)
        return False
    raise Incomputable(f"path {ka} {va!r} and path {kb} {vb!r}")


def conj(a: Atom, b: Atom) -> Atom | None:
    """A match that holds exactly when both hold; None when no request satisfies both."""
    if a == b or b == ANY_REQUEST:
        return a
    if a == ANY_REQUEST:
        return b
    if a.method and b.method and a.method != b.method:
        return None
    path = _conj_path(a.path, b.path)
    if path is False:
        return None
    headers: dict[str, tuple[str, str]] = {n: (k, v) for n, k, v in a.headers}
    for n, k, v in b.headers:
        if n not in headers or headers[n] == (k, v):
            headers[n] = (k, v)
            continue
        (k0, v0) = headers[n]
        if k0 == "exact" and k == "exact":
            return None
        if k0 == "regex" and k == "regex":
            raise Incomputable(f"header {n} regex {v0!r} and regex {v!r}")
        exact, regex = (v0, v) if k0 == "exact" else (v, v0)
        if not _full(regex, exact):
            return None
        headers[n] = ("exact", exact)
    return Atom(
        path=path if path is not True else None,  # type: ignore[arg-type]
        method=a.method or b.method,
        headers=tuple(sorted((n, k, v) for n, (k, v) in headers.items())),
    )


def implies(a: Atom, b: Atom) -> bool:
    """Every request that satisfies a satisfies b (False when it cannot be decided)."""
    try:
        return conj(a, b) == a
    except Incomputable:
        return False


def _may_tie(x: Atom, y: Atom) -> bool:
    """x implies y; could Linkerd score them equal for some request?"""
    if bool(x.method) != bool(y.method) or len(x.headers) != len(y.headers):
        return False
    if x.path == y.path:
        return True
    xk = x.path[0] if x.path else None
    if xk == "regex" or (y.path and y.path[0] == "regex"):
        return True
    if xk == "exact":
        target = y.path[1] if y.path else "/"
        return _prefix_trim(x.path[1]) == _prefix_trim(target)  # type: ignore[index]
    return False


def route_atoms(match: Match | None) -> list[Atom]:
    """A blueprint match as alternatives (one per method)."""
    if match is None:
        return [ANY_REQUEST]
    path: tuple[str, str] | None = None
    if match.path is not None:
        kind, value = match.path.kind, match.path.value
        path = None if kind == "prefix" and value == "/" else (kind, value)
    headers = []
    for name in sorted(match.headers):
        sm = match.headers[name]
        if sm.kind == "exact":
            headers.append((name, "exact", sm.value))
        elif sm.kind == "prefix":
            headers.append((name, "regex", _escape(sm.value) + ".*"))
        else:
            headers.append((name, "regex", sm.value))
    methods: list[str | None] = list(match.method) if match.method else [None]
    return [Atom(path=path, method=m, headers=tuple(headers)) for m in methods]


def access_atoms(rule: AccessRule) -> list[Atom]:
    paths: list[tuple[str, str] | None] = []
    for p in rule.paths or ["*"]:
        if p == "*":
            paths.append(None)
        elif p.endswith("*"):
            prefix = p[:-1]
            paths.append(None if prefix in ("", "/") else ("prefix", prefix))
        elif p.startswith("*"):
            paths.append(("regex", ".*" + _escape(p[1:])))
        else:
            paths.append(("exact", p))
    methods: list[str | None] = list(rule.methods) if rule.methods else [None]
    return [Atom(path=p, method=m) for p in paths for m in methods]


MAX_OVERLAPS = 512


@dataclass
class Closure:
    """Every satisfiable overlap of the given alternatives, with who it belongs to."""

    first: dict[Atom, int] = field(default_factory=dict)  # atom -> lowest index among its parts
    incomputable: list[tuple[int, int, str]] = field(default_factory=list)


def closure(groups: Sequence[Sequence[Atom]]) -> Closure:
    out = Closure()
    for i, atoms in enumerate(groups):
        new: dict[Atom, int] = {}
        existing = list(out.first.items())
        for atom in atoms:
            new[atom] = min(new.get(atom, i), i)
            for other, idx in existing:
                try:
                    c = conj(other, atom)
                except Incomputable as exc:
                    out.incomputable.append((idx, i, str(exc)))
                    continue
                if c is not None:
                    new[c] = min(new.get(c, idx), idx)
        for atom, idx in new.items():
            out.first[atom] = min(out.first.get(atom, idx), idx)
        if len(out.first) > MAX_OVERLAPS:
            raise ValueError(
                f"routes overlap in more than {MAX_OVERLAPS} ways; Linkerd needs every overlap spelled out "
                "to keep first-match-wins; simplify the matches"
            )
    return out


# --- route table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRule:
    atoms: tuple[Atom, ...]
    route: EffectiveRoute


@dataclass
class RouteTable:
    routes: list[EffectiveRoute]
    rules: list[TableRule]  # in precedence order (blueprint order of the owning route)
    notes: list[str]  # where first-match-wins cannot be kept exactly


def route_table(routes: list[EffectiveRoute], policies: Sequence[Any] | None = None) -> RouteTable:
    """Gateway API rules that keep the blueprint's first-match-wins under Linkerd's precedence.

    policies[i] says which HTTPRoute routes[i] belongs in (routes with equal policies can
    share one); ties between emitted matches of different HTTPRoutes are reported in `notes`.
    """
    groups = [route_atoms(r.match) for r in routes]
    cl = closure(groups)
    notes = [
        f"the overlap of routes {routes[i].name!r} and {routes[j].name!r} ({why}) cannot be written as one "
        f"match, so requests matching both may take {routes[j].name!r}"
        for i, j, why in sorted(set(cl.incomputable))
    ]
    by_route: dict[int, list[Atom]] = {}
    for atom, idx in cl.first.items():
        by_route.setdefault(idx, []).append(atom)
    for atoms in by_route.values():
        atoms.sort(key=Atom.sort_key)
    rules = [TableRule(tuple(by_route[i]), routes[i]) for i in sorted(by_route)]
    if policies is not None and len(set(policies)) > 1:
        flat = [(a, i) for i in sorted(by_route) for a in by_route[i]]
        for x, i in flat:
            for y, j in flat:
                if i < j and policies[i] != policies[j] and x != y and implies(x, y) and _may_tie(x, y):
                    notes.append(
                        f"route {routes[i].name!r} ({x.describe()}) and route {routes[j].name!r} ({y.describe()}) "
                        "are in different HTTPRoutes and Linkerd may score them equal; the older HTTPRoute wins"
                    )
    return RouteTable(routes, rules, notes)


# --- the renderer --------------------------------------------------------------------------


def _retry_conditions(policy: RetryPolicy) -> list[str]:
    out: list[str] = []
    for c in policy.on if policy.on is not None else ["5xx"]:
        value = str(c) if isinstance(c, int) else _HTTP_RETRY.get(c)
        if value is not None and value not in out:
            out.append(value)
    return out


def _retries_active(policy: RetryPolicy | None) -> bool:
    return policy is not None and policy.enabled and policy.attempts > 0


def _svc_fqdn(svc: ServiceBlueprint, config: Config) -> str:
    return f"{svc.service}.{svc.namespace}.svc.{config.cluster_domain}"


def _has(ctx: RenderContext, feature: str) -> bool:
    return feature not in ctx.skipped


class LinkerdRenderer:
    mesh: ClassVar[str] = "linkerd"

    # --- flavour and capabilities ----------------------------------------------------------

    @classmethod
    def flavours(cls, config: Config) -> str:
        s = config.linkerd
        split = "smi-" + s.smi_version if s.traffic_split == "smi" else "httproute"
        return f"linkerd {s.version} {split}+{s.route_policy}"

    @classmethod
    def route_api_version(cls, config: Config) -> str:
        return f"{GATEWAY_GROUP}/v1" if config.linkerd.release >= (2, 18) else f"{GATEWAY_GROUP}/v1beta1"

    @classmethod
    def capabilities(cls, config: Config) -> Mapping[str, Capability]:
        s = config.linkerd
        rel = s.release
        smi = s.traffic_split == "smi"
        sp = s.route_policy == "serviceprofile"
        ann = not sp and rel >= (2, 16)
        api = cls.route_api_version(config)
        full: Support = "full"
        part: Support = "partial"
        none: Support = "none"
        shadow_sp = (
            " Linkerd ignores outbound HTTPRoutes on a Service that has a ServiceProfile, so once this service "
            "sets timeout or retries its HTTPRoute matches and splits stop applying; use routePolicy: annotations "
            "(2.16+) or trafficSplit: smi."
        )
        shadow_smi = (
            " The linkerd-smi adaptor turns every TrafficSplit into a ServiceProfile, and Linkerd then ignores "
            "HTTPRoutes and retry/timeout annotations for that Service: they only apply while the default route "
            "has no version split."
        )
        old = "Linkerd before 2.16 has no retry/timeout annotations; use routePolicy: serviceprofile."
        caps: dict[str, Capability] = {
            "versions": Capability(full, "one Service <service>-<version> per version (workload + version labels, the service's ports)"),
            "routes.rewrite": Capability(none, "Linkerd HTTPRoutes have no URLRewrite filter (the policy controller rejects it)"),
            "routes.fault.delay": Capability(none, "Linkerd cannot inject delays"),
            "routes.fault.abort": Capability(none, "Linkerd cannot inject aborts (an error-injector backend is a documented workaround)"),
            "loadBalancing": Capability(part, "nothing is rendered: Linkerd always balances with latency-aware EWMA (closest to least-request); the mode cannot be chosen"),
            "loadBalancing.consistentHash": Capability(none, "Linkerd has no consistent-hash load balancing (EWMA only)"),
            "connectionPool": Capability(none, "Linkerd has no connection-pool limits"),
            "circuitBreaker.consecutive5xxErrors": Capability(
                part,
                "balancer.linkerd.io/failure-accrual: consecutive + ...-consecutive-max-failures. Linkerd reads them from "
                "the Service clients call (<service>), which meshgen does not own: not rendered, the pull request "
                "lists the annotations to add by hand; failures are HTTP 5xx responses",
            ),
            "circuitBreaker.baseEjectionTime": Capability(
                part,
                "balancer.linkerd.io/failure-accrual-consecutive-min-penalty (and max-penalty = 10 x, Linkerd backs off "
                "exponentially) on the Service <service>, which meshgen does not own: not rendered, the pull "
                "request lists the annotation to add by hand",
            ),
            "circuitBreaker.consecutiveGatewayErrors": Capability(none, "Linkerd's failure accrual counts all 5xx; it cannot count only 502-504"),
            "circuitBreaker.consecutiveLocalOriginFailures": Capability(none, "Linkerd's failure accrual does not track local-origin failures apart"),
            "circuitBreaker.interval": Capability(none, "Linkerd's consecutive failure accrual has no analysis interval"),
            "circuitBreaker.maxEjectionPercent": Capability(none, "Linkerd can mark every endpoint unavailable; there is no ejection cap"),
            "circuitBreaker.minHealthPercent": Capability(none, "Linkerd has no panic threshold"),
            "mtls": Capability(
                part,
                "Linkerd always uses mTLS between meshed pods; strict = Server accessPolicy all-authenticated (plaintext "
                "refused), permissive = all-unauthenticated. disable needs config.linkerd.io/skip-inbound-ports on the pod "
                "template, which meshgen does not own: it is rendered as permissive (all-unauthenticated)",
            ),
            "mtls.ports": Capability(part, "one Server per port with that port's accessPolicy; disable is rendered as permissive"),
            "access": Capability(
                full,
                "a Server per port (accessPolicy deny) + AuthorizationPolicy + MeshTLSAuthentication (identities "
                "<sa>.<ns>.serviceaccount.identity.linkerd.<trustDomain>); access: [] = Servers that deny everything",
            ),
            "access.methods": Capability(full, "policy.linkerd.io HTTPRoutes on the Servers, one AuthorizationPolicy per route"),
            "access.paths": Capability(
                full,
                "policy.linkerd.io HTTPRoute matches: `/p/*` → PathPrefix /p/ (whole path elements), `*.x` → RegularExpression",
            ),
            "access.jwtClaims": Capability(none, "Linkerd authorizes by mTLS identity or network, not JWT claims"),
            "jwt": Capability(none, "Linkerd has no request (JWT) authentication"),
            "ingress": Capability(
                part,
                f"a Gateway API HTTPRoute ({api}) attached to the existing Gateway; the gateway's own implementation "
                "serves it, so Linkerd retry/timeout annotations do not apply at the edge",
            ),
            "ingress.gateway.rendered": Capability(none, "Linkerd has no ingress gateway; name an existing Gateway in ingress.gateway"),
            "edge.routes": Capability(
                full,
                f"a Gateway API HTTPRoute <name> ({api}) with the Gateway as parentRef and the hosts as hostnames; "
                "served by the Gateway's own implementation (not the Linkerd proxy), which picks the most specific "
                "match, so meshgen adds route overlaps to keep first-match-wins; no implicit default (404)",
            ),
            "edge.rewrite": Capability(
                full,
                "HTTPRoute URLRewrite filter (ReplacePrefixMatch for a prefix match, ReplaceFullPath for an exact one), "
                "applied by the Gateway's implementation (Gateway API Extended support); a regex path cannot be rewritten",
            ),
            "edge.timeout": Capability(full, "HTTPRoute rules[].timeouts.request (Gateway API Extended support)"),
            "edge.retries": Capability(
                none, "Gateway API HTTPRoute retries are experimental-channel and gateway-specific; Linkerd's retry "
                "annotations apply to mesh traffic, not at the gateway"),
            "edge.fault": Capability(none, "Gateway API has no fault injection"),
            "edge.crossNamespace": Capability(
                part,
                "backendRef with the namespace; Gateway API needs a ReferenceGrant in the service's namespace, which "
                "meshgen does not render (that namespace is not the Ingress's): the pull request lists the grant to add",
            ),
            "edge.gateway.rendered": Capability(none, "Linkerd has no ingress gateway; name an existing Gateway in `gateway`"),
            "edge.tls": Capability(none, "TLS is configured on the Gateway's listeners, which meshgen does not render for Linkerd"),
            "ingress.tls": Capability(none, "TLS is configured on the Gateway's listeners, which meshgen does not render for Linkerd"),
            "telemetry.tracing": Capability(none, "tracing is the linkerd-jaeger extension plus config.linkerd.io/trace-collector on the pod template (not owned by meshgen)"),
            "telemetry.accessLogs": Capability(none, "access logs are config.linkerd.io/access-log on the pod template (not owned by meshgen)"),
            "telemetry.metrics": Capability(part, "nothing to render: the Linkerd proxy always serves Prometheus metrics; they cannot be turned off or sent elsewhere"),
            "observability.serviceMonitor": Capability(full, "ServiceMonitor selecting the workload labels"),
            "observability.podMonitor": Capability(full, "PodMonitor; default port linkerd-admin (the proxy, 4191) path /metrics"),
            "observability.dashboard": Capability(full, "ConfigMap <service>-dashboard (grafana_dashboard: \"1\") from Linkerd proxy metrics"),
            "namespace.mtls": Capability(
                none,
                "Linkerd's namespace default is the Namespace annotation config.linkerd.io/default-inbound-policy "
                "(all-authenticated for strict), read when pods are injected; meshgen does not own Namespace objects",
            ),
            "namespace.mtls.ports": Capability(none, "no namespace-wide Server exists in Linkerd (a Server needs a port and a pod selector)"),
            "namespace.deny-all": Capability(
                none,
                "Linkerd's namespace default-deny is the Namespace annotation config.linkerd.io/default-inbound-policy: deny "
                "(read when pods are injected, so pods must restart); meshgen does not own Namespace objects, and a "
                "Server needs a port, so no namespace-wide Server can say it. Services opt in with `access`",
            ),
            "mesh.telemetry": Capability(none, "tracing and access logs are installed/annotated outside meshgen (linkerd-jaeger, pod annotations); metrics are always on"),
            "mesh.mtls": Capability(
                part,
                "nothing to render: Linkerd always uses mTLS between meshed pods; refusing plaintext cluster-wide is the "
                "install-time proxy.defaultInboundPolicy (all-authenticated), and mTLS cannot be disabled",
            ),
            "mesh.mtls.ports": Capability(none, "mesh-wide per-port modes are install-time proxy settings, not resources"),
            "mesh.observability": Capability(full, "PodMonitors for every linkerd-proxy (port linkerd-admin /metrics) and the control plane (admin-http)"),
        }
        # routing
        if smi:
            caps["routes.split"] = Capability(
                full,
                f"SMI TrafficSplit ({s.smi_version}) of the default route over the <service>-<version> Services",
            )
            caps["routes.split.matched"] = Capability(none, "an SMI TrafficSplit is service-wide; a split on a matched route needs trafficSplit: httproute")
            caps["routes.to.service"] = Capability(part, "a TrafficSplit backend in the same namespace, on the default route only")
            if sp:
                caps["routes.match.headers"] = Capability(none, "ServiceProfile route conditions cannot match headers, and a TrafficSplit is service-wide")
                match_note = (
                    "ServiceProfile route condition (pathRegex / method) for timeout and retries only: with trafficSplit: smi "
                    "a matched route cannot go to another version or service than the default route"
                )
                caps["routes.match.path"] = Capability(part, match_note)
                caps["routes.match.method"] = Capability(part, match_note)
            else:
                for key in ("routes.match.headers", "routes.match.path", "routes.match.method"):
                    caps[key] = Capability(part, f"{api} HTTPRoute matches." + shadow_smi)
        else:
            prec = (
                " Linkerd prefers the most specific match, so meshgen adds the overlaps of earlier routes as extra "
                "matches to keep first-match-wins (see the meshgen.dev/precedence annotation where it cannot)."
            )
            caps["routes.split"] = Capability(full, f"{api} HTTPRoute backendRefs weights over the <service>-<version> Services")
            caps["routes.split.matched"] = Capability(full, f"{api} HTTPRoute rule with weighted backendRefs")
            caps["routes.to.service"] = Capability(full, f"{api} HTTPRoute backendRef to the other Service")
            caps["routes.match.headers"] = Capability(
                part if sp else full,
                f"{api} HTTPRoute header matches (prefix → RegularExpression)." + prec
                + (" A header-matched route's timeout/retries cannot be said in a ServiceProfile." if sp else ""),
            )
            caps["routes.match.path"] = Capability(
                full, f"{api} HTTPRoute path match (PathPrefix matches whole path elements)." + prec
            )
            caps["routes.match.method"] = Capability(full, f"{api} HTTPRoute method match." + prec)
        # policy
        if sp:
            extra = shadow_sp if not smi else ""
            caps["timeout"] = Capability(part if extra else full, "ServiceProfile route timeout (including retries)." + extra)
            caps["retries"] = Capability(
                part,
                "ServiceProfile isRetryable: the attempt count cannot be said (the service-wide retryBudget limits "
                "retries) and only responses classified as failures (5xx) are retried." + extra,
            )
            caps["retries.perTryTimeout"] = Capability(none, "ServiceProfile retries have no per-try timeout; use routePolicy: annotations (2.16+)")
            caps["retries.budget"] = Capability(full, "ServiceProfile retryBudget (retryRatio, minRetriesPerSecond, ttl)")
        elif ann:
            extra = shadow_smi if smi else ""
            caps["timeout"] = Capability(part if smi else full, "timeout.linkerd.io/request on the route's HTTPRoute." + extra)
            caps["retries"] = Capability(
                part,
                "retry.linkerd.io/limit + retry.linkerd.io/http on the route's HTTPRoute: only HTTP statuses can be "
                "retried (5xx, gateway-error, codes; retriable-4xx → 409; no `on` → 5xx); connection-level "
                "(reset, connect-failure, refused-stream, ...) and gRPC-status conditions are dropped." + extra,
            )
            caps["retries.perTryTimeout"] = Capability(part if smi else full, "retry.linkerd.io/timeout." + extra)
            caps["retries.budget"] = Capability(none, "retry annotations have no retry budget; use routePolicy: serviceprofile")
        else:
            for key in ("timeout", "retries", "retries.perTryTimeout"):
                caps[key] = Capability(none, old)
            caps["retries.budget"] = Capability(none, "retry annotations have no retry budget; use routePolicy: serviceprofile")
        # Linkerd retries nothing it is not told to: "never" is the default, said explicitly where
        # a ServiceProfile lists the route.
        caps["retries.never"] = Capability(
            full, "ServiceProfile route isRetryable: false" if sp
            else "no retry annotations on the route's HTTPRoute (Linkerd retries only what is configured)")
        # versioned features
        if rel >= (2, 17):
            caps["rateLimit"] = Capability(
                part,
                "HTTPLocalRateLimitPolicy per Server (one bucket per HTTP port and pod); total.requestsPerSecond = "
                "requests / per, rounded to a whole number >= 1 (the rounding is noted on the resource)",
            )
            caps["egress"] = Capability(
                part,
                "an EgressNetwork (trafficPolicy Allow) so external traffic gets Linkerd egress metrics and policy; "
                "EgressNetworks match IP networks, not hostnames or ports, so the listed hosts are only recorded "
                "(annotation), not enforced",
            )
        else:
            caps["rateLimit"] = Capability(none, "HTTPLocalRateLimitPolicy needs Linkerd 2.17+")
            caps["egress"] = Capability(none, "EgressNetwork needs Linkerd 2.17+")
        assert set(caps) == set(FEATURES), sorted(set(FEATURES) ^ set(caps))
        return {k: caps[k] for k in FEATURES}

    # --- public helpers ------------------------------------------------------------------

    @staticmethod
    def apex_annotations(svc: ServiceBlueprint) -> dict[str, str]:
        """Annotations the Service `<service>` (not owned by meshgen) needs for circuitBreaker."""
        cb = svc.circuit_breaker
        out: dict[str, str] = {}
        if cb is None or (cb.consecutive_5xx_errors is None and cb.base_ejection_time is None):
            return out
        out["balancer.linkerd.io/failure-accrual"] = "consecutive"
        if cb.consecutive_5xx_errors is not None:
            out["balancer.linkerd.io/failure-accrual-consecutive-max-failures"] = str(cb.consecutive_5xx_errors)
        if cb.base_ejection_time is not None:
            base = cb.base_ejection_time.seconds
            out["balancer.linkerd.io/failure-accrual-consecutive-min-penalty"] = format_duration(base)
            out["balancer.linkerd.io/failure-accrual-consecutive-max-penalty"] = format_duration(base * 10)
        return out

    # --- service -------------------------------------------------------------------------

    def render_service(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
        out: list[Resource] = []
        s = ctx.config.linkerd
        apex = {k: v for k, v in self.apex_annotations(svc).items()
                if not (k.endswith("max-failures") and "circuitBreaker.consecutive5xxErrors" in ctx.skipped)
                and not (k.endswith("penalty") and "circuitBreaker.baseEjectionTime" in ctx.skipped)}
        if apex:
            listed = ", ".join(f"{k}: \"{v}\"" for k, v in apex.items())
            ctx.notes.append(f"circuitBreaker: add to the Service {svc.namespace}/{svc.service} (not managed by "
                             f"meshgen) the annotations {listed}")
        if svc.versions and _has(ctx, "versions"):
            out.extend(self._version_services(svc, ctx))
        routes = self._routes(svc, ctx)
        needs_routing = any(r.match is not None or r.backends for r in routes)
        annotated = s.route_policy == "annotations" and s.release >= (2, 16)
        policies = [self._policy_annotations(r, ctx) for r in routes]
        if annotated:
            needs_routing = needs_routing or any(policies)
        if s.traffic_split == "smi":
            out.extend(self._traffic_split(svc, routes, ctx))
        if needs_routing and (s.traffic_split == "httproute" or annotated):
            out.extend(self._http_routes(svc, routes, policies, ctx))
        if s.route_policy == "serviceprofile":
            out.extend(self._service_profile(svc, routes, ctx))
        out.extend(self._inbound(svc, ctx))
        if svc.ingress is not None and _has(ctx, "ingress") and svc.ingress.gateway is not None:
            out.extend(self._ingress(svc, routes, ctx))
        if svc.egress and _has(ctx, "egress") and s.release >= (2, 17):
            out.append(self._egress(svc, ctx))
        out.extend(self._observability(svc, ctx))
        return out

    def _routes(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[EffectiveRoute]:
        """Effective routes, without routes that use a skipped route feature.

        A route whose match or split cannot be expressed is dropped rather than rendered
        broader than written (its traffic then goes where later routes send it).
        """
        s = ctx.config.linkerd
        kept = []
        for r in svc.routes:
            m = r.match
            if m is not None and (
                (m.headers and not _has(ctx, "routes.match.headers"))
                or (m.path is not None and not _has(ctx, "routes.match.path"))
                or (m.method and not _has(ctx, "routes.match.method"))
            ):
                continue
            if r.to is not None and len(r.to) > 1 and (
                not _has(ctx, "routes.split") or (m is not None and not _has(ctx, "routes.split.matched"))
            ):
                continue
            if r.to is not None and any(b.service for b in r.to) and not _has(ctx, "routes.to.service"):
                continue
            if s.traffic_split == "smi" and s.route_policy == "serviceprofile" and m is not None and m.headers:
                continue  # no carrier at all for a header-matched route
            kept.append(r)
        if len(kept) != len(svc.routes):
            svc = svc.model_copy(update={"routes": tuple(kept)})
        routes = effective_routes(svc)
        return routes

    # per-version Services

    def _version_services(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
        out = []
        for version, labels in sorted(svc.versions.items()):
            ports = []
            for p in svc.ports:
                port: dict[str, Any] = {"name": p.name, "port": p.port, "protocol": "TCP",
                                        "targetPort": p.target_port or p.port}
                ports.append(port)
            name = version_service(svc.service, version)
            out.append(resource(
                "v1", "Service",
                metadata(name, svc.namespace, ctx, service=svc.service, labels={"meshgen.dev/version": version}),
                spec={"selector": {**svc.workload_labels, **labels}, "ports": ports},
            ))
        return out

    # outbound routing

    def _backend_refs(self, svc: ServiceBlueprint, backends: Iterable[Backend], port: int) -> list[dict[str, Any]]:
        refs = []
        for b in backends:
            ref: dict[str, Any] = {"group": "", "kind": "Service"}
            if b.service is not None:
                name, _, rest = b.service.partition(".")
                target = version_service(name, b.version) if b.version else name
                ns = rest.split(".")[0] if rest else None
                ref["name"] = target
                if ns and ns != svc.namespace:
                    ref["namespace"] = ns
                ref["port"] = b.port or port
            else:
                ref["name"] = version_service(svc.service, b.version or "")
                ref["port"] = b.port or port
            ref["weight"] = b.weight
            refs.append(ref)
        if not refs:
            refs.append({"group": "", "kind": "Service", "name": svc.service, "port": port})
        return refs

    def _policy_annotations(self, route: EffectiveRoute, ctx: RenderContext) -> tuple[tuple[str, str], ...]:
        """The retry/timeout annotations of the HTTPRoute this route goes in, as sorted pairs."""
        s = ctx.config.linkerd
        if s.route_policy != "annotations" or s.release < (2, 16):
            return ()
        out: dict[str, str] = {}
        if route.timeout is not None and _has(ctx, "timeout"):
            out["timeout.linkerd.io/request"] = format_duration(route.timeout.seconds)
        r = route.retries
        if r is not None and _retries_active(r) and _has(ctx, "retries"):
            out["retry.linkerd.io/limit"] = str(r.attempts)
            conds = _retry_conditions(r)
            if conds:
                out["retry.linkerd.io/http"] = ",".join(conds)
            if r.per_try_timeout is not None and _has(ctx, "retries.perTryTimeout"):
                out["retry.linkerd.io/timeout"] = format_duration(r.per_try_timeout.seconds)
        return tuple(sorted(out.items()))

    def _route_backends(self, route: EffectiveRoute, routes: list[EffectiveRoute], ctx: RenderContext) -> tuple[Backend, ...]:
        """Under SMI the TrafficSplit carries the default route's split: HTTPRoutes go to the apex."""
        if ctx.config.linkerd.traffic_split != "smi":
            return route.backends
        default = next((r.backends for r in routes if r.is_default), ())
        if route.backends == default or len(route.backends) > 1:
            return ()
        return route.backends

    def _http_routes(self, svc: ServiceBlueprint, routes: list[EffectiveRoute],
                     policies: list[tuple[tuple[str, str], ...]], ctx: RenderContext) -> list[Resource]:
        api = self.route_api_version(ctx.config)
        ports = [p for p in svc.ports if p.protocol in ROUTABLE]
        if not ports:
            return []
        table = route_table(routes, policies)
        policy_of = {id(r): policy for r, policy in zip(routes, policies)}
        # group rules by policy, in precedence order; a group is named after its first route
        groups: dict[tuple[tuple[str, str], ...], list[TableRule]] = {}
        for rule in table.rules:
            groups.setdefault(policy_of[id(rule.route)], []).append(rule)
        out = []
        for port in ports:
            for policy, rules in groups.items():
                base = dns_name(svc.service, port.name if len(ports) > 1 else "", rules[0].route.label)
                chunks = _chunk_rules(rules)
                for n, chunk in enumerate(chunks):
                    name = base if n == 0 else dns_name(base, str(n + 1))
                    annotations = dict(policy)
                    if table.notes:
                        annotations[PRECEDENCE_ANNOTATION] = "; ".join(table.notes)
                    spec = {
                        "parentRefs": [{"group": "", "kind": "Service", "name": svc.service, "port": port.port}],
                        "rules": [
                            {
                                "matches": [a.to_gateway() for a in atoms],
                                "backendRefs": self._backend_refs(
                                    svc, self._route_backends(rule.route, routes, ctx), port.port
                                ),
                            }
                            for rule, atoms in chunk
                        ],
                    }
                    out.append(resource(api, "HTTPRoute",
                                        metadata(name, svc.namespace, ctx, service=svc.service,
                                                 annotations=annotations),
                                        spec=spec))
        return out

    def precedence_notes(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[str]:
        """Where Linkerd's most-specific-match order cannot keep first-match-wins."""
        routes = self._routes(svc, ctx)
        return route_table(routes, [self._policy_annotations(r, ctx) for r in routes]).notes

    # SMI

    def _traffic_split(self, svc: ServiceBlueprint, routes: list[EffectiveRoute], ctx: RenderContext) -> list[Resource]:
        default = next((r for r in routes if r.is_default), None)
        if default is None or not default.backends:
            return []
        version = ctx.config.linkerd.smi_version
        backends = []
        for b in default.backends:
            if b.service is not None:
                name = b.service.split(".")[0]
                name = version_service(name, b.version) if b.version else name
            else:
                name = version_service(svc.service, b.version or "")
            weight: Any = f"{b.weight * 10}m" if version == "v1alpha1" else b.weight
            backends.append({"service": name, "weight": weight})
        return [resource(
            f"split.smi-spec.io/{version}", "TrafficSplit",
            metadata(svc.service, svc.namespace, ctx, service=svc.service),
            spec={"service": svc.service, "backends": backends},
        )]

    # ServiceProfile

    def _service_profile(self, svc: ServiceBlueprint, routes: list[EffectiveRoute], ctx: RenderContext) -> list[Resource]:
        sp_routes = []
        for r in routes:
            entry: dict[str, Any] = {"name": r.name, "condition": _sp_condition(r.match)}
            if r.match is not None and r.match.headers:
                continue  # a ServiceProfile condition cannot match headers
            if r.timeout is not None and _has(ctx, "timeout"):
                entry["timeout"] = format_duration(r.timeout.seconds)
            if _retries_active(r.retries) and _has(ctx, "retries"):
                entry["isRetryable"] = True
            elif r.retries is not None and r.never_retry:
                entry["isRetryable"] = False
            if len(entry) > 2:
                sp_routes.append(entry)
        budget = None
        if _has(ctx, "retries.budget"):
            for policy in [svc.retries, *(r.retries for r in svc.routes)]:
                if policy is not None and policy.budget is not None:
                    budget = policy.budget
                    break
        if not sp_routes and budget is None:
            return []
        # A ServiceProfile route list is first-match: keep every route that comes before a
        # policy route, so the policy applies only where the blueprint puts it.
        spec: dict[str, Any] = {}
        if sp_routes:
            spec["routes"] = self._sp_ordered(routes, sp_routes, ctx)
        if budget is not None:
            spec["retryBudget"] = {
                "retryRatio": budget.ratio,
                "minRetriesPerSecond": budget.min_per_second,
                "ttl": format_duration(budget.ttl.seconds) if budget.ttl is not None else "10s",
            }
        return [resource("linkerd.io/v1alpha2", "ServiceProfile",
                         metadata(_svc_fqdn(svc, ctx.config), svc.namespace, ctx, service=svc.service),
                         spec=spec)]

    def _sp_ordered(self, routes: list[EffectiveRoute], with_policy: list[dict[str, Any]],
                    ctx: RenderContext) -> list[dict[str, Any]]:
        """All routes up to the last one with policy, in blueprint order (first match wins)."""
        names = {e["name"] for e in with_policy}
        by_name = {e["name"]: e for e in with_policy}
        last = max(i for i, r in enumerate(routes) if r.name in names)
        out = []
        for r in routes[: last + 1]:
            if r.match is not None and r.match.headers:
                continue
            out.append(by_name.get(r.name, {"name": r.name, "condition": _sp_condition(r.match)}))
        return out

    # inbound: Servers, access, mtls, rate limit

    def _server_version(self, ctx: RenderContext) -> str:
        return "v1beta3" if ctx.config.linkerd.release >= (2, 16) else "v1beta2"

    def _inbound(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
        use_access = svc.access is not None and _has(ctx, "access")
        use_mtls = svc.mtls is not None and _has(ctx, "mtls")
        rel = ctx.config.linkerd.release
        use_rl = svc.rate_limit is not None and _has(ctx, "rateLimit") and rel >= (2, 17)
        if not (use_access or use_mtls or use_rl):
            return []
        ns = svc.namespace
        out: list[Resource] = []
        servers: list[tuple[str, Any]] = []
        native_policy = self._server_version(ctx) == "v1beta3"
        for p in svc.ports:
            mode = "strict"
            if use_mtls and svc.mtls is not None:
                mode = svc.mtls.mode
                if _has(ctx, "mtls.ports"):
                    mode = svc.mtls.ports.get(p.port, svc.mtls.ports.get(p.target_port or -1, mode))
            if use_access:
                policy = "deny"
            elif use_mtls:
                policy = "all-authenticated" if mode == "strict" else "all-unauthenticated"
            else:
                policy = "all-unauthenticated"  # the rate limit must not change who may call
            name = dns_name(svc.service, p.name)
            spec: dict[str, Any] = {
                "podSelector": {"matchLabels": dict(svc.workload_labels)},
                "port": p.target_port or p.port,
            }
            if native_policy:
                spec["accessPolicy"] = policy
            out.append(resource(f"{POLICY_GROUP}/{self._server_version(ctx)}", "Server",
                                metadata(name, ns, ctx, service=svc.service), spec=spec))
            servers.append((name, p))
            if not native_policy and policy != "deny":
                out.extend(self._default_authz(svc, name, policy, ctx))
        if use_access:
            out.extend(self._access(svc, [n for n, _ in servers], ctx))
        if use_rl:
            out.extend(self._rate_limits(svc, [(n, p) for n, p in servers if p.protocol in ROUTABLE], ctx))
        return out

    def _default_authz(self, svc: ServiceBlueprint, server: str, policy: str, ctx: RenderContext) -> list[Resource]:
        """Servers before v1beta3 have no accessPolicy: say all-(un)authenticated with a policy."""
        authn = self._any_client(svc, meshed=policy == "all-authenticated", ctx=ctx)
        ap = resource(f"{POLICY_GROUP}/v1alpha1", "AuthorizationPolicy",
                      metadata(dns_name(server, "default"), svc.namespace, ctx, service=svc.service),
                      spec={"targetRef": {"group": POLICY_GROUP, "kind": "Server", "name": server},
                            "requiredAuthenticationRefs": [_ref(authn)]})
        return [authn, ap]

    def _any_client(self, svc: ServiceBlueprint, *, meshed: bool, ctx: RenderContext) -> Resource:
        if meshed:
            return resource(f"{POLICY_GROUP}/v1alpha1", "MeshTLSAuthentication",
                            metadata(dns_name(svc.service, "any-meshed"), svc.namespace, ctx, service=svc.service),
                            spec={"identities": ["*"]})
        return resource(f"{POLICY_GROUP}/v1alpha1", "NetworkAuthentication",
                        metadata(dns_name(svc.service, "any-client"), svc.namespace, ctx, service=svc.service),
                        spec={"networks": [dict(n) for n in ALL_NETWORKS]})

    def _access(self, svc: ServiceBlueprint, servers: list[str], ctx: RenderContext) -> list[Resource]:
        rules = [r for r in (svc.access or ()) if not (r.jwt_claims and not r.from_ and not r.methods and not r.paths)]
        if not _has(ctx, "access.methods"):
            rules = [r for r in rules if not r.methods]
        if not _has(ctx, "access.paths"):
            rules = [r for r in rules if not r.paths]
        if not rules:
            return []  # access: [] (or nothing expressible): the Servers deny everything
        ns, td = svc.namespace, ctx.config.trust_domain
        out: list[Resource] = []
        strict = svc.mtls is not None and svc.mtls.mode == "strict"
        authns: list[Resource] = []
        any_client: Resource | None = None
        for i, rule in enumerate(rules):
            if rule.from_:
                ids = sorted({identity(p, ns, td) for p in rule.from_})
                authns.append(resource(f"{POLICY_GROUP}/v1alpha1", "MeshTLSAuthentication",
                                       metadata(dns_name(svc.service, "access", str(i)), ns, ctx, service=svc.service),
                                       spec={"identities": ids}))
            else:
                if any_client is None:
                    any_client = self._any_client(svc, meshed=strict, ctx=ctx)
                authns.append(any_client)
        seen: set[str] = set()
        for a in authns:
            if a.name not in seen:
                seen.add(a.name)
                out.append(a)
        routed = any(r.methods or r.paths for r in rules)
        if not routed:
            for i, _ in enumerate(rules):
                for server in servers:
                    out.append(self._authz(svc, dns_name(svc.service, "access", str(i), server.removeprefix(svc.service + "-")),
                                           {"group": POLICY_GROUP, "kind": "Server", "name": server}, authns[i], ctx))
            return out
        # Inbound routes: every overlap of the rules' matches, each authorized by every rule that covers it.
        rule_atoms = [access_atoms(r) for r in rules]
        cl = closure(rule_atoms)
        by_rules: dict[tuple[int, ...], list[Atom]] = {}
        for atom in sorted(cl.first, key=Atom.sort_key):
            covering = tuple(i for i, atoms in enumerate(rule_atoms) if any(implies(atom, a) for a in atoms))
            if covering:
                by_rules.setdefault(covering, []).append(atom)
        for k, (covering, atoms) in enumerate(sorted(by_rules.items())):
            route_name = dns_name(svc.service, "access", "route", str(k))
            for n, chunk in enumerate(_chunks(atoms, 8 * 16)):
                name = route_name if n == 0 else dns_name(route_name, str(n + 1))
                out.append(resource(
                    f"{POLICY_GROUP}/v1beta3", "HTTPRoute",
                    metadata(name, ns, ctx, service=svc.service),
                    spec={
                        "parentRefs": [{"group": POLICY_GROUP, "kind": "Server", "name": s} for s in servers],
                        "rules": [{"matches": [a.to_gateway() for a in part]} for part in _chunks(chunk, 8)],
                    },
                ))
                for i in covering:
                    out.append(self._authz(svc, dns_name(name, "rule", str(i)),
                                           {"group": POLICY_GROUP, "kind": "HTTPRoute", "name": name}, authns[i], ctx))
        return out

    def _authz(self, svc: ServiceBlueprint, name: str, target: dict[str, str], authn: Resource,
               ctx: RenderContext) -> Resource:
        return resource(f"{POLICY_GROUP}/v1alpha1", "AuthorizationPolicy",
                        metadata(name, svc.namespace, ctx, service=svc.service),
                        spec={"targetRef": target, "requiredAuthenticationRefs": [_ref(authn)]})

    def _rate_limits(self, svc: ServiceBlueprint, servers: list[tuple[str, Any]], ctx: RenderContext) -> list[Resource]:
        rl = svc.rate_limit
        assert rl is not None
        exact = rl.requests / rl.per.seconds
        rps = max(1, round(exact))
        annotations = {}
        if abs(rps - exact) > 1e-9:
            annotations["meshgen.dev/rate-limit"] = (
                f"{rl.requests} per {rl.per} is {exact:.4g} requests/s; Linkerd takes whole requests per second, "
                f"rounded to {rps}"
            )
        return [
            resource(f"{POLICY_GROUP}/v1alpha1", "HTTPLocalRateLimitPolicy",
                     metadata(name, svc.namespace, ctx, service=svc.service, annotations=annotations),
                     spec={"targetRef": {"group": POLICY_GROUP, "kind": "Server", "name": name},
                           "total": {"requestsPerSecond": rps}})
            for name, _ in servers
        ]

    # edge

    def _ingress(self, svc: ServiceBlueprint, routes: list[EffectiveRoute], ctx: RenderContext) -> list[Resource]:
        ing = svc.ingress
        assert ing is not None and ing.gateway is not None
        ports = [p for p in svc.ports if p.protocol in ROUTABLE]
        if not ports:
            return []
        gw_ns, _, gw_name = ing.gateway.rpartition("/")
        parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gw_name}
        if gw_ns:
            parent["namespace"] = gw_ns
        table = route_table(routes)
        chunks = _chunk_rules(table.rules)
        if len(chunks) > 1:
            raise ValueError(f"{svc.service}: ingress needs more than 16 HTTPRoute rules; simplify the route matches")
        port = ports[0].port
        rules = [
            {"matches": [a.to_gateway() for a in atoms],
             "backendRefs": self._backend_refs(svc, self._route_backends(rule.route, routes, ctx), port)}
            for rule, atoms in chunks[0]
        ]
        annotations = {PRECEDENCE_ANNOTATION: "; ".join(table.notes)} if table.notes else None
        return [resource(self.route_api_version(ctx.config), "HTTPRoute",
                         metadata(dns_name(svc.service, "ingress"), svc.namespace, ctx, service=svc.service,
                                  annotations=annotations),
                         spec={"parentRefs": [parent], "hostnames": list(ing.hosts), "rules": rules})]

    def _egress(self, svc: ServiceBlueprint, ctx: RenderContext) -> Resource:
        hosts = ",".join(f"{e.host}:{e.port}/{e.protocol}" for e in svc.egress)
        return resource(f"{POLICY_GROUP}/v1alpha1", "EgressNetwork",
                        metadata(dns_name(svc.service, "egress"), svc.namespace, ctx, service=svc.service,
                                 annotations={"meshgen.dev/egress-hosts": hosts}),
                        spec={"trafficPolicy": "Allow"})

    # observability

    def _observability(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
        obs = svc.observability
        if obs is None:
            return []
        out = []
        selector = {"matchLabels": dict(svc.workload_labels)}
        if obs.service_monitor is not None and _has(ctx, "observability.serviceMonitor"):
            out.append(resource("monitoring.coreos.com/v1", "ServiceMonitor",
                                metadata(svc.service, svc.namespace, ctx, service=svc.service),
                                spec={"selector": selector,
                                      "endpoints": [_endpoint(obs.service_monitor, "http-metrics")]}))
        if obs.pod_monitor is not None and _has(ctx, "observability.podMonitor"):
            out.append(resource("monitoring.coreos.com/v1", "PodMonitor",
                                metadata(svc.service, svc.namespace, ctx, service=svc.service),
                                spec={"selector": selector,
                                      "podMetricsEndpoints": [_endpoint(obs.pod_monitor, PROXY_ADMIN_PORT)]}))
        if obs.dashboard and _has(ctx, "observability.dashboard"):
            out.append(self._dashboard(svc, ctx))
        return out

    def _dashboard(self, svc: ServiceBlueprint, ctx: RenderContext) -> Resource:
        sel = (f'direction="inbound", namespace="{svc.namespace}", '
               f'deployment=~"{_escape(svc.service)}(-.+)?"')
        window = "[5m]"
        panels = [
            ("Request rate (rps)", f"sum(rate(request_total{{{sel}}}{window}))"),
            ("Error rate", (f'sum(rate(response_total{{{sel}, classification="failure"}}{window})) / '
                           f"sum(rate(response_total{{{sel}}}{window}))")),
            ("Latency p99 (ms)", f"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{{{sel}}}{window})) by (le))"),
            ("mTLS share", (f'sum(rate(request_total{{{sel}, tls="true"}}{window})) / '
                           f"sum(rate(request_total{{{sel}}}{window}))")),
        ]
        dashboard = {
            "title": f"{svc.service} ({svc.namespace}) — Linkerd golden signals",
            "uid": dns_name("meshgen", svc.namespace, svc.service, limit=40),
            "tags": ["meshgen", "linkerd"],
            "schemaVersion": 39,
            "panels": [
                {"id": i + 1, "title": title, "type": "timeseries",
                 "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                 "targets": [{"expr": expr, "refId": "A"}]}
                for i, (title, expr) in enumerate(panels)
            ],
        }
        return resource("v1", "ConfigMap",
                        metadata(dns_name(svc.service, "dashboard"), svc.namespace, ctx, service=svc.service,
                                 labels={"grafana_dashboard": "1"}),
                        data={f"{svc.service}.json": json.dumps(dashboard, sort_keys=True, indent=2)})

    # --- kind: Ingress -------------------------------------------------------------------------

    def render_ingress(self, ing: IngressBlueprint, ctx: RenderContext) -> list[Resource]:
        """A Gateway API HTTPRoute on the existing Gateway. The Gateway's implementation serves it
        (not the Linkerd proxy) and, like Linkerd, prefers the most specific match, so the route
        table's overlaps keep first-match-wins. No implicit default: an unmatched request is 404."""
        if ing.gateway is None or not _has(ctx, "edge.routes"):
            return []  # Linkerd renders no gateway (edge.gateway.rendered: none)
        gw_ns, _, gw_name = ing.gateway.rpartition("/")
        parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gw_name}
        if gw_ns:
            parent["namespace"] = gw_ns
        routes = ingress_routes(ing)
        if not _has(ctx, "edge.crossNamespace"):
            routes = [r for r in routes if not any(_namespace_of(b, ing.namespace) != ing.namespace for b in r.backends)]
        table = route_table(routes)
        rules: list[dict[str, Any]] = []
        for rule in table.rules:
            route = rule.route
            refs = [self._ingress_backend(b, ing.namespace) for b in route.backends]
            extra: dict[str, Any] = {}
            if route.timeout is not None and _has(ctx, "edge.timeout"):
                extra["timeouts"] = {"request": format_duration(route.timeout.seconds)}
            if route.rewrite is not None and _has(ctx, "edge.rewrite"):
                # ReplacePrefixMatch allows exactly one PathPrefix match per rule, and each match
                # rewrites its own prefix: one rule per match.
                for atom in rule.atoms:
                    rules.append({"matches": [atom.to_gateway()],
                                  "filters": [_url_rewrite(route, atom)], "backendRefs": refs, **extra})
                continue
            for part in _chunks(rule.atoms, 8):
                rules.append({"matches": [a.to_gateway() for a in part], "backendRefs": refs, **extra})
        if len(rules) > 16:
            raise ValueError(f"{ing.name}: these routes need {len(rules)} HTTPRoute rules, Gateway API allows 16; "
                             "simplify the route matches")
        # Cross-namespace backendRefs need the other namespace's consent (a ReferenceGrant there).
        # meshgen does not write into a namespace the Ingress does not own: the reviewer is told.
        grants: dict[str, set[str]] = {}
        for r in routes:
            for b in r.backends:
                ns = _namespace_of(b, ing.namespace)
                if ns != ing.namespace:
                    grants.setdefault(ns, set()).add((b.service or "").partition(".")[0])
        for ns, services in sorted(grants.items()):
            ctx.notes.append(
                f"routes: a ReferenceGrant in namespace {ns} must allow HTTPRoutes from namespace {ing.namespace} "
                f"to reach its Services ({', '.join(sorted(services))}); meshgen does not write into {ns}. Add there: "
                f"apiVersion: {GATEWAY_GROUP}/v1beta1, kind: ReferenceGrant, spec: {{from: [{{group: {GATEWAY_GROUP}, "
                f"kind: HTTPRoute, namespace: {ing.namespace}}}], to: [{{group: '', kind: Service}}]}}")
        annotations = {PRECEDENCE_ANNOTATION: "; ".join(table.notes)} if table.notes else None
        return [resource(self.route_api_version(ctx.config), "HTTPRoute",
                         metadata(ing.name, ing.namespace, ctx, service=ing.name, annotations=annotations),
                         spec={"parentRefs": [parent], "hostnames": list(ing.hosts), "rules": rules})]

    def _ingress_backend(self, b: Backend, namespace: str) -> dict[str, Any]:
        assert b.service is not None  # IngressRoute checks every destination names a service
        name = b.service.partition(".")[0]
        ref: dict[str, Any] = {"group": "", "kind": "Service",
                               "name": version_service(name, b.version) if b.version else name}
        ns = _namespace_of(b, namespace)
        if ns != namespace:
            ref["namespace"] = ns
        # Gateway API needs a port for a Service; the blueprint default port is 80.
        ref["port"] = b.port or 80
        ref["weight"] = b.weight
        return ref

    # --- namespace and mesh ------------------------------------------------------------------

    def render_namespace(self, ns: NamespaceBlueprint, ctx: RenderContext) -> list[Resource]:
        # Both namespace features are Namespace annotations (config.linkerd.io/default-inbound-policy),
        # and meshgen does not own Namespace objects: declared `none`, nothing rendered.
        return []

    def render_mesh(self, mesh: MeshBlueprint, ctx: RenderContext) -> list[Resource]:
        if mesh.observability is None or not _has(ctx, "mesh.observability"):
            return []
        obs = mesh.observability
        monitor = obs.pod_monitor or obs.service_monitor or Monitor.model_validate({})
        ns = ctx.config.linkerd.namespace
        proxy_ep = _endpoint(monitor, PROXY_ADMIN_PORT)
        proxy_ep["relabelings"] = [
            {"sourceLabels": ["__meta_kubernetes_pod_label_linkerd_io_proxy_deployment"], "targetLabel": "deployment"},
            {"sourceLabels": ["__meta_kubernetes_pod_container_name"], "action": "keep", "regex": "linkerd-proxy"},
        ]
        cp_ep = _endpoint(monitor, "admin-http")
        return [
            resource("monitoring.coreos.com/v1", "PodMonitor", metadata("linkerd-proxy", ns, ctx),
                     spec={"namespaceSelector": {"any": True},
                           "selector": {"matchExpressions": [{"key": "linkerd.io/control-plane-ns", "operator": "Exists"}]},
                           "podMetricsEndpoints": [proxy_ep]}),
            resource("monitoring.coreos.com/v1", "PodMonitor", metadata("linkerd-control-plane", ns, ctx),
                     spec={"namespaceSelector": {"matchNames": [ns]},
                           "selector": {"matchExpressions": [{"key": "linkerd.io/control-plane-component", "operator": "Exists"}]},
                           "podMetricsEndpoints": [cp_ep]}),
        ]


# --- small helpers --------------------------------------------------------------------------


def _namespace_of(b: Backend, namespace: str) -> str:
    """The namespace of a destination service (`name`, `name.ns` or an FQDN)."""
    rest = (b.service or "").partition(".")[2]
    return rest.split(".")[0] if rest else namespace


def _url_rewrite(route: EffectiveRoute, atom: Atom) -> dict[str, Any]:
    """The URLRewrite of one match of a route with `rewrite`, as the blueprint means it.

    `rewrite` replaces the route's matched prefix. A match meshgen added for an overlap (a longer
    prefix, or an exact path, under the route's prefix) keeps the part past the route's prefix,
    so `/v2/admin/x` under `prefix: /v2/, rewrite: /` still becomes `/admin/x`.
    """
    assert route.rewrite is not None
    own = route.match.path if route.match is not None else None
    if own is not None and own.kind == "regex":
        raise ValueError("a regex path cannot be rewritten with Gateway API")  # refused by analysis first
    if own is not None and own.kind == "exact":
        return {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": route.rewrite}}}
    base = _prefix_trim(own.value) if own is not None else ""
    kind, value = atom.path if atom.path is not None else ("prefix", "/")
    rest = _prefix_trim(value)[len(base):] if kind == "prefix" else value[len(base):]
    target = (route.rewrite.rstrip("/") + rest) if rest else route.rewrite
    target = target or "/"
    if kind == "exact":
        return {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": target}}}
    return {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": target}}}


def _ref(r: Resource) -> dict[str, str]:
    return {"group": POLICY_GROUP, "kind": r.kind, "name": r.name}


def _endpoint(m: Monitor, default_port: str) -> dict[str, Any]:
    ep: dict[str, Any] = {"port": m.port or default_port, "path": m.path or "/metrics"}
    if m.interval is not None:
        ep["interval"] = format_duration(m.interval.seconds)
    return ep


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i: i + size] for i in range(0, len(items), size)] or [items]


def _chunk_rules(rules: Sequence[TableRule]) -> list[list[tuple[TableRule, Sequence[Atom]]]]:
    """Gateway API limits: 8 matches per rule, 16 rules per HTTPRoute."""
    flat = [(rule, part) for rule in rules for part in _chunks(rule.atoms, 8)]
    return [list(c) for c in _chunks(flat, 16)]


def _sp_condition(match: Match | None) -> dict[str, Any]:
    if match is None:
        return {"pathRegex": ".*"}
    path = ".*"
    if match.path is not None:
        kind, value = match.path.kind, match.path.value
        path = {"exact": "^" + _escape(value) + "$", "prefix": "^" + _escape(value) + ".*$"}.get(kind, value)
    methods = match.method or []
    if len(methods) == 1:
        return {"method": methods[0], "pathRegex": path}
    if methods:
        return {"any": [{"method": m, "pathRegex": path} for m in methods]}
    return {"pathRegex": path}
