"""What Linkerd can express of each blueprint feature, per flavour (the capability table).

The capability matrix (`meshgen capabilities`) and the unsupported-feature check are both
generated from this table, so it is the one place that says what the renderer does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgen.render.base import Capability, Support
from meshgen.render.features import FEATURES
from meshgen.render.gatewayapi import GATEWAY_GROUP
from meshgen.render.linkerd.settings import settings

if TYPE_CHECKING:
    from meshgen.blueprint.config import Config


def flavour(config: Config) -> str:
    s = settings(config)
    split = "smi-" + s.smi_version if s.traffic_split == "smi" else "httproute"
    return f"linkerd {s.version} {split}+{s.route_policy}"


def route_api_version(config: Config) -> str:
    return f"{GATEWAY_GROUP}/v1" if settings(config).release >= (2, 18) else f"{GATEWAY_GROUP}/v1beta1"


def capabilities(config: Config) -> dict[str, Capability]:
    s = settings(config)
    rel = s.release
    smi = s.traffic_split == "smi"
    sp = s.route_policy == "serviceprofile"
    ann = not sp and rel >= (2, 16)
    api = route_api_version(config)
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
            match_note = "ServiceProfile route condition (pathRegex / method) for the route's timeout and retries"
            caps["routes.match.path"] = Capability(full, match_note)
            caps["routes.match.method"] = Capability(full, match_note)
            caps["routes.to.matched"] = Capability(
                part, "the route's timeout and retries only (a ServiceProfile route): with trafficSplit: smi a matched "
                      "route cannot go to another version or service than the default route")
        else:
            for key in ("routes.match.headers", "routes.match.path", "routes.match.method"):
                caps[key] = Capability(part, f"{api} HTTPRoute matches." + shadow_smi)
            # The TrafficSplit shadowing is reported on the route's match (always present on a matched route).
            caps["routes.to.matched"] = Capability(full, f"{api} HTTPRoute rule backendRefs (see routes.match.*)")
    else:
        prec = (
            " Linkerd prefers the most specific match, so meshgen adds the overlaps of earlier routes as extra "
            "matches to keep first-match-wins (see the meshgen.dev/precedence annotation where it cannot)."
        )
        caps["routes.split"] = Capability(full, f"{api} HTTPRoute backendRefs weights over the <service>-<version> Services")
        caps["routes.split.matched"] = Capability(full, f"{api} HTTPRoute rule with weighted backendRefs")
        caps["routes.to.service"] = Capability(full, f"{api} HTTPRoute backendRef to the other Service")
        caps["routes.to.matched"] = Capability(full, f"{api} HTTPRoute rule backendRefs")
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
