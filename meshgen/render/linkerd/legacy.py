"""Linkerd's legacy flavour: SMI TrafficSplit (`trafficSplit: smi`) and ServiceProfile
(`routePolicy: serviceprofile`), for clusters older than Linkerd's Gateway API support.

* The linkerd-smi adaptor turns every TrafficSplit into a ServiceProfile, and Linkerd then ignores
  HTTPRoutes and retry/timeout annotations for that Service (see the capability notes).
* A ServiceProfile route list is first-match-wins, like the blueprint; its conditions cannot match
  headers, so header-matched routes are left out (declared in the capability table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshgen.blueprint.base import format_duration
from meshgen.blueprint.model import Match, RetryPolicy, ServiceBlueprint
from meshgen.render.base import RenderContext, Resource, metadata, resource
from meshgen.render.gatewayapi import escape_regex, version_service
from meshgen.render.linkerd.settings import settings
from meshgen.render.routing import EffectiveRoute

if TYPE_CHECKING:
    from meshgen.blueprint.config import Config


def _has(ctx: RenderContext, feature: str) -> bool:
    return feature not in ctx.skipped


def retries_active(policy: RetryPolicy | None) -> bool:
    return policy is not None and policy.enabled and policy.attempts > 0


def _svc_fqdn(svc: ServiceBlueprint, config: Config) -> str:
    return f"{svc.service}.{svc.namespace}.svc.{config.cluster_domain}"


def traffic_split(svc: ServiceBlueprint, routes: list[EffectiveRoute], ctx: RenderContext) -> list[Resource]:
    default = next((r for r in routes if r.is_default), None)
    if default is None or not default.backends:
        return []
    version = settings(ctx.config).smi_version
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


def service_profile(svc: ServiceBlueprint, routes: list[EffectiveRoute], ctx: RenderContext) -> list[Resource]:
    sp_routes = []
    for r in routes:
        entry: dict[str, Any] = {"name": r.name, "condition": _sp_condition(r.match)}
        if r.match is not None and r.match.headers:
            continue  # a ServiceProfile condition cannot match headers
        if r.timeout is not None and _has(ctx, "timeout"):
            entry["timeout"] = format_duration(r.timeout.seconds)
        if retries_active(r.retries) and _has(ctx, "retries"):
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
        spec["routes"] = _sp_ordered(routes, sp_routes, ctx)
    if budget is not None:
        spec["retryBudget"] = {
            "retryRatio": budget.ratio,
            "minRetriesPerSecond": budget.min_per_second,
            "ttl": format_duration(budget.ttl.seconds) if budget.ttl is not None else "10s",
        }
    return [resource("linkerd.io/v1alpha2", "ServiceProfile",
                     metadata(_svc_fqdn(svc, ctx.config), svc.namespace, ctx, service=svc.service),
                     spec=spec)]

def _sp_ordered(routes: list[EffectiveRoute], with_policy: list[dict[str, Any]],
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


def _sp_condition(match: Match | None) -> dict[str, Any]:
    if match is None:
        return {"pathRegex": ".*"}
    path = ".*"
    if match.path is not None:
        kind, value = match.path.kind, match.path.value
        path = {"exact": "^" + escape_regex(value) + "$", "prefix": "^" + escape_regex(value) + ".*$"}.get(kind, value)
    methods = match.method or []
    if len(methods) == 1:
        return {"method": methods[0], "pathRegex": path}
    if methods:
        return {"any": [{"method": m, "pathRegex": path} for m in methods]}
    return {"pathRegex": path}
