"""The Linkerd renderer: meaning of every feature, in both flavours and across versions."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from k8s_schema import validate_manifest
from render.meaning import Request, decide_linkerd, probe_requests, routes_linkerd

from meshgen.blueprint.config import Config
from meshgen.blueprint.model import MeshBlueprint, NamespaceBlueprint, ServiceBlueprint
from meshgen.render.base import RenderContext
from meshgen.render.features import FEATURES
from meshgen.render.linkerd import LinkerdRenderer, dns_name
from meshgen.render.routing import effective_routes

VERSIONS = ("2.15", "2.16", "2.17", "2.18")
MODERN: dict[str, Any] = {}
LEGACY = {"trafficSplit": "smi", "routePolicy": "serviceprofile"}


def cfg(**linkerd: Any) -> Config:
    return Config.model_validate({"environments": {"prod": {"mesh": "linkerd"}}, "linkerd": linkerd})


def ctx(config: Config | None = None, skipped: frozenset[str] = frozenset()) -> RenderContext:
    return RenderContext(config=config or cfg(), env="prod", mesh="linkerd",
                         blueprint_path="blueprints/t/x.yaml", team="t", skipped=skipped)


def bp(**fields: Any) -> ServiceBlueprint:
    return ServiceBlueprint.model_validate({"service": "api", "namespace": "prod",
                                            "ports": [{"name": "http", "port": 8080}], **fields})


def render(svc: ServiceBlueprint, config: Config | None = None, skipped: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    out = [r.body for r in LinkerdRenderer().render_service(svc, ctx(config, skipped))]
    for body in out:
        validate_manifest(body)  # every rendered resource, strictly
    assert len({(b["kind"], b["metadata"]["name"]) for b in out}) == len(out), "duplicate names"
    for b in out:
        assert len(b["metadata"]["name"]) <= 253
        if b["kind"] != "ServiceProfile":
            assert len(b["metadata"]["name"]) <= 63
    return out


def kinds(out: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [b for b in out if b["kind"] == kind]


def one(out: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [b for b in out if b["kind"] == kind and (name is None or b["metadata"]["name"] == name)]
    assert len(found) == 1, [b["metadata"]["name"] for b in out if b["kind"] == kind]
    return found[0]


CANARY = bp(
    versions=["v1", "v2"],
    routes=[
        {"name": "canary", "match": {"headers": {"x-canary": "true"}}, "to": "v2"},
        {"name": "admin", "match": {"path": {"prefix": "/admin"}, "method": ["GET", "POST"]}, "to": "v1", "timeout": "3s"},
        {"to": {"v1": 90, "v2": 10}, "retries": {"attempts": 3, "on": ["5xx", "reset", "retriable-4xx"], "perTryTimeout": "1s"}},
    ],
)


# --- capabilities --------------------------------------------------------------------------------

FLAVOURS = [
    {"version": v, "trafficSplit": s, "routePolicy": p}
    for v in VERSIONS for s in ("httproute", "smi") for p in ("annotations", "serviceprofile")
]


@pytest.mark.parametrize("linkerd", FLAVOURS, ids=lambda f: "-".join(f.values()))
def test_capabilities_cover_exactly_the_features(linkerd: dict[str, str]) -> None:
    caps = LinkerdRenderer.capabilities(cfg(**linkerd))
    assert list(caps) == list(FEATURES)
    for key, cap in caps.items():
        assert cap.support in ("full", "partial", "none")
        if cap.support != "full":
            assert cap.note, f"{key} needs a reason"


def test_capabilities_depend_on_version_and_flavour() -> None:
    old = LinkerdRenderer.capabilities(cfg(version="2.15"))
    assert old["timeout"].support == "none" and "routePolicy: serviceprofile" in old["timeout"].note
    assert old["retries"].support == "none" and old["retries.perTryTimeout"].support == "none"
    assert old["rateLimit"].support == "none" and old["egress"].support == "none"
    assert "v1beta1" in old["routes.split"].note
    v16 = LinkerdRenderer.capabilities(cfg(version="2.16"))
    assert v16["timeout"].support == "full" and v16["rateLimit"].support == "none"
    v17 = LinkerdRenderer.capabilities(cfg(version="2.17"))
    assert v17["rateLimit"].support == "partial" and v17["egress"].support == "partial"
    assert "v1beta1" in v17["routes.split"].note
    new = LinkerdRenderer.capabilities(cfg())
    assert "gateway.networking.k8s.io/v1 " in new["routes.split"].note
    assert new["retries.budget"].support == "none"
    assert new["routes.split.matched"].support == "full"
    legacy = LinkerdRenderer.capabilities(cfg(**LEGACY, version="2.15"))
    assert legacy["routes.split.matched"].support == "none"
    assert legacy["routes.match.headers"].support == "none"
    assert legacy["retries.budget"].support == "full"
    assert legacy["timeout"].support == "full"
    assert legacy["retries.perTryTimeout"].support == "none"
    for caps in (old, new, legacy):
        for key in ("jwt", "access.jwtClaims", "routes.rewrite", "routes.fault.delay", "routes.fault.abort",
                    "loadBalancing.consistentHash", "connectionPool", "circuitBreaker.interval",
                    "circuitBreaker.maxEjectionPercent", "namespace.deny-all"):
            assert caps[key].support == "none", key
        assert caps["circuitBreaker.consecutive5xxErrors"].support == "partial"
        assert caps["circuitBreaker.baseEjectionTime"].support == "partial"
    # mixed flavours say what Linkerd's ServiceProfile precedence costs
    assert LinkerdRenderer.capabilities(cfg(routePolicy="serviceprofile"))["timeout"].support == "partial"
    assert LinkerdRenderer.capabilities(cfg(trafficSplit="smi"))["retries"].support == "partial"


def test_flavour_label() -> None:
    assert LinkerdRenderer.flavours(cfg()) == "linkerd 2.18 httproute+annotations"
    assert LinkerdRenderer.flavours(cfg(**LEGACY, version="2.15", smiVersion="v1alpha1")) == \
        "linkerd 2.15 smi-v1alpha1+serviceprofile"


# --- versions ---------------------------------------------------------------------------------------


def test_one_service_per_version() -> None:
    svc = bp(ports=[{"name": "http", "port": 80, "targetPort": 8080}, {"name": "grpc", "port": 9090, "protocol": "grpc"}],
             workload={"app": "api", "tier": "web"}, versions={"v1": {"version": "v1"}, "v2": {"track": "canary"}})
    out = render(svc)
    v1, v2 = one(out, "Service", "api-v1"), one(out, "Service", "api-v2")
    assert v1["spec"]["selector"] == {"app": "api", "tier": "web", "version": "v1"}
    assert v2["spec"]["selector"] == {"app": "api", "tier": "web", "track": "canary"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in v1["spec"]["ports"]] == [("http", 80, 8080), ("grpc", 9090, 9090)]
    assert not kinds(out, "HTTPRoute")  # versions without routes: nothing to route


# --- modern routing ------------------------------------------------------------------------------


@pytest.mark.parametrize("version,api", [("2.15", "v1beta1"), ("2.16", "v1beta1"), ("2.17", "v1beta1"), ("2.18", "v1")])
def test_httproute_api_version(version: str, api: str) -> None:
    out = render(CANARY, cfg(version=version))
    routes = kinds(out, "HTTPRoute")
    assert routes and all(r["apiVersion"] == f"gateway.networking.k8s.io/{api}" for r in routes)
    for r in routes:
        assert r["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "api", "port": 8080}]
        if version == "2.15":
            assert not any(k.startswith(("retry.", "timeout.")) for k in r["metadata"]["annotations"])


def test_routes_split_by_policy_and_named_after_their_first_route() -> None:
    out = render(CANARY)
    names = [r["metadata"]["name"] for r in kinds(out, "HTTPRoute")]
    assert names == ["api-canary", "api-admin", "api-default"]
    canary, admin, default = (one(out, "HTTPRoute", n) for n in names)
    ann = lambda r: {k: v for k, v in r["metadata"]["annotations"].items() if "linkerd.io" in k}
    # the header rule has no retries: it must not inherit the default rule's
    assert ann(canary) == {}
    assert ann(admin) == {"timeout.linkerd.io/request": "3s"}
    assert ann(default) == {"retry.linkerd.io/http": "5xx,409", "retry.linkerd.io/limit": "3",
                            "retry.linkerd.io/timeout": "1s"}
    assert default["spec"]["rules"] == [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [{"group": "", "kind": "Service", "name": "api-v1", "port": 8080, "weight": 90},
                        {"group": "", "kind": "Service", "name": "api-v2", "port": 8080, "weight": 10}],
    }]
    assert render(CANARY) == out  # deterministic


def test_service_level_policy_goes_to_every_route_without_its_own() -> None:
    svc = bp(versions=["v1", "v2"], timeout="10s", retries={"attempts": 2, "on": "gateway-error"},
             routes=[{"name": "slow", "match": {"path": {"prefix": "/slow"}}, "timeout": "30s", "retries": False, "to": "v2"}])
    out = render(svc)
    slow, default = one(out, "HTTPRoute", "api-slow"), one(out, "HTTPRoute", "api-default")
    assert {k: v for k, v in slow["metadata"]["annotations"].items() if "linkerd" in k} == {"timeout.linkerd.io/request": "30s"}
    assert default["metadata"]["annotations"]["retry.linkerd.io/http"] == "gateway-error"
    assert default["metadata"]["annotations"]["timeout.linkerd.io/request"] == "10s"
    # the implicit default route goes to the service as a whole
    assert default["spec"]["rules"][0]["backendRefs"] == [{"group": "", "kind": "Service", "name": "api", "port": 8080}]


def test_only_service_level_policy_renders_a_catch_all_route() -> None:
    out = render(bp(timeout="5s"))
    route = one(out, "HTTPRoute")
    assert route["metadata"]["annotations"]["timeout.linkerd.io/request"] == "5s"
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == "api"
    assert not kinds(render(bp(timeout="5s"), cfg(version="2.15")), "HTTPRoute")  # nothing to say on 2.15


def first_match(svc: ServiceBlueprint, req: Request) -> Any:
    """The blueprint's own meaning: the first route whose match holds."""
    for route in effective_routes(svc):
        m = route.match
        if m is None:
            return route
        if m.method and req.method not in m.method:
            continue
        if m.path is not None:
            p = m.path
            if p.kind == "exact" and req.path != p.value:
                continue
            if p.kind == "prefix" and not _gw_prefix(p.value, req.path):
                continue
            if p.kind == "regex":
                import re
                if re.fullmatch(p.value, req.path) is None:
                    continue
        ok = True
        for name, sm in m.headers.items():
            got = req.header(name)
            if got is None or (sm.kind == "exact" and got != sm.value) or (sm.kind == "prefix" and not got.startswith(sm.value)):
                ok = False
        if ok:
            return route
    raise AssertionError("no default route")


