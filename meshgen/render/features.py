"""Blueprint features as renderers declare them, and which ones a blueprint uses.

Feature keys name what a user wrote (mesh-neutral), not what a mesh renders. Each
renderer maps every key to a Capability; `used_features` finds the keys a blueprint
actually uses, with the field path to point at when a mesh cannot express one.
"""

from __future__ import annotations

from collections.abc import Iterator

from meshgen.blueprint.model import (
    Backend,
    IngressBlueprint,
    MeshBlueprint,
    NamespaceBlueprint,
    RetryPolicy,
    Route,
    ServiceBlueprint,
    Telemetry,
)

FieldPath = tuple[str | int, ...]

FEATURES: dict[str, str] = {
    "versions": "versions: one destination per version",
    "routes.split": "routes.to: weighted split between versions or services",
    "routes.split.matched": "routes.to: a weighted split on a route that has a match",
    "routes.to.service": "routes.to: {service: ...} another service as destination",
    "routes.to.matched": "routes.to: a matched route going elsewhere than the default route",
    "routes.match.headers": "routes.match.headers",
    "routes.match.path": "routes.match.path",
    "routes.match.method": "routes.match.method",
    "routes.rewrite": "routes.rewrite: replace the matched path prefix",
    "timeout": "timeout (service level and per route)",
    "retries": "retries: attempts and conditions",
    "retries.never": "retries: false (never retry), service-wide or on a route",
    "retries.perTryTimeout": "retries.perTryTimeout",
    "retries.budget": "retries.budget: a retry budget (ratio, minPerSecond, ttl)",
    "routes.fault.delay": "routes.fault.delay",
    "routes.fault.abort": "routes.fault.abort",
    "loadBalancing": "loadBalancing: round-robin | least-request | random",
    "loadBalancing.consistentHash": "loadBalancing.consistentHash",
    "connectionPool": "connectionPool",
    "circuitBreaker.consecutive5xxErrors": "circuitBreaker.consecutive5xxErrors",
    "circuitBreaker.consecutiveGatewayErrors": "circuitBreaker.consecutiveGatewayErrors",
    "circuitBreaker.consecutiveLocalOriginFailures": "circuitBreaker.consecutiveLocalOriginFailures",
    "circuitBreaker.interval": "circuitBreaker.interval",
    "circuitBreaker.baseEjectionTime": "circuitBreaker.baseEjectionTime",
    "circuitBreaker.maxEjectionPercent": "circuitBreaker.maxEjectionPercent",
    "circuitBreaker.minHealthPercent": "circuitBreaker.minHealthPercent",
    "mtls": "mtls: strict | permissive | disable",
    "mtls.ports": "mtls.ports: per-port modes",
    "access": "access: rules by service account (and deny-all with [])",
    "access.methods": "access[].methods",
    "access.paths": "access[].paths",
    "access.jwtClaims": "access[].jwtClaims",
    "jwt": "jwt: request authentication",
    "rateLimit": "rateLimit: per-pod inbound token bucket",
    "ingress": "ingress: routes at the edge, bound to an existing gateway",
    "ingress.gateway.rendered": "ingress without gateway: meshgen renders the gateway",
    "ingress.tls": "ingress.tls",
    "edge.routes": "kind Ingress: routes for hosts at the gateway (matches, splits) to any services",
    "edge.rewrite": "kind Ingress: routes.rewrite at the gateway",
    "edge.timeout": "kind Ingress: routes.timeout at the gateway",
    "edge.retries": "kind Ingress: routes.retries at the gateway",
    "edge.fault": "kind Ingress: routes.fault at the gateway",
    "edge.crossNamespace": "kind Ingress: a `to` service in another namespace",
    "edge.gateway.rendered": "kind Ingress without gateway: meshgen renders the gateway",
    "edge.tls": "kind Ingress: tls on the gateway meshgen renders",
    "egress": "egress: external hosts",
    "telemetry.tracing": "telemetry.tracing",
    "telemetry.accessLogs": "telemetry.accessLogs",
    "telemetry.metrics": "telemetry.metrics",
    "observability.serviceMonitor": "observability.serviceMonitor",
    "observability.podMonitor": "observability.podMonitor",
    "observability.dashboard": "observability.dashboard",
    "namespace.mtls": "kind Namespace: mtls default",
    "namespace.mtls.ports": "kind Namespace: per-port mtls modes",
    "namespace.deny-all": "kind Namespace: access: deny-all",
    "mesh.telemetry": "kind Mesh: telemetry defaults",
    "mesh.mtls": "kind Mesh: mesh-wide mtls",
    "mesh.mtls.ports": "kind Mesh: per-port mtls modes",
    "mesh.observability": "kind Mesh: control-plane and proxy scraping",
}


