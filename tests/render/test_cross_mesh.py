"""One fleet rendered for Istio and for Linkerd means the same thing.

The shapes differ (Linkerd needs extra overlap matches and one HTTPRoute per policy),
so meaning is compared on probe requests: which backends (by version, with weights),
which timeout, which retries, and which principals may call which (method, path).
"""

from __future__ import annotations

from typing import Any

import pytest
from k8s_schema import validate_manifest
from render.meaning import (
    access_probes,
    allowed_istio,
    allowed_linkerd,
    blueprint_principals,
    decide_gateway,
    decide_istio,
    decide_linkerd,
    probe_requests,
    routes_gateway,
    routes_istio,
    routes_linkerd,
)

from meshgen.blueprint.config import Config
from meshgen.blueprint.model import ServiceBlueprint
from meshgen.render.base import RenderContext
from meshgen.render.features import used_features
from meshgen.render.istio import IstioRenderer
from meshgen.render.linkerd import LinkerdRenderer

CONFIG = Config.model_validate({"environments": {"prod": {"mesh": "istio"}, "l5d": {"mesh": "linkerd"}}})
AMBIENT = Config.model_validate({"environments": {"prod": {"mesh": "istio"}}, "istio": {"dataplane": "ambient"}})

FLEET = [
    {
        "service": "api", "namespace": "shop", "ports": [{"name": "http", "port": 8080}],
        "versions": ["v1", "v2", "v3"],
        "timeout": "10s",
        "routes": [
            {"name": "canary", "match": {"headers": {"x-canary": "true"}}, "to": "v2", "retries": False},
            {"name": "reports", "match": {"path": {"prefix": "/reports/"}, "method": ["GET"]}, "to": "v3",
             "timeout": "60s"},
            {"name": "orders", "match": {"path": {"exact": "/orders"}, "method": ["POST", "PUT"]},
             "to": {"v1": 50, "v2": 50}, "retries": {"attempts": 1, "on": ["5xx"]}},
            {"to": {"v1": 90, "v2": 10}, "retries": {"attempts": 3, "on": ["5xx", "gateway-error"], "perTryTimeout": "2s"}},
        ],
        "access": [
            {"from": ["frontend", "web/mobile"], "methods": ["GET"], "paths": ["/reports/*", "*.json"]},
            {"from": ["ops"]},
        ],
    },
    {
        "service": "cart", "namespace": "shop", "ports": [{"name": "http", "port": 80}],
        "versions": ["v1", "v2"],
        "routes": [
            {"name": "beta", "match": {"headers": {"x-user": {"prefix": "beta-"}}, "path": {"prefix": "/cart/"}}, "to": "v2"},
            {"name": "all-v2", "match": {"method": "DELETE"}, "to": "v2", "timeout": "1s"},
        ],
        "retries": {"attempts": 2, "on": [503]},
        "access": "deny-all",
    },
    {
        "service": "search", "namespace": "shop",
        "routes": [{"name": "legacy", "match": {"path": {"prefix": "/v1/"}}, "to": {"service": "search-legacy"}}],
        "access": [{"methods": ["GET"]}],
    },
]


def _render(renderer: Any, svc: ServiceBlueprint, env: str, mesh: str, config: Config = CONFIG) -> list[dict[str, Any]]:
    caps = renderer.capabilities(config)
    skipped = frozenset(k for k, _ in used_features(svc) if caps[k].support == "none")
    ctx = RenderContext(config=config, env=env, mesh=mesh, blueprint_path=f"blueprints/t/{svc.service}.yaml", team="t",
                        skipped=skipped)
    out = [r.body for r in renderer.render_service(svc, ctx)]
    for body in out:
        validate_manifest(body)
    return out


@pytest.mark.parametrize("raw", FLEET, ids=lambda r: r["service"])
def test_same_routing_meaning(raw: dict[str, Any]) -> None:
    svc = ServiceBlueprint.model_validate(raw)
    istio = _render(IstioRenderer(), svc, "prod", "istio")
    linkerd = _render(LinkerdRenderer(), svc, "l5d", "linkerd")
    versions = list(svc.versions)
    i_rules = routes_istio(istio, svc.service, versions)
    l_rules = routes_linkerd(linkerd, svc.service, svc.ports[0].port, versions)
    if not i_rules and not l_rules:
        return
    for req in probe_requests(svc):
        i, lk = decide_istio(i_rules, req), decide_linkerd(l_rules, req)
        if i is None or lk is None:  # no routing config on one side = the service as a whole
            assert (i or lk) is None or (i or lk).backends == (("*", 100),), req
            continue
        assert i.backends == lk.backends, req
        assert i.timeout == lk.timeout, req
        assert i.retries == lk.retries, req