def _gw_prefix(prefix: str, path: str) -> bool:
    p = prefix.rstrip("/")
    rest = path.rstrip("/")
    return not p or (rest.startswith(p) and (rest[len(p):] == "" or rest[len(p):].startswith("/")))


def expected(svc: ServiceBlueprint, req: Request) -> tuple[tuple[str, int], ...]:
    route = first_match(svc, req)
    if not route.backends:
        return (("*", 100),)
    return tuple(sorted((b.version or b.service or "", b.weight) for b in route.backends))


OVERLAPPING = [
    # a header rule before a more specific path rule: Linkerd alone would prefer the path
    [{"name": "canary", "match": {"headers": {"x-canary": "true"}}, "to": "v2", "retries": False},
     {"name": "api", "match": {"path": {"prefix": "/api"}, "method": "GET"}, "to": "v3", "timeout": "2s"},
     {"to": "v1", "retries": {"attempts": 2}}],
    # a shorter prefix before a longer one: the longer one is partly shadowed
    [{"name": "short", "match": {"path": {"prefix": "/a"}, "headers": {"x-user": {"prefix": "beta"}}}, "to": "v2", "timeout": "1s"},
     {"name": "long", "match": {"path": {"prefix": "/a/b"}}, "to": "v3"},
     {"name": "exact", "match": {"path": {"exact": "/a/b/c"}, "method": ["GET", "PUT"]}, "to": "v1", "timeout": "9s"}],
    # a catch-all before matched routes makes them dead
    [{"name": "all", "to": {"v1": 50, "v2": 50}},
     {"name": "never", "match": {"path": {"prefix": "/x"}}, "to": "v3"}],
    # three-way overlap that needs the triple conjunction
    [{"name": "h", "match": {"headers": {"a": "1"}}, "to": "v1", "timeout": "1s"},
     {"name": "p", "match": {"path": {"prefix": "/x"}}, "to": "v2", "timeout": "2s"},
     {"name": "m", "match": {"method": "GET"}, "to": "v3", "timeout": "3s"}],
]


