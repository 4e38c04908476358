"""One fleet rendered for every registered mesh means the same thing as for Istio.

The shapes differ (Linkerd needs extra overlap matches and one HTTPRoute per policy),
so meaning is compared on probe requests: which backends (by version, with weights),
which timeout, which retries, and which principals may call which (method, path).
Each mesh's output is read back by its reader in READERS (render/meaning.py); a newly
registered mesh fails test_every_registered_mesh_has_a_meaning_reader until it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from k8s_schema import validate_manifest
from render.meaning import (
    Decision,
    Request,
    Rule,
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
from meshgen.render.registry import MESHES

CONFIG = Config.model_validate({"environments": {"prod": {"mesh": "istio"}, **{name: {"mesh": name} for name in MESHES}}})
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


@dataclass(frozen=True)
class Reader:
    """How one mesh's rendered objects are read back into meaning."""

    routes: Callable[[list[dict[str, Any]], ServiceBlueprint], list[Rule]]
    decide: Callable[[list[Rule], Request], Decision | None]
    # (objects, blueprint, principal, method, path) -> may the principal call it
    allowed: Callable[[list[dict[str, Any]], ServiceBlueprint, str | None, str, str], bool]


def _port(svc: ServiceBlueprint) -> int:
    return svc.ports[0].target_port or svc.ports[0].port


READERS = {
    "istio": Reader(lambda out, svc: routes_istio(out, svc.service, list(svc.versions)), decide_istio,
                    lambda out, svc, who, method, path: allowed_istio(out, who, method, path)),
    "linkerd": Reader(lambda out, svc: routes_linkerd(out, svc.service, svc.ports[0].port, list(svc.versions)),
                      decide_linkerd,
                      lambda out, svc, who, method, path: allowed_linkerd(out, svc.workload_labels, _port(svc), who,
                                                                          method, path)),
}
REFERENCE = "istio"  # every other mesh is compared with it
OTHERS = [name for name in MESHES if name != REFERENCE]


def test_every_registered_mesh_has_a_meaning_reader() -> None:
    assert set(READERS) == set(MESHES), "add a Reader for the new mesh (tests/render/meaning.py reads its objects)"


def _mesh_render(name: str, svc: ServiceBlueprint) -> list[dict[str, Any]]:
    return _render(MESHES[name].renderer(), svc, name, name)


@pytest.mark.parametrize("mesh", OTHERS)
@pytest.mark.parametrize("raw", FLEET, ids=lambda r: r["service"])
def test_same_routing_meaning(raw: dict[str, Any], mesh: str) -> None:
    svc = ServiceBlueprint.model_validate(raw)
    ref, other = READERS[REFERENCE], READERS[mesh]
    r_rules = ref.routes(_mesh_render(REFERENCE, svc), svc)
    o_rules = other.routes(_mesh_render(mesh, svc), svc)
    if not r_rules and not o_rules:
        return
    for req in probe_requests(svc):
        r, o = ref.decide(r_rules, req), other.decide(o_rules, req)
        if r is None or o is None:  # no routing config on one side = the service as a whole
            assert (r or o) is None or (r or o).backends == (("*", 100),), req
            continue
        assert r.backends == o.backends, req
        assert r.timeout == o.timeout, req
        assert r.retries == o.retries, req


@pytest.mark.parametrize("mesh", OTHERS)
@pytest.mark.parametrize("raw", FLEET, ids=lambda r: r["service"])
def test_same_access_meaning(raw: dict[str, Any], mesh: str) -> None:
    svc = ServiceBlueprint.model_validate(raw)
    ref, other = READERS[REFERENCE], READERS[mesh]
    r_out, o_out = _mesh_render(REFERENCE, svc), _mesh_render(mesh, svc)
    for principal in blueprint_principals(svc):
        for method, path in access_probes(svc):
            assert ref.allowed(r_out, svc, principal, method, path) == \
                other.allowed(o_out, svc, principal, method, path), (principal, method, path)


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