def used_features(svc: ServiceBlueprint) -> Iterator[tuple[str, FieldPath]]:
    """(feature key, field path) for every feature this service blueprint uses."""
    if svc.versions:
        yield "versions", ("versions",)
    # A matched route without `to` goes where the default route goes (the spec): only a `to` of its own
    # that differs from the default route's is a destination of its own.
    default_to = next((r.to for r in reversed(svc.routes) if r.match is None), None)
    for i, route in enumerate(svc.routes):
        yield from _route(route, ("routes", i), default_to)
    if svc.timeout is not None:
        yield "timeout", ("timeout",)
    if svc.retries is not None:
        yield from _retries(svc.retries, ("retries",))
    yield from _traffic_policy(svc)
    yield from _security(svc)
    if svc.ingress is not None:
        yield "ingress", ("ingress",)
        if svc.ingress.gateway is None:
            yield "ingress.gateway.rendered", ("ingress",)
        if svc.ingress.tls is not None:
            yield "ingress.tls", ("ingress", "tls")
    for i, _ in enumerate(svc.egress):
        yield "egress", ("egress", i)
    if svc.telemetry is not None:
        yield from _telemetry(svc.telemetry, ("telemetry",))
    if svc.observability is not None:
        obs = svc.observability
        if obs.service_monitor is not None:
            yield "observability.serviceMonitor", ("observability", "serviceMonitor")
        if obs.pod_monitor is not None:
            yield "observability.podMonitor", ("observability", "podMonitor")
        if obs.dashboard:
            yield "observability.dashboard", ("observability", "dashboard")


def _destinations(route: Route, here: FieldPath, default_to: list[Backend] | None) -> Iterator[tuple[str, FieldPath]]:
    if route.to is None:
        return
    own = route.match is not None and route.to != default_to  # a matched route's destinations of its own
    if len(route.to) > 1:
        yield "routes.split", (*here, "to")
        if own:
            yield "routes.split.matched", (*here, "to")
    if any(b.service is not None for b in route.to):
        yield "routes.to.service", (*here, "to")
    if own:
        yield "routes.to.matched", (*here, "to")


def _route(route: Route, here: FieldPath, default_to: list[Backend] | None) -> Iterator[tuple[str, FieldPath]]:
    yield from _destinations(route, here, default_to)
    if route.match is not None:
        if route.match.headers:
            yield "routes.match.headers", (*here, "match", "headers")
        if route.match.path is not None:
            yield "routes.match.path", (*here, "match", "path")
        if route.match.method:
            yield "routes.match.method", (*here, "match", "method")
    if route.rewrite is not None:
        yield "routes.rewrite", (*here, "rewrite")
    if route.timeout is not None:
        yield "timeout", (*here, "timeout")
    if route.retries is not None:
        yield from _retries(route.retries, (*here, "retries"))
    if route.fault is not None:
        if route.fault.delay is not None:
            yield "routes.fault.delay", (*here, "fault", "delay")
        if route.fault.abort is not None:
            yield "routes.fault.abort", (*here, "fault", "abort")