@pytest.mark.parametrize("routes", OVERLAPPING)
def test_split_httproutes_keep_first_match_wins(routes: list[dict[str, Any]]) -> None:
    svc = bp(versions=["v1", "v2", "v3"], routes=routes)
    out = render(svc)
    rules = routes_linkerd(out, "api", 8080, versions=["v1", "v2", "v3"])
    assert all(PRECEDENCE not in r["metadata"]["annotations"] for r in kinds(out, "HTTPRoute"))
    for req in probe_requests(svc):
        got = decide_linkerd(rules, req)
        assert got is not None, req
        assert got.backends == expected(svc, req), req
        want = first_match(svc, req)
        assert got.timeout == (want.timeout.seconds if want.timeout else None), req


PRECEDENCE = "meshgen.dev/precedence"


def test_says_where_first_match_cannot_be_kept() -> None:
    svc = bp(versions=["v1", "v2"], routes=[
        {"name": "re", "match": {"path": {"regex": "/a/[0-9]+"}}, "to": "v2"},
        {"name": "pre", "match": {"path": {"prefix": "/a"}}, "to": "v1", "timeout": "1s"},
    ])
    out = render(svc)
    notes = [r["metadata"]["annotations"].get(PRECEDENCE) for r in kinds(out, "HTTPRoute")]
    assert all(notes) and "'re' and 'pre'" in notes[0]
    assert LinkerdRenderer().precedence_notes(svc, ctx())