@pytest.mark.parametrize("raw", FLEET, ids=lambda r: r["service"])
def test_same_access_meaning(raw: dict[str, Any]) -> None:
    svc = ServiceBlueprint.model_validate(raw)
    istio = _render(IstioRenderer(), svc, "prod", "istio")
    linkerd = _render(LinkerdRenderer(), svc, "l5d", "linkerd")
    port = svc.ports[0].target_port or svc.ports[0].port
    for principal in blueprint_principals(svc):
        for method, path in access_probes(svc):
            assert allowed_istio(istio, principal, method, path) == \
                allowed_linkerd(linkerd, svc.workload_labels, port, principal, method, path), (principal, method, path)


# --- Istio sidecar against Istio ambient: one line of meshgen.yaml, the same meaning --------------


@pytest.mark.parametrize("raw", FLEET, ids=lambda r: r["service"])
def test_ambient_routes_like_sidecars(raw: dict[str, Any]) -> None:
    """Ambient's HTTPRoutes (Gateway API's most-specific-match order, version Services) send every
    probe where the sidecar's VirtualService (first match, subsets) does, with the same timeout.
    Retries are declared `none` in ambient, so the HTTPRoutes say none."""
    svc = ServiceBlueprint.model_validate(raw)
    sidecar = _render(IstioRenderer(), svc, "prod", "istio")
    ambient = _render(IstioRenderer(), svc, "prod", "istio", AMBIENT)
    assert not [r for r in ambient if r["kind"] == "VirtualService"]  # mesh traffic is the HTTPRoutes'
    versions = list(svc.versions)
    s_rules = routes_istio(sidecar, svc.service, versions)
    a_rules = routes_gateway(ambient, svc.service, svc.ports[0].port, versions)
    assert bool(s_rules) == bool(a_rules)
    for req in probe_requests(svc):
        s, a = decide_istio(s_rules, req), decide_gateway(a_rules, req)
        if s is None or a is None:
            assert (s or a) is None or (s or a).backends == (("*", 100),), req
            continue
        assert (a.backends, a.timeout) == (s.backends, s.timeout), req
        assert a.retries is None


@pytest.mark.parametrize("raw", FLEET, ids=lambda r: r["service"])
def test_ambient_allows_what_sidecars_allow_and_binds_l7_rules_to_the_waypoint(raw: dict[str, Any]) -> None:
    svc = ServiceBlueprint.model_validate(raw)
    sidecar = _render(IstioRenderer(), svc, "prod", "istio")
    ambient = _render(IstioRenderer(), svc, "prod", "istio", AMBIENT)
    for principal in blueprint_principals(svc):
        for method, path in access_probes(svc):
            assert allowed_istio(ambient, principal, method, path) == allowed_istio(sidecar, principal, method, path)
    waypoint_bound = any(r["kind"] == "HTTPRoute" for r in ambient)
    for pol in (r for r in ambient if r["kind"] in ("AuthorizationPolicy", "RequestAuthentication", "Telemetry")):
        spec = pol["spec"]
        l7 = pol["kind"] != "AuthorizationPolicy" or any(
            "to" in rule or "when" in rule or any("requestPrincipals" in f["source"] for f in rule.get("from", []))
            for rule in spec.get("rules", []))
        if l7 or waypoint_bound:
            # ztunnel cannot evaluate L7 attributes (it would deny), and behind a waypoint it sees the
            # waypoint's identity: the policy must be attached to the waypoint through the Service
            assert spec["targetRefs"] == [{"group": "", "kind": "Service", "name": svc.service}], pol
            assert "selector" not in spec
        else:
            assert spec["selector"] == {"matchLabels": dict(svc.workload_labels)}, pol


def test_principal_only_access_without_routing_is_enforced_by_ztunnel() -> None:
    svc = ServiceBlueprint.model_validate({"service": "db", "namespace": "shop", "access": [{"from": ["api"]}]})
    ambient = _render(IstioRenderer(), svc, "prod", "istio", AMBIENT)
    (pol,) = ambient
    assert pol["spec"]["selector"] == {"matchLabels": {"app": "db"}} and "targetRefs" not in pol["spec"]
    with_methods = svc.model_copy(update={"access": ServiceBlueprint.model_validate(
        {"service": "db", "namespace": "shop", "access": [{"from": ["api"], "methods": ["GET"]}]}).access})
    (pol,) = _render(IstioRenderer(), with_methods, "prod", "istio", AMBIENT)
    assert pol["spec"]["targetRefs"] == [{"group": "", "kind": "Service", "name": "db"}]