def _traffic_policy(svc: ServiceBlueprint) -> Iterator[tuple[str, FieldPath]]:
    """Load balancing, connection pool and circuit breaker."""
    if svc.load_balancing is not None:
        if svc.load_balancing.consistent_hash is not None:
            yield "loadBalancing.consistentHash", ("loadBalancing", "consistentHash")
        else:
            yield "loadBalancing", ("loadBalancing",)
    if svc.connection_pool is not None:
        yield "connectionPool", ("connectionPool",)
    if svc.circuit_breaker is not None:
        cb = svc.circuit_breaker
        for attr, key in (
            ("consecutive_5xx_errors", "consecutive5xxErrors"),
            ("consecutive_gateway_errors", "consecutiveGatewayErrors"),
            ("consecutive_local_origin_failures", "consecutiveLocalOriginFailures"),
            ("interval", "interval"),
            ("base_ejection_time", "baseEjectionTime"),
            ("max_ejection_percent", "maxEjectionPercent"),
            ("min_health_percent", "minHealthPercent"),
        ):
            if getattr(cb, attr) is not None:
                yield f"circuitBreaker.{key}", ("circuitBreaker", key)


def _security(svc: ServiceBlueprint) -> Iterator[tuple[str, FieldPath]]:
    """mTLS, access rules, JWT and rate limits."""
    if svc.mtls is not None:
        yield "mtls", ("mtls",)
        if svc.mtls.ports:
            yield "mtls.ports", ("mtls", "ports")
    if svc.access is not None:
        yield "access", ("access",)
        for i, rule in enumerate(svc.access):
            if rule.methods:
                yield "access.methods", ("access", i, "methods")
            if rule.paths:
                yield "access.paths", ("access", i, "paths")
            if rule.jwt_claims:
                yield "access.jwtClaims", ("access", i, "jwtClaims")
    if svc.jwt is not None:
        yield "jwt", ("jwt",)
    if svc.rate_limit is not None:
        yield "rateLimit", ("rateLimit",)


def _retries(policy: RetryPolicy, path: FieldPath) -> Iterator[tuple[str, FieldPath]]:
    if not policy.enabled or policy.attempts == 0:
        yield "retries.never", path
        return
    yield "retries", path
    if policy.per_try_timeout is not None:
        yield "retries.perTryTimeout", (*path, "perTryTimeout")
    if policy.budget is not None:
        yield "retries.budget", (*path, "budget")


def _telemetry(tel: Telemetry, path: FieldPath) -> Iterator[tuple[str, FieldPath]]:
    if tel.tracing is not None:
        yield "telemetry.tracing", (*path, "tracing")
    if tel.access_logs is not None:
        yield "telemetry.accessLogs", (*path, "accessLogs")
    if tel.metrics is not None:
        yield "telemetry.metrics", (*path, "metrics")


def used_namespace_features(ns: NamespaceBlueprint) -> Iterator[tuple[str, FieldPath]]:
    if ns.mtls is not None:
        yield "namespace.mtls", ("mtls",)
        if ns.mtls.ports:
            yield "namespace.mtls.ports", ("mtls", "ports")
    if ns.access == "deny-all":
        yield "namespace.deny-all", ("access",)


def used_mesh_features(mesh: MeshBlueprint) -> Iterator[tuple[str, FieldPath]]:
    if mesh.telemetry is not None:
        yield "mesh.telemetry", ("telemetry",)
    if mesh.mtls is not None:
        yield "mesh.mtls", ("mtls",)
        if mesh.mtls.ports:
            yield "mesh.mtls.ports", ("mtls", "ports")
    if mesh.observability is not None:
        yield "mesh.observability", ("observability",)


def used_ingress_features(ing: IngressBlueprint) -> Iterator[tuple[str, FieldPath]]:
    yield "edge.routes", ("routes",)
    for i, route in enumerate(ing.routes):
        here: FieldPath = ("routes", i)
        if route.rewrite is not None:
            yield "edge.rewrite", (*here, "rewrite")
        if route.timeout is not None:
            yield "edge.timeout", (*here, "timeout")
        # `retries: false` is what gateways do unless told otherwise: only real retries count.
        if route.retries is not None and route.retries.enabled and route.retries.attempts > 0:
            yield "edge.retries", (*here, "retries")
        if route.fault is not None:
            yield "edge.fault", (*here, "fault")
        if any((b.service or "").partition(".")[2].split(".")[0] not in ("", ing.namespace) for b in route.to or ()):
            yield "edge.crossNamespace", (*here, "to")
    if ing.gateway is None:
        yield "edge.gateway.rendered", ("name",)
    if ing.tls is not None:
        yield "edge.tls", ("tls",)