def test_matches_headers_path_method() -> None:
    svc = bp(versions=["v1", "v2"], routes=[{"name": "m", "match": {
        "headers": {"x-a": "1", "x-b": {"prefix": "p.q"}, "x-c": {"regex": "z+"}},
        "path": {"exact": "/e"}, "method": "DELETE"}, "to": "v2"}])
    route = one(render(svc), "HTTPRoute", "api-m")
    assert route["spec"]["rules"][0]["matches"] == [{
        "path": {"type": "Exact", "value": "/e"},
        "headers": [{"name": "x-a", "type": "Exact", "value": "1"},
                    {"name": "x-b", "type": "RegularExpression", "value": "p\\.q.*"},
                    {"name": "x-c", "type": "RegularExpression", "value": "z+"}],
        "method": "DELETE",
    }]


def test_backend_to_another_service_and_multiple_ports() -> None:
    svc = bp(ports=[{"name": "http", "port": 80}, {"name": "admin", "port": 81}, {"name": "db", "port": 5432, "protocol": "tcp"}],
             routes=[{"name": "legacy", "match": {"path": {"prefix": "/old"}}, "to": {"service": "legacy.other", "port": 8000}}])
    out = render(svc)
    names = sorted(r["metadata"]["name"] for r in kinds(out, "HTTPRoute"))
    # same (no) policy: one HTTPRoute per routable port holds both rules, named after the first route
    assert names == ["api-admin-legacy", "api-http-legacy"]
    legacy = one(out, "HTTPRoute", "api-admin-legacy")
    assert legacy["spec"]["parentRefs"][0]["port"] == 81
    assert legacy["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "legacy", "namespace": "other", "port": 8000, "weight": 100}]
    assert legacy["spec"]["rules"][1]["backendRefs"] == [{"group": "", "kind": "Service", "name": "api", "port": 81}]


def test_retry_conditions_linkerd_can_say() -> None:
    svc = bp(retries={"attempts": 4, "on": ["reset", "connect-failure", 503, "gateway-error", "unavailable"]})
    ann = one(render(svc), "HTTPRoute")["metadata"]["annotations"]
    assert ann["retry.linkerd.io/http"] == "503,gateway-error"
    assert ann["retry.linkerd.io/limit"] == "4"
    no_on = one(render(bp(retries={"attempts": 1})), "HTTPRoute")["metadata"]["annotations"]
    assert no_on["retry.linkerd.io/http"] == "5xx"


def test_skipped_features_are_left_out() -> None:
    svc = bp(versions=["v1", "v2"], timeout="4s",
             retries={"attempts": 2, "perTryTimeout": "1s"},
             routes=[{"name": "h", "match": {"headers": {"x": "1"}}, "to": "v2"}, {"to": "v1"}])
    out = render(svc, skipped=frozenset({"routes.match.headers", "retries.perTryTimeout", "timeout"}))
    assert [r["metadata"]["name"] for r in kinds(out, "HTTPRoute")] == ["api-default"]
    ann = one(out, "HTTPRoute")["metadata"]["annotations"]
    assert "retry.linkerd.io/timeout" not in ann and "timeout.linkerd.io/request" not in ann
    assert ann["retry.linkerd.io/limit"] == "2"


# --- legacy flavour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("smi,weights", [("v1alpha1", ["900m", "100m"]), ("v1alpha2", [90, 10])])
@pytest.mark.parametrize("version", VERSIONS)
def test_traffic_split(smi: str, weights: list[Any], version: str) -> None:
    out = render(CANARY, cfg(**LEGACY, smiVersion=smi, version=version))
    ts = one(out, "TrafficSplit")
    assert ts["apiVersion"] == f"split.smi-spec.io/{smi}"
    assert ts["metadata"]["name"] == "api"
    assert ts["spec"] == {"service": "api", "backends": [{"service": "api-v1", "weight": weights[0]},
                                                         {"service": "api-v2", "weight": weights[1]}]}
    assert not kinds(out, "HTTPRoute")


def test_service_profile_routes_timeouts_retries_budget() -> None:
    svc = bp(versions=["v1", "v2"], timeout="10s",
             retries={"attempts": 3, "budget": {"ratio": 0.2, "minPerSecond": 10, "ttl": "10s"}},
             routes=[
                 {"name": "reports", "match": {"path": {"prefix": "/reports/"}, "method": "GET"}, "timeout": "60s", "retries": False},
                 {"name": "orders", "match": {"path": {"exact": "/orders"}, "method": ["POST", "PUT"]}},
                 {"to": {"v1": 80, "v2": 20}},
             ])
    out = render(svc, cfg(**LEGACY))
    sp = one(out, "ServiceProfile")
    assert sp["metadata"]["name"] == "api.prod.svc.cluster.local"
    assert sp["spec"]["routes"] == [
        {"name": "reports", "condition": {"method": "GET", "pathRegex": "^/reports/.*$"}, "timeout": "1m",
         "isRetryable": False},
        {"name": "orders", "condition": {"any": [{"method": "POST", "pathRegex": "^/orders$"},
                                                 {"method": "PUT", "pathRegex": "^/orders$"}]},
         "timeout": "10s", "isRetryable": True},
        {"name": "default", "condition": {"pathRegex": ".*"}, "timeout": "10s", "isRetryable": True},
    ]
    assert sp["spec"]["retryBudget"] == {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"}
    assert one(out, "TrafficSplit")["spec"]["backends"][1] == {"service": "api-v2", "weight": 20}


def test_service_profile_uses_cluster_domain() -> None:
    config = Config.model_validate({"environments": {"prod": {"mesh": "linkerd"}}, "linkerd": LEGACY,
                                    "clusterDomain": "corp.local"})
    sp = one(render(bp(timeout="1s"), config), "ServiceProfile")
    assert sp["metadata"]["name"] == "api.prod.svc.corp.local"


def test_legacy_drops_what_it_cannot_carry() -> None:
    svc = bp(versions=["v1", "v2"], routes=[
        {"name": "h", "match": {"headers": {"x": "1"}}, "to": "v2", "timeout": "1s"},
        {"name": "split", "match": {"path": {"prefix": "/p"}}, "to": {"v1": 50, "v2": 50}},
        {"to": "v1", "timeout": "2s"}])
    out = render(svc, cfg(**LEGACY), skipped=frozenset({"routes.match.headers", "routes.split.matched"}))
    sp = one(out, "ServiceProfile")
    assert [r["name"] for r in sp["spec"]["routes"]] == ["default"]
    assert one(out, "TrafficSplit")["spec"]["backends"] == [{"service": "api-v1", "weight": 100}]


# --- circuit breaker --------------------------------------------------------------------------------


def test_circuit_breaker_annotations_belong_to_the_apex_service() -> None:
    svc = bp(versions=["v1"], circuitBreaker={"consecutive5xxErrors": 5, "baseEjectionTime": "30s", "interval": "10s"})
    assert LinkerdRenderer.apex_annotations(svc) == {
        "balancer.linkerd.io/failure-accrual": "consecutive",
        "balancer.linkerd.io/failure-accrual-consecutive-max-failures": "5",
        "balancer.linkerd.io/failure-accrual-consecutive-min-penalty": "30s",
        "balancer.linkerd.io/failure-accrual-consecutive-max-penalty": "5m",
    }
    out = render(svc)
    assert all("balancer.linkerd.io/failure-accrual" not in b["metadata"]["annotations"] for b in out)
    assert LinkerdRenderer.apex_annotations(bp(circuitBreaker={"interval": "1s"})) == {}


# --- access and mtls ----------------------------------------------------------------------------------


def test_access_rules_identities_and_routes() -> None:
    svc = bp(access=[{"from": ["frontend", "web/mobile", "cluster.local/ns/x/sa/y"], "methods": ["GET"], "paths": ["/api/*"]},
                     {"from": ["admin"]}])
    out = render(svc, cfg(version="2.18"))
    server = one(out, "Server")
    assert server["apiVersion"] == "policy.linkerd.io/v1beta3"
    assert server["spec"] == {"podSelector": {"matchLabels": {"app": "api"}}, "port": 8080, "accessPolicy": "deny"}
    mtls0 = one(out, "MeshTLSAuthentication", "api-access-0")
    assert mtls0["spec"]["identities"] == [
        "frontend.prod.serviceaccount.identity.linkerd.cluster.local",
        "mobile.web.serviceaccount.identity.linkerd.cluster.local",
        "y.x.serviceaccount.identity.linkerd.cluster.local",
    ]
    from render.meaning import allowed_linkerd
    can = lambda who, m, p: allowed_linkerd(out, {"app": "api"}, 8080, who, m, p)
    fe, admin, other = ("cluster.local/ns/prod/sa/frontend", "cluster.local/ns/prod/sa/admin",
                        "cluster.local/ns/prod/sa/other")
    assert can(fe, "GET", "/api/v1/x") and not can(fe, "POST", "/api/v1/x") and not can(fe, "GET", "/other")
    assert can(admin, "GET", "/api/v1/x") and can(admin, "POST", "/other")  # rules are alternatives
    assert not can(other, "GET", "/api/x") and not can(None, "GET", "/api/x")


def test_access_rule_without_from_and_trust_domain() -> None:
    config = Config.model_validate({"environments": {"prod": {"mesh": "linkerd"}}, "trustDomain": "corp.example"})
    out = render(bp(access=[{"methods": ["GET"]}, {"from": ["ops"]}]), config)
    assert one(out, "NetworkAuthentication")["spec"]["networks"] == [{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]
    assert one(out, "MeshTLSAuthentication")["spec"]["identities"] == ["ops.prod.serviceaccount.identity.linkerd.corp.example"]
    out = render(bp(mtls="strict", access=[{"methods": ["GET"]}]))
    assert one(out, "MeshTLSAuthentication")["spec"]["identities"] == ["*"]


def test_access_without_paths_targets_servers() -> None:
    svc = bp(ports=[{"name": "http", "port": 80}, {"name": "grpc", "port": 90, "protocol": "grpc"}], access=[{"from": ["a"]}])
    out = render(svc)
    targets = sorted(p["spec"]["targetRef"]["name"] for p in kinds(out, "AuthorizationPolicy"))
    assert targets == ["api-grpc", "api-http"]
    assert not [r for r in kinds(out, "HTTPRoute")]


@pytest.mark.parametrize("version", VERSIONS)
def test_deny_all(version: str) -> None:
    out = render(bp(access="deny-all"), cfg(version=version))
    server = one(out, "Server")
    assert not kinds(out, "AuthorizationPolicy")
    if version >= "2.16":
        assert server["spec"]["accessPolicy"] == "deny"
    else:  # v1beta2 Servers have no accessPolicy and deny what no policy allows
        assert server["apiVersion"] == "policy.linkerd.io/v1beta2" and "accessPolicy" not in server["spec"]


@pytest.mark.parametrize("version", VERSIONS)
def test_mtls_modes_and_ports(version: str) -> None:
    svc = bp(ports=[{"name": "http", "port": 80, "targetPort": 8080}, {"name": "metrics", "port": 9090}],
             mtls={"mode": "strict", "ports": {9090: "permissive"}})
    out = render(svc, cfg(version=version))
    from render.meaning import allowed_linkerd
    assert allowed_linkerd(out, {"app": "api"}, 8080, "cluster.local/ns/a/sa/b", "GET", "/")
    assert not allowed_linkerd(out, {"app": "api"}, 8080, None, "GET", "/")
    assert allowed_linkerd(out, {"app": "api"}, 9090, None, "GET", "/")
    if version >= "2.16":
        assert {s["metadata"]["name"]: s["spec"]["accessPolicy"] for s in kinds(out, "Server")} == \
            {"api-http": "all-authenticated", "api-metrics": "all-unauthenticated"}
    disabled = render(bp(mtls="disable"), cfg(version=version))
    from render.meaning import allowed_linkerd as allowed
    assert allowed(disabled, {"app": "api"}, 8080, None, "GET", "/")


# --- rate limit, egress ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_rate_limit(version: str) -> None:
    out = render(bp(rateLimit={"requests": 100, "per": "60s"}), cfg(version=version))
    if version < "2.17":
        assert not kinds(out, "HTTPLocalRateLimitPolicy") and not kinds(out, "Server")
        return
    rl = one(out, "HTTPLocalRateLimitPolicy")
    assert rl["spec"] == {"targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "api-http"},
                          "total": {"requestsPerSecond": 2}}
    assert "rounded to 2" in rl["metadata"]["annotations"]["meshgen.dev/rate-limit"]
    # the Server exists only for the limit: it must not change who may call
    assert one(out, "Server")["spec"]["accessPolicy"] == "all-unauthenticated"
    exact = one(render(bp(rateLimit={"requests": 600, "per": "1m"}), cfg(version=version)), "HTTPLocalRateLimitPolicy")
    assert exact["spec"]["total"] == {"requestsPerSecond": 10}
    assert "meshgen.dev/rate-limit" not in exact["metadata"]["annotations"]


@pytest.mark.parametrize("version", VERSIONS)
def test_egress(version: str) -> None:
    out = render(bp(egress=[{"host": "api.stripe.com"}, {"host": "example.com", "port": 80, "protocol": "http"}]),
                 cfg(version=version))
    if version < "2.17":
        assert not kinds(out, "EgressNetwork")
        return
    en = one(out, "EgressNetwork")
    assert en["spec"] == {"trafficPolicy": "Allow"}
    assert en["metadata"]["annotations"]["meshgen.dev/egress-hosts"] == "api.stripe.com:443/tls,example.com:80/http"


# --- ingress ---------------------------------------------------------------------------------------------


def test_ingress_on_existing_gateway() -> None:
    svc = bp(versions=["v1", "v2"], routes=[{"to": {"v1": 50, "v2": 50}}],
             ingress={"hosts": ["api.example.com"], "gateway": "edge/public"})
    route = one(render(svc), "HTTPRoute", "api-ingress")
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "edge"}]
    assert route["spec"]["hostnames"] == ["api.example.com"]
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [50, 50]


# --- observability, namespace, mesh --------------------------------------------------------------------


def test_observability() -> None:
    svc = bp(observability={"serviceMonitor": {"port": "metrics", "interval": "15s"}, "podMonitor": True, "dashboard": True})
    out = render(svc)
    sm = one(out, "ServiceMonitor")
    # the shared builder (render/observability.py): the Prometheus default path /metrics is left implicit
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "interval": "15s"}]
    assert sm["spec"]["selector"] == {"matchLabels": {"app": "api"}}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["prod"]}
    pm = one(out, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"] == [{"port": "linkerd-admin"}]  # the proxy's metrics port
    cm = one(out, "ConfigMap", "api-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    text = cm["data"]["api.json"]
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert json.loads(text)["tags"] == ["meshgen", "linkerd"]
    exprs = [p["targets"][0]["expr"] for p in json.loads(text)["panels"]]
    assert all('direction="inbound"' in e and 'namespace="prod"' in e for e in exprs)
    assert any("request_total" in e for e in exprs)
    assert any('classification="failure"' in e for e in exprs)
    assert any("response_latency_ms_bucket" in e and "0.99" in e for e in exprs)
    assert any('tls="true"' in e for e in exprs)
    assert render(svc) == out


def test_namespace_renders_nothing_it_does_not_own() -> None:
    ns = NamespaceBlueprint.model_validate({"kind": "Namespace", "namespace": "prod", "mtls": "strict", "access": "deny-all"})
    assert LinkerdRenderer().render_namespace(ns, ctx()) == []


def test_mesh_observability_scrapes_proxies_and_control_plane() -> None:
    mesh = MeshBlueprint.model_validate({"kind": "Mesh", "mtls": "strict", "observability": {"serviceMonitor": {"interval": "30s"}}})
    out = [r.body for r in LinkerdRenderer().render_mesh(mesh, ctx())]
    for b in out:
        validate_manifest(b)
    proxy = one(out, "PodMonitor", "linkerd-proxy")
    assert proxy["metadata"]["namespace"] == "linkerd"
    assert proxy["spec"]["namespaceSelector"] == {"any": True}
    ep = proxy["spec"]["podMetricsEndpoints"][0]
    assert (ep["port"], ep["path"], ep["interval"]) == ("linkerd-admin", "/metrics", "30s")
    assert one(out, "PodMonitor", "linkerd-control-plane")["spec"]["podMetricsEndpoints"][0]["port"] == "admin-http"
    assert LinkerdRenderer().render_mesh(MeshBlueprint.model_validate({"kind": "Mesh", "mtls": "strict"}), ctx()) == []


# --- every feature in every flavour validates --------------------------------------------------------------

EVERYTHING = bp(
    ports=[{"name": "http", "port": 8080}, {"name": "tcp", "port": 5432, "protocol": "tcp"}],
    versions=["v1", "v2"],
    routes=[
        {"name": "canary", "match": {"headers": {"x-canary": "true"}}, "to": "v2"},
        {"name": "api", "match": {"path": {"prefix": "/api"}, "method": ["GET"]}, "to": {"v1": 70, "v2": 30},
         "timeout": "2s", "rewrite": "/", "fault": {"abort": {"percent": 1, "status": 503}}},
        {"to": {"v1": 90, "v2": 10}},
    ],
    timeout="10s",
    retries={"attempts": 3, "perTryTimeout": "2s", "on": ["5xx"], "budget": {"ratio": 0.2}},
    loadBalancing="least-request", connectionPool={"maxConnections": 10},
    circuitBreaker={"consecutive5xxErrors": 5, "baseEjectionTime": "30s"},
    mtls={"mode": "strict", "ports": {5432: "permissive"}},
    access=[{"from": ["frontend"], "methods": ["GET"], "paths": ["/api/*", "*.json"]}, {"from": ["ops"]}, {"jwtClaims": {"role": "admin"}}],
    jwt={"issuer": "https://auth.example.com"},
    rateLimit={"requests": 50, "per": "1s"},
    ingress={"hosts": ["api.example.com"], "gateway": "edge/public"},
    egress=[{"host": "api.stripe.com"}],
    telemetry={"tracing": {"samplingPercent": 5}, "accessLogs": True},
    observability={"serviceMonitor": True, "podMonitor": True, "dashboard": True},
)


@pytest.mark.parametrize("linkerd", FLAVOURS, ids=lambda f: "-".join(f.values()))
def test_every_feature_renders_valid_manifests(linkerd: dict[str, str]) -> None:
    config = cfg(**linkerd)
    caps = LinkerdRenderer.capabilities(config)
    from meshgen.render.features import used_features
    skipped = frozenset(k for k, _ in used_features(EVERYTHING) if caps[k].support == "none")
    out = render(EVERYTHING, config, skipped)
    assert kinds(out, "Service")
    assert render(EVERYTHING, config, skipped) == out


def test_long_names_are_shortened_stably() -> None:
    name = dns_name("a" * 40, "b" * 40)
    assert len(name) == 63 and name == dns_name("a" * 40, "b" * 40)
    svc = ServiceBlueprint.model_validate({"service": "s" * 60, "namespace": "prod", "versions": ["version-1"],
                                           "routes": [{"name": "r" * 30, "match": {"path": {"prefix": "/x"}}, "to": "version-1"}]})
    render(svc)


def test_all_combinations_of_versions_and_flavours_render_canary() -> None:
    for version, split, policy in itertools.product(VERSIONS, ("httproute", "smi"), ("annotations", "serviceprofile")):
        render(CANARY, cfg(version=version, trafficSplit=split, routePolicy=policy),
               skipped=frozenset(k for k, c in LinkerdRenderer.capabilities(
                   cfg(version=version, trafficSplit=split, routePolicy=policy)).items() if c.support == "none"))


def test_circuit_breaker_annotations_meshgen_cannot_place_are_handed_to_the_reviewer() -> None:
    from meshgen.blueprint.config import Config
    from meshgen.blueprint.model import ServiceBlueprint
    from meshgen.render.base import RenderContext
    from meshgen.render.linkerd import LinkerdRenderer

    cfg = Config.model_validate({"environments": {"prod": {"mesh": "linkerd"}}})
    svc = ServiceBlueprint.model_validate({"service": "api", "namespace": "shop",
                                           "circuitBreaker": {"consecutive5xxErrors": 5, "baseEjectionTime": "30s"}})
    ctx = RenderContext(config=cfg, env="prod", mesh="linkerd", blueprint_path="blueprints/t/api.yaml")
    docs = LinkerdRenderer().render_service(svc, ctx)
    assert not any("failure-accrual" in str(d.body) for d in docs)  # the apex Service is not meshgen's
    assert ctx.notes == [
        'circuitBreaker: add to the Service shop/api (not managed by meshgen) the annotations '
        'balancer.linkerd.io/failure-accrual: "consecutive", '
        'balancer.linkerd.io/failure-accrual-consecutive-max-failures: "5", '
        'balancer.linkerd.io/failure-accrual-consecutive-min-penalty: "30s", '
        'balancer.linkerd.io/failure-accrual-consecutive-max-penalty: "5m"'
    ]


@pytest.mark.parametrize("to, warned", [
    (None, False),  # a matched route without `to` goes where the default route goes: nothing is lost
    ("{v1: 90, v2: 10}", False),  # the same destinations as the default route
    ("v2", True),  # a destination of its own: the TrafficSplit is service-wide, only timeout/retries apply
])
def test_smi_serviceprofile_warns_only_when_a_matched_route_goes_elsewhere(tmp_path: Any, to: str | None,
                                                                           warned: bool) -> None:
    """Under trafficSplit: smi + routePolicy: serviceprofile a matched route keeps its timeout and retries
    (a ServiceProfile route) but cannot have destinations of its own; the partial warning says so, at the
    route's `to`, and only when it has one that differs from the default route's."""
    from helpers import write_repo

    from meshgen.pipeline import render_repository

    route = "  - name: api\n    match: {path: {prefix: /api/}, method: [GET]}\n    timeout: 2s\n"
    if to is not None:
        route += f"    to: {to}\n"
    blueprint = f"service: cart\nnamespace: shop\nversions: [v1, v2]\nroutes:\n{route}  - to: {{v1: 90, v2: 10}}\n"
    config = ("environments:\n  prod: {mesh: linkerd}\n"
              "linkerd: {version: '2.14', trafficSplit: smi, routePolicy: serviceprofile}\n")
    result = render_repository(write_repo(tmp_path, {"shop/cart.yaml": blueprint}, config=config))
    warnings = [str(d) for d in result.warnings]
    expected = ("blueprints/shop/cart.yaml:8:5: warning: routes[0].to: linkerd 2.14 smi-v1alpha2+serviceprofile "
                "expresses this only in part: the route's timeout and retries only (a ServiceProfile route): with "
                "trafficSplit: smi a matched route cannot go to another version or service than the default route")
    assert warnings == ([expected] if warned else []), warnings
    profile = next(yaml_doc for yaml_doc in _docs(result) if yaml_doc["kind"] == "ServiceProfile")
    (api,) = [r for r in profile["spec"]["routes"] if r["name"] == "api"]
    assert api["timeout"] == "2s" and api["condition"]["method"] == "GET"


def _docs(result: Any) -> list[dict[str, Any]]:
    import yaml

    return [yaml.safe_load(data) for unit in result.units for data in unit.files.values()]
