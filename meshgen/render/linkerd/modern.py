"""Linkerd renderer, modern flavour: blueprints into Linkerd and Gateway API resources.

Two flavours, chosen in meshgen.yaml `linkerd:`

* modern (default): Gateway API HTTPRoutes with Service parents for matches and weighted
  splits, `timeout.linkerd.io/*` and `retry.linkerd.io/*` annotations on those HTTPRoutes
  (2.16+), policy.linkerd.io Server/HTTPRoute/AuthorizationPolicy for access,
  HTTPLocalRateLimitPolicy (2.17+), EgressNetwork (2.17+);
* legacy (linkerd/legacy.py): `trafficSplit: smi` (split.smi-spec.io TrafficSplit, as
  linkerd-smi serves it) and `routePolicy: serviceprofile` (ServiceProfile routes, timeouts,
  retry budget).

What each flavour can express is the capability table, linkerd/capabilities.py.

Facts this file relies on (read in Linkerd's docs and source, see the report):

* Linkerd picks an outbound route by *most specific match*, not by order: per request it
  compares (matched path length, method present, number of header matches), then takes
  the oldest HTTPRoute (creation time, then name) and the first rule on a tie
  (linkerd2-proxy `linkerd/http/route`), as Gateway API says; render/gatewayapi.py keeps the
  blueprint's first-match-wins under that order.
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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from meshgen.blueprint.base import format_duration
from meshgen.blueprint.model import (
    AccessRule,
    Backend,
    IngressBlueprint,
    MeshBlueprint,
    Monitor,
    NamespaceBlueprint,
    RetryPolicy,
    ServiceBlueprint,
)
from meshgen.names import dns_name
from meshgen.render.base import Capability, RenderContext, RenderError, Resource, metadata, resource
from meshgen.render.gatewayapi import (
    GATEWAY_GROUP,
    PRECEDENCE_ANNOTATION,
    ROUTABLE,
    Atom,
    access_atoms,
    backend_refs,
    chunk_rules,
    chunks,
    closure,
    escape_regex,
    implies,
    namespace_of,
    route_table,
    service_http_routes,
    url_rewrite,
    version_service,
    version_services,
)
from meshgen.render.linkerd import capabilities as _caps
from meshgen.render.linkerd.legacy import retries_active, service_profile, traffic_split
from meshgen.render.linkerd.settings import settings
from meshgen.render.observability import endpoint, service_dashboard, service_monitors
from meshgen.render.routing import EffectiveRoute, effective_routes, ingress_routes

if TYPE_CHECKING:
    from meshgen.blueprint.config import Config

POLICY_GROUP = "policy.linkerd.io"
ALL_NETWORKS = ({"cidr": "0.0.0.0/0"}, {"cidr": "::/0"})
PROXY_ADMIN_PORT = "linkerd-admin"
# meshgen retry conditions that retry.linkerd.io/http can say, and how.
_HTTP_RETRY = {"5xx": "5xx", "gateway-error": "gateway-error", "retriable-4xx": "409"}


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


def _retry_conditions(policy: RetryPolicy) -> list[str]:
    out: list[str] = []
    for c in policy.on if policy.on is not None else ["5xx"]:
        value = str(c) if isinstance(c, int) else _HTTP_RETRY.get(c)
        if value is not None and value not in out:
            out.append(value)
    return out


@dataclass(frozen=True)
class LinkerdSignals:
    """Golden signals over the Linkerd proxy's inbound metrics (request_total, response_total,
    response_latency_ms_bucket), for the deployment `<service>` and its `<service>-<version>`s."""

    mesh: str = "linkerd"

    def queries(self, service: str | None, namespace: str | None) -> dict[str, str]:
        sel = ['direction="inbound"']
        if namespace is not None:
            sel.append(f'namespace="{namespace}"')
        if service is not None:
            sel.append(f'deployment=~"{escape_regex(service)}(-.+)?"')
        base = ", ".join(sel)
        total = f"sum(rate(response_total{{{base}}}[5m]))"
        return {
            "requests": f"sum(rate(request_total{{{base}}}[5m]))",
            # Linkerd classifies 5xx responses (and gRPC errors) as failures
            "errors": f'sum(rate(response_total{{{base}, classification="failure"}}[5m])) / {total}',
            "latency": f"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{{{base}}}[5m])) by (le))",
            "mtls": f'sum(rate(request_total{{{base}, tls="true"}}[5m])) / sum(rate(request_total{{{base}}}[5m]))',
        }


SIGNALS = LinkerdSignals()


def _has(ctx: RenderContext, feature: str) -> bool:
    return feature not in ctx.skipped


class LinkerdRenderer:
    mesh: ClassVar[str] = "linkerd"

    # --- flavour and capabilities ----------------------------------------------------------

    @classmethod
    def flavours(cls, config: Config) -> str:
        return _caps.flavour(config)

    @classmethod
    def route_api_version(cls, config: Config) -> str:
        return _caps.route_api_version(config)

    @classmethod
    def capabilities(cls, config: Config) -> Mapping[str, Capability]:
        return _caps.capabilities(config)

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
        s = settings(ctx.config)
        apex = {k: v for k, v in self.apex_annotations(svc).items()
                if not (k.endswith("max-failures") and "circuitBreaker.consecutive5xxErrors" in ctx.skipped)
                and not (k.endswith("penalty") and "circuitBreaker.baseEjectionTime" in ctx.skipped)}
        if apex:
            listed = ", ".join(f"{k}: \"{v}\"" for k, v in apex.items())
            ctx.notes.append(f"circuitBreaker: add to the Service {svc.namespace}/{svc.service} (not managed by "
                             f"meshgen) the annotations {listed}")
        if svc.versions and _has(ctx, "versions"):
            out.extend(version_services(svc, ctx))
        routes = self._routes(svc, ctx)
        needs_routing = any(r.match is not None or r.backends for r in routes)
        annotated = s.route_policy == "annotations" and s.release >= (2, 16)
        policies = [self._policy_annotations(r, ctx) for r in routes]
        if annotated:
            needs_routing = needs_routing or any(policies)
        if s.traffic_split == "smi":
            out.extend(traffic_split(svc, routes, ctx))
        if needs_routing and (s.traffic_split == "httproute" or annotated):
            out.extend(self._http_routes(svc, routes, policies, ctx))
        if s.route_policy == "serviceprofile":
            out.extend(service_profile(svc, routes, ctx))
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
        s = settings(ctx.config)
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

    # outbound routing

    def _policy_annotations(self, route: EffectiveRoute, ctx: RenderContext) -> tuple[tuple[str, str], ...]:
        """The retry/timeout annotations of the HTTPRoute this route goes in, as sorted pairs."""
        s = settings(ctx.config)
        if s.route_policy != "annotations" or s.release < (2, 16):
            return ()
        out: dict[str, str] = {}
        if route.timeout is not None and _has(ctx, "timeout"):
            out["timeout.linkerd.io/request"] = format_duration(route.timeout.seconds)
        r = route.retries
        if r is not None and retries_active(r) and _has(ctx, "retries"):
            out["retry.linkerd.io/limit"] = str(r.attempts)
            conds = _retry_conditions(r)
            if conds:
                out["retry.linkerd.io/http"] = ",".join(conds)
            if r.per_try_timeout is not None and _has(ctx, "retries.perTryTimeout"):
                out["retry.linkerd.io/timeout"] = format_duration(r.per_try_timeout.seconds)
        return tuple(sorted(out.items()))

    def _route_backends(self, route: EffectiveRoute, routes: list[EffectiveRoute], ctx: RenderContext) -> tuple[Backend, ...]:
        """Under SMI the TrafficSplit carries the default route's split: HTTPRoutes go to the apex."""
        if settings(ctx.config).traffic_split != "smi":
            return route.backends
        default = next((r.backends for r in routes if r.is_default), ())
        if route.backends == default or len(route.backends) > 1:
            return ()
        return route.backends

    def _http_routes(self, svc: ServiceBlueprint, routes: list[EffectiveRoute],
                     policies: list[tuple[tuple[str, str], ...]], ctx: RenderContext) -> list[Resource]:
        """Gateway API HTTPRoutes; retry/timeout annotations apply to a whole HTTPRoute, so routes
        whose policies differ go in different HTTPRoutes."""
        return service_http_routes(
            svc, routes, ctx, api_version=self.route_api_version(ctx.config), keys=policies,
            annotations_of=dict,
            backends_of=lambda route: self._route_backends(route, routes, ctx),
        )

    def precedence_notes(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[str]:
        """Where Linkerd's most-specific-match order cannot keep first-match-wins."""
        routes = self._routes(svc, ctx)
        return route_table(routes, [self._policy_annotations(r, ctx) for r in routes]).notes

    # inbound: Servers, access, mtls, rate limit

    def _server_version(self, ctx: RenderContext) -> str:
        return "v1beta3" if settings(ctx.config).release >= (2, 16) else "v1beta2"

    def _inbound(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
        use_access = svc.access is not None and _has(ctx, "access")
        use_mtls = svc.mtls is not None and _has(ctx, "mtls")
        rel = settings(ctx.config).release
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

    def _authentications(self, svc: ServiceBlueprint, rules: list[AccessRule], ctx: RenderContext) -> list[Resource]:
        """The authentication of each rule, in rule order (rules with no `from` share one)."""
        ns, td = svc.namespace, ctx.config.trust_domain
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
        return authns

    def _access(self, svc: ServiceBlueprint, servers: list[str], ctx: RenderContext) -> list[Resource]:
        rules = [r for r in (svc.access or ()) if not (r.jwt_claims and not r.from_ and not r.methods and not r.paths)]
        if not _has(ctx, "access.methods"):
            rules = [r for r in rules if not r.methods]
        if not _has(ctx, "access.paths"):
            rules = [r for r in rules if not r.paths]
        if not rules:
            return []  # access: [] (or nothing expressible): the Servers deny everything
        ns = svc.namespace
        out: list[Resource] = []
        authns = self._authentications(svc, rules, ctx)
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
            for n, chunk in enumerate(chunks(atoms, 8 * 16)):
                name = route_name if n == 0 else dns_name(route_name, str(n + 1))
                out.append(resource(
                    f"{POLICY_GROUP}/v1beta3", "HTTPRoute",
                    metadata(name, ns, ctx, service=svc.service),
                    spec={
                        "parentRefs": [{"group": POLICY_GROUP, "kind": "Server", "name": s} for s in servers],
                        "rules": [{"matches": [a.to_gateway() for a in part]} for part in chunks(chunk, 8)],
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
        chunks_ = chunk_rules(table.rules)
        if len(chunks_) > 1:
            raise RenderError(("ingress",), f"ingress needs more than 16 HTTPRoute rules for these routes "
                              f"({sum(len(c) for c in chunks_)} rules); Gateway API allows 16 per HTTPRoute: "
                              "simplify the route matches or use fewer routes")
        port = ports[0].port
        rules = [
            {"matches": [a.to_gateway() for a in atoms],
             "backendRefs": backend_refs(svc, self._route_backends(rule.route, routes, ctx), port)}
            for rule, atoms in chunks_[0]
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
        return [*service_monitors(svc, ctx, proxy_port=PROXY_ADMIN_PORT), *service_dashboard(svc, ctx, SIGNALS)]

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
            routes = [r for r in routes if not any(namespace_of(b, ing.namespace) != ing.namespace for b in r.backends)]
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
                                  "filters": [url_rewrite(route, atom)], "backendRefs": refs, **extra})
                continue
            for part in chunks(rule.atoms, 8):
                rules.append({"matches": [a.to_gateway() for a in part], "backendRefs": refs, **extra})
        if len(rules) > 16:
            raise RenderError(("routes",), f"these routes need {len(rules)} HTTPRoute rules, Gateway API allows 16 "
                              "per HTTPRoute: simplify the route matches or use fewer routes")
        # Cross-namespace backendRefs need the other namespace's consent (a ReferenceGrant there).
        # meshgen does not write into a namespace the Ingress does not own: the reviewer is told.
        grants: dict[str, set[str]] = {}
        for r in routes:
            for b in r.backends:
                ns = namespace_of(b, ing.namespace)
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
        ns = namespace_of(b, namespace)
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
        ns = settings(ctx.config).namespace
        proxy_ep = endpoint(monitor, default_port=PROXY_ADMIN_PORT, default_path="/metrics")
        proxy_ep["relabelings"] = [
            {"sourceLabels": ["__meta_kubernetes_pod_label_linkerd_io_proxy_deployment"], "targetLabel": "deployment"},
            {"sourceLabels": ["__meta_kubernetes_pod_container_name"], "action": "keep", "regex": "linkerd-proxy"},
        ]
        cp_ep = endpoint(monitor, default_port="admin-http", default_path="/metrics")
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


def _ref(r: Resource) -> dict[str, str]:
    return {"group": POLICY_GROUP, "kind": r.kind, "name": r.name}
