"""The Istio renderer: what each blueprint field means once rendered, and that every
rendered document passes strict schema validation against the upstream CRDs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from k8s_schema import validate_manifest

from meshgen.blueprint.config import Config
from meshgen.blueprint.model import MeshBlueprint, NamespaceBlueprint, ServiceBlueprint
from meshgen.render.base import Capability, RenderContext
from meshgen.render.features import FEATURES, used_features
from meshgen.render.istio import IstioRenderer, dns_name, prometheus_duration, proto_seconds

DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
GO_DURATION = re.compile(r"((\d+(\.\d+)?)(h|m|s|ms|us|ns))+\Z")  # what Go's time.ParseDuration takes


# --- helpers -----------------------------------------------------------------------------------


def config(version: str = "1.24", **extra: Any) -> Config:
    return Config.model_validate(
        {"environments": {"prod": {"mesh": "istio"}}, "istio": {"version": version}, **extra}
    )


def context(cfg: Config | None = None, skipped: frozenset[str] = frozenset()) -> RenderContext:
    return RenderContext(
        config=cfg or config(),
        env="prod",
        mesh="istio",
        blueprint_path="blueprints/t/x.yaml",
        team="t",
        skipped=skipped,
    )


def service(**fields: Any) -> ServiceBlueprint:
    return ServiceBlueprint.model_validate({"service": "api", "namespace": "prod", **fields})


def _check_plain(value: Any, where: str = "") -> None:
    if isinstance(value, dict):
        assert type(value) is dict, where
        for k, v in value.items():
            assert type(k) is str, f"{where}: key {k!r}"
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, list):
        assert type(value) is list, where
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    else:
        assert type(value) in (str, int, float, bool), f"{where}: {type(value).__name__}"


def _checked(resources: list[Any]) -> list[dict[str, Any]]:
    docs = []
    for r in resources:
        validate_manifest(r.body)
        _check_plain(r.body, f"{r.kind}/{r.name}")
        meta = r.body["metadata"]
        assert len(meta["name"]) <= 63 and DNS1123.match(meta["name"]), meta["name"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "meshgen"
        assert meta["labels"]["meshgen.dev/team"] == "t"
        assert meta["annotations"]["meshgen.dev/blueprint"] == "blueprints/t/x.yaml"
        docs.append(r.body)
    # no two resources of one kind share a name in a namespace
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), keys
    return docs


def render(svc: ServiceBlueprint, ctx: RenderContext | None = None) -> list[dict[str, Any]]:
    docs = _checked(IstioRenderer().render_service(svc, ctx or context()))
    for d in docs:
        assert d["metadata"]["namespace"] == svc.namespace
        assert d["metadata"]["labels"]["meshgen.dev/service"] == svc.service
    return docs


def render_ns(data: dict[str, Any], ctx: RenderContext | None = None) -> list[dict[str, Any]]:
    ns = NamespaceBlueprint.model_validate({"kind": "Namespace", **data})
    return _checked(IstioRenderer().render_namespace(ns, ctx or context()))


def render_mesh(data: dict[str, Any], ctx: RenderContext | None = None) -> list[dict[str, Any]]:
    mesh = MeshBlueprint.model_validate({"kind": "Mesh", **data})
    return _checked(IstioRenderer().render_mesh(mesh, ctx or context()))


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return [d["kind"] for d in docs]


def http_routes(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return only(docs, "VirtualService")["spec"]["http"]


VERSIONS = {"v1": {"version": "v1"}, "v2": {"version": "v2"}}

# A blueprint that uses every Service feature at once.
EVERYTHING: dict[str, Any] = {
    "ports": [{"name": "http", "port": 8080, "targetPort": 9090}],
    "versions": VERSIONS,
    "routes": [
        {
            "name": "canary",
            "match": {"headers": {"x-canary": "true"}, "path": {"prefix": "/v2/"}, "method": ["GET", "POST"]},
            "to": [{"version": "v2", "weight": 50}, {"service": "legacy", "weight": 50}],
            "rewrite": "/",
            "timeout": "3s",
            "retries": {"attempts": 3, "perTryTimeout": "1s", "on": ["5xx"], "budget": {"ratio": 0.2}},
            "fault": {"delay": {"percent": 10, "duration": "5s"}, "abort": {"percent": 5, "status": 503}},
        },
        {"to": {"v1": 90, "v2": 10}},
    ],
    "timeout": "10s",
    "loadBalancing": "least-request",
    "connectionPool": {"maxConnections": 10},
    "circuitBreaker": {
        "consecutive5xxErrors": 5,
        "consecutiveGatewayErrors": 3,
        "consecutiveLocalOriginFailures": 2,
        "interval": "30s",
        "baseEjectionTime": "1m",
        "maxEjectionPercent": 50,
        "minHealthPercent": 40,
    },
    "mtls": {"mode": "strict", "ports": {8080: "permissive"}},
    "access": [{"from": ["web"], "methods": ["GET"], "paths": ["/api/*"]}, {"jwtClaims": {"role": "admin"}}],
    "jwt": {"issuer": "https://auth.example.com", "jwksUri": "https://auth.example.com/jwks.json"},
    "rateLimit": {"requests": 100, "per": "1m"},
    "ingress": {"hosts": ["api.example.com"], "tls": {"credentialName": "api-cert"}},
    "egress": [{"host": "api.stripe.com"}],
    "telemetry": {
        "tracing": {"samplingPercent": 5},
        "accessLogs": True,
        "metrics": {"provider": "prometheus"},
    },
    "observability": {
        "serviceMonitor": {"port": "http-metrics"},
        "podMonitor": {"port": "metrics"},
        "dashboard": True,
    },
}


# --- declarations --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.21", "1.24"])
def test_capabilities_cover_exactly_the_feature_keys(version: str) -> None:
    caps = IstioRenderer.capabilities(config(version))
    assert set(caps) == set(FEATURES)
    for key, cap in caps.items():
        assert isinstance(cap, Capability)
        assert cap.support in ("full", "partial", "none"), key
        assert cap.note, f"{key} needs a note saying how it is expressed or what is lost"
    assert caps["retries.budget"].support == "none"
    assert "budget" in caps["retries.budget"].note


def test_flavours_name_the_release() -> None:
    assert IstioRenderer.mesh == "istio"
    assert IstioRenderer.flavours(config("1.24")) == "istio 1.24"
    assert IstioRenderer.flavours(config("1.21.3")) == "istio 1.21"


def test_a_bare_service_needs_nothing() -> None:
    assert render(service()) == []


# --- API versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "networking", "security", "telemetry"),
    [
        ("1.21", "networking.istio.io/v1beta1", "security.istio.io/v1beta1", "telemetry.istio.io/v1alpha1"),
        ("1.22", "networking.istio.io/v1", "security.istio.io/v1", "telemetry.istio.io/v1"),
        ("1.24", "networking.istio.io/v1", "security.istio.io/v1", "telemetry.istio.io/v1"),
    ],
)
def test_api_versions_follow_the_istio_release(
    version: str, networking: str, security: str, telemetry: str
) -> None:
    docs = render(service(**EVERYTHING), context(config(version)))
    expected = {
        "Gateway": networking,
        "VirtualService": networking,
        "DestinationRule": networking,
        "ServiceEntry": networking,
        "PeerAuthentication": security,
        "RequestAuthentication": security,
        "AuthorizationPolicy": security,
        "Telemetry": telemetry,
        "EnvoyFilter": "networking.istio.io/v1alpha3",
        "ServiceMonitor": "monitoring.coreos.com/v1",
        "PodMonitor": "monitoring.coreos.com/v1",
        "ConfigMap": "v1",
    }
    assert sorted(kinds(docs)) == sorted(expected)
    for d in docs:
        assert d["apiVersion"] == expected[d["kind"]], d["kind"]


def test_everything_renders_in_a_stable_order_and_deterministically() -> None:
    first = render(service(**EVERYTHING))
    second = render(service(**EVERYTHING))
    assert json.dumps(first) == json.dumps(second)
    assert kinds(first) == [
        "Gateway",
        "VirtualService",
        "DestinationRule",
        "PeerAuthentication",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "EnvoyFilter",
        "ServiceEntry",
        "Telemetry",
        "ServiceMonitor",
        "PodMonitor",
        "ConfigMap",
    ]


# --- routing ---------------------------------------------------------------------------------------


def test_weighted_split_goes_to_version_subsets() -> None:
    docs = render(service(versions=VERSIONS, routes=[{"to": {"v1": 90, "v2": 10}}]))
    vs = only(docs, "VirtualService")
    assert vs["metadata"]["name"] == "api"
    assert vs["spec"]["hosts"] == ["api"]
    assert "gateways" not in vs["spec"]
    [route] = vs["spec"]["http"]
    assert route["name"] == "default"
    assert "match" not in route
    assert route["route"] == [
        {"destination": {"host": "api", "subset": "v1"}, "weight": 90},
        {"destination": {"host": "api", "subset": "v2"}, "weight": 10},
    ]
    dr = only(docs, "DestinationRule")
    assert dr["spec"]["host"] == "api"
    assert dr["spec"]["subsets"] == [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]
    assert "trafficPolicy" not in dr["spec"]


def test_version_labels_are_the_ones_written() -> None:
    docs = render(service(versions={"blue": {"track": "blue", "tier": "web"}}, routes=[{"to": "blue"}]))
    assert only(docs, "DestinationRule")["spec"]["subsets"] == [
        {"name": "blue", "labels": {"track": "blue", "tier": "web"}}
    ]
    [route] = http_routes(docs)
    assert route["route"] == [
        {"destination": {"host": "api", "subset": "blue"}}
    ]  # one destination: no weight


def test_matches_headers_path_and_one_entry_per_method() -> None:
    docs = render(
        service(
            versions=VERSIONS,
            routes=[
                {
                    "name": "canary",
                    "match": {
                        "headers": {
                            "x-canary": "true",
                            "x-user": {"prefix": "qa-"},
                            "x-id": {"regex": "[0-9]+"},
                        },
                        "path": {"prefix": "/v2/"},
                        "method": ["GET", "POST"],
                    },
                    "to": "v2",
                },
                {"to": "v1"},
            ],
        )
    )
    canary, default = http_routes(docs)
    assert canary["name"] == "canary"
    condition = {
        "headers": {"x-canary": {"exact": "true"}, "x-user": {"prefix": "qa-"}, "x-id": {"regex": "[0-9]+"}},
        "uri": {"prefix": "/v2/"},
    }
    # Istio ANDs the fields of one match entry and ORs the entries: GET-or-POST is two entries,
    # each with every other condition.
    assert canary["match"] == [
        {**condition, "method": {"exact": "GET"}},
        {**condition, "method": {"exact": "POST"}},
    ]
    assert canary["route"] == [{"destination": {"host": "api", "subset": "v2"}}]
    assert default["name"] == "default" and "match" not in default
    assert default["route"] == [{"destination": {"host": "api", "subset": "v1"}}]


def test_single_method_and_exact_and_regex_paths() -> None:
    docs = render(
        service(
            routes=[
                {"match": {"path": "/health", "method": "GET"}, "to": {"service": "health"}},
                {"match": {"path": {"regex": "/items/[0-9]+"}}, "to": {"service": "items"}},
            ]
        )
    )
    first, second, default = http_routes(docs)
    assert first["match"] == [{"uri": {"exact": "/health"}, "method": {"exact": "GET"}}]
    assert second["match"] == [{"uri": {"regex": "/items/[0-9]+"}}]
    # the last route has a match, so an implicit default sends the rest to the whole service
    assert default["name"] == "default"
    assert default["route"] == [{"destination": {"host": "api"}}]


def test_route_without_to_follows_the_default_route() -> None:
    docs = render(
        service(
            versions=VERSIONS,
            routes=[
                {"name": "slow", "match": {"path": {"prefix": "/report"}}, "timeout": "1m"},
                {"to": "v2"},
            ],
        )
    )
    slow, default = http_routes(docs)
    assert slow["route"] == [{"destination": {"host": "api", "subset": "v2"}}]
    assert slow["timeout"] == "1m"
    assert default["route"] == slow["route"]


def test_other_services_as_destinations_with_port() -> None:
    docs = render(
        service(
            routes=[
                {
                    "match": {"path": {"prefix": "/legacy"}},
                    "to": [
                        {"service": "legacy", "weight": 20},
                        {
                            "service": "new.other.svc.cluster.local",
                            "version": "v3",
                            "port": 8080,
                            "weight": 80,
                        },
                    ],
                }
            ]
        )
    )
    legacy, default = http_routes(docs)
    assert legacy["route"] == [
        {"destination": {"host": "legacy"}, "weight": 20},
        {
            "destination": {"host": "new.other.svc.cluster.local", "subset": "v3", "port": {"number": 8080}},
            "weight": 80,
        },
    ]
    assert default["route"] == [{"destination": {"host": "api"}}]
    assert "DestinationRule" not in kinds(docs)  # this service declares no versions


def test_rewrite_timeout_and_retries() -> None:
    docs = render(
        service(
            timeout="10s",
            retries={"attempts": 3, "perTryTimeout": "500ms", "on": ["5xx", "reset", "connect-failure", 503]},
            routes=[
                {"name": "api", "match": {"path": {"prefix": "/api/"}}, "rewrite": "/", "timeout": "1m30s"},
                {"name": "upload", "match": {"path": {"prefix": "/upload"}}, "retries": False},
                {
                    "name": "fast",
                    "match": {"path": {"prefix": "/fast"}},
                    "retries": {"attempts": 1},
                    "timeout": "250ms",
                },
            ],
        )
    )
    api, upload, fast, default = http_routes(docs)
    service_retries = {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,reset,connect-failure,503"}
    assert api["rewrite"] == {"uri": "/"}
    assert api["timeout"] == "1m30s"
    assert api["retries"] == service_retries
    assert upload["timeout"] == "10s"
    assert upload["retries"] == {"attempts": 0}  # never retry, even though the service retries
    assert fast["retries"] == {"attempts": 1}
    assert fast["timeout"] == "250ms"
    assert default["timeout"] == "10s" and default["retries"] == service_retries
    for route in (api, upload, fast, default):
        for value in (route.get("timeout"), route.get("retries", {}).get("perTryTimeout")):
            assert value is None or GO_DURATION.match(value), value


def test_service_level_timeout_alone_renders_a_virtual_service() -> None:
    docs = render(service(timeout="5s"))
    [route] = http_routes(docs)
    assert route == {"name": "default", "route": [{"destination": {"host": "api"}}], "timeout": "5s"}


def test_service_level_never_retry() -> None:
    [route] = http_routes(render(service(retries=False)))
    assert route["retries"] == {"attempts": 0}


def test_faults() -> None:
    docs = render(
        service(
            routes=[
                {
                    "name": "chaos",
                    "match": {"headers": {"x-chaos": "1"}},
                    "fault": {
                        "delay": {"percent": 10, "duration": "5s"},
                        "abort": {"percent": 2.5, "status": 503},
                    },
                },
            ]
        )
    )
    chaos, default = http_routes(docs)
    assert chaos["fault"] == {
        "delay": {"percentage": {"value": 10}, "fixedDelay": "5s"},
        "abort": {"percentage": {"value": 2.5}, "httpStatus": 503},
    }
    assert "fault" not in default


def test_no_routing_no_virtual_service() -> None:
    docs = render(service(versions=VERSIONS, loadBalancing="random"))
    assert kinds(docs) == ["DestinationRule"]


# --- ingress ------------------------------------------------------------------------------------------


def test_ingress_without_gateway_renders_an_http_gateway() -> None:
    docs = render(service(ingress={"hosts": ["api.example.com", "www.example.com"]}))
    gw = only(docs, "Gateway")
    assert gw["metadata"]["name"] == "api-gateway"
    assert gw["spec"]["selector"] == {"istio": "ingressgateway"}
    assert gw["spec"]["servers"] == [
        {
            "port": {"number": 80, "name": "http", "protocol": "HTTP"},
            "hosts": ["api.example.com", "www.example.com"],
        }
    ]
    vs = only(docs, "VirtualService")
    assert vs["spec"]["hosts"] == ["api", "api.example.com", "www.example.com"]
    assert vs["spec"]["gateways"] == ["api-gateway", "mesh"]
    assert vs["spec"]["http"] == [{"name": "default", "route": [{"destination": {"host": "api"}}]}]


@pytest.mark.parametrize("mode", ["simple", "mutual"])
def test_ingress_tls_serves_https_and_redirects_http(mode: str) -> None:
    cfg = Config.model_validate(
        {"environments": {"prod": {}}, "istio": {"ingressSelector": {"app": "edge-gw"}}}
    )
    docs = render(
        service(ingress={"hosts": ["api.example.com"], "tls": {"credentialName": "api-cert", "mode": mode}}),
        context(cfg),
    )
    gw = only(docs, "Gateway")
    assert gw["spec"]["selector"] == {"app": "edge-gw"}
    https, http = gw["spec"]["servers"]
    assert https == {
        "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
        "hosts": ["api.example.com"],
        "tls": {"mode": mode.upper(), "credentialName": "api-cert"},
    }
    assert http == {
        "port": {"number": 80, "name": "http", "protocol": "HTTP"},
        "hosts": ["api.example.com"],
        "tls": {"httpsRedirect": True},
    }


@pytest.mark.parametrize("gateway", ["edge", "istio-ingress/public"])
def test_ingress_bound_to_an_existing_gateway_renders_none(gateway: str) -> None:
    docs = render(service(ingress={"hosts": ["api.example.com"], "gateway": gateway}))
    assert "Gateway" not in kinds(docs)
    vs = only(docs, "VirtualService")
    assert vs["spec"]["gateways"] == [gateway, "mesh"]
    assert vs["spec"]["hosts"] == ["api", "api.example.com"]


# --- DestinationRule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("round-robin", {"simple": "ROUND_ROBIN"}),
        ("least-request", {"simple": "LEAST_REQUEST"}),
        ("random", {"simple": "RANDOM"}),
        ({"consistentHash": {"header": "x-user-id"}}, {"consistentHash": {"httpHeaderName": "x-user-id"}}),
        ({"consistentHash": {"cookie": "session"}}, {"consistentHash": {"httpCookie": {"name": "session"}}}),
        ({"consistentHash": {"sourceIp": True}}, {"consistentHash": {"useSourceIp": True}}),
        (
            {"consistentHash": {"queryParameter": "user"}},
            {"consistentHash": {"httpQueryParameterName": "user"}},
        ),
    ],
)
def test_load_balancing(written: Any, expected: dict[str, Any]) -> None:
    dr = only(render(service(loadBalancing=written)), "DestinationRule")
    assert dr["spec"] == {"host": "api", "trafficPolicy": {"loadBalancer": expected}}


def test_connection_pool() -> None:
    dr = only(
        render(
            service(
                connectionPool={
                    "maxConnections": 100,
                    "maxPendingRequests": 50,
                    "maxRequests": 1000,
                    "maxRequestsPerConnection": 2,
                    "h2Upgrade": True,
                }
            )
        ),
        "DestinationRule",
    )
    assert dr["spec"]["trafficPolicy"]["connectionPool"] == {
        "tcp": {"maxConnections": 100},
        "http": {
            "http1MaxPendingRequests": 50,
            "http2MaxRequests": 1000,
            "maxRequestsPerConnection": 2,
            "h2UpgradePolicy": "UPGRADE",
        },
    }
    dr = only(render(service(connectionPool={"h2Upgrade": False})), "DestinationRule")
    assert dr["spec"]["trafficPolicy"]["connectionPool"] == {"http": {"h2UpgradePolicy": "DO_NOT_UPGRADE"}}


def test_circuit_breaker_is_outlier_detection() -> None:
    dr = only(render(service(**{k: EVERYTHING[k] for k in ("circuitBreaker",)})), "DestinationRule")
    assert dr["spec"]["trafficPolicy"]["outlierDetection"] == {
        "consecutive5xxErrors": 5,
        "consecutiveGatewayErrors": 3,
        "consecutiveLocalOriginFailures": 2,
        "splitExternalLocalOriginErrors": True,  # local-origin failures only count apart when split
        "interval": "30s",
        "baseEjectionTime": "1m",
        "maxEjectionPercent": 50,
        "minHealthPercent": 40,
    }
    od = only(render(service(circuitBreaker={"consecutive5xxErrors": 3})), "DestinationRule")["spec"][
        "trafficPolicy"
    ]
    assert od == {"outlierDetection": {"consecutive5xxErrors": 3}}


# --- mTLS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "istio"), [("strict", "STRICT"), ("permissive", "PERMISSIVE"), ("disable", "DISABLE")]
)
def test_mtls_modes(mode: str, istio: str) -> None:
    pa = only(render(service(mtls=mode, workload={"app": "api-server", "tier": "web"})), "PeerAuthentication")
    assert pa["metadata"]["name"] == "api"
    assert pa["spec"] == {
        "selector": {"matchLabels": {"app": "api-server", "tier": "web"}},
        "mtls": {"mode": istio},
    }


def test_port_level_mtls_uses_the_workload_port() -> None:
    pa = only(
        render(
            service(
                ports=[{"name": "http", "port": 80, "targetPort": 8080}, {"name": "admin", "port": 9000}],
                mtls={"mode": "strict", "ports": {80: "disable", 9000: "permissive"}},
            )
        ),
        "PeerAuthentication",
    )
    assert pa["spec"]["selector"] == {"matchLabels": {"app": "api"}}
    assert pa["spec"]["mtls"] == {"mode": "STRICT"}
    assert pa["spec"]["portLevelMtls"] == {"8080": {"mode": "DISABLE"}, "9000": {"mode": "PERMISSIVE"}}


# --- access and JWT --------------------------------------------------------------------------------------


def test_access_rules_become_allow_rules_with_principals_in_order() -> None:
    ap = only(
        render(
            service(
                access=[
                    {
                        "from": ["web", "mobile/app", "other.domain/ns/x/sa/y"],
                        "methods": ["GET", "POST"],
                        "paths": ["/api/v1/*"],
                    },
                    {"from": "admin"},
                    {"methods": ["GET"], "paths": ["/health"]},
                ]
            ),
            context(Config.model_validate({"environments": {"prod": {}}, "trustDomain": "corp.example"})),
        ),
        "AuthorizationPolicy",
    )
    spec = ap["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "api"}}
    assert spec["action"] == "ALLOW"
    assert spec["rules"] == [
        {
            "from": [
                {
                    "source": {
                        "principals": [
                            "corp.example/ns/prod/sa/web",  # `sa`: same namespace as the service
                            "corp.example/ns/mobile/sa/app",  # `ns/sa`
                            "other.domain/ns/x/sa/y",  # a full principal, as written
                        ]
                    }
                }
            ],
            "to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/api/v1/*"]}}],
        },
        {"from": [{"source": {"principals": ["corp.example/ns/prod/sa/admin"]}}]},
        {"to": [{"operation": {"methods": ["GET"], "paths": ["/health"]}}]},
    ]


def test_jwt_claims_need_a_valid_token_and_a_claim_value() -> None:
    docs = render(
        service(
            jwt={
                "issuer": "https://auth.example.com",
                "jwksUri": "https://auth.example.com/.well-known/jwks.json",
                "audiences": "api.example.com",
                "forwardOriginalToken": True,
            },
            access=[
                {"jwtClaims": {"role": ["admin", "user"], "tenant": "acme"}},
                {"from": ["ops"], "jwtClaims": {"role": "ops"}},
            ],
        )
    )
    ra = only(docs, "RequestAuthentication")
    assert ra["spec"] == {
        "selector": {"matchLabels": {"app": "api"}},
        "jwtRules": [
            {
                "issuer": "https://auth.example.com",
                "jwksUri": "https://auth.example.com/.well-known/jwks.json",
                "audiences": ["api.example.com"],
                "forwardOriginalToken": True,
            }
        ],
    }
    claims, both = only(docs, "AuthorizationPolicy")["spec"]["rules"]
    assert claims == {
        "from": [{"source": {"requestPrincipals": ["*"]}}],
        "when": [
            {"key": "request.auth.claims[role]", "values": ["admin", "user"]},
            {"key": "request.auth.claims[tenant]", "values": ["acme"]},
        ],
    }
    # Conditions of one rule must all hold: the principal and the token sit in one source.
    assert both == {
        "from": [{"source": {"principals": ["cluster.local/ns/prod/sa/ops"], "requestPrincipals": ["*"]}}],
        "when": [{"key": "request.auth.claims[role]", "values": ["ops"]}],
    }


def test_empty_access_denies_everything_to_the_workload() -> None:
    ap = only(render(service(access=[])), "AuthorizationPolicy")
    assert ap["spec"] == {"selector": {"matchLabels": {"app": "api"}}, "action": "ALLOW"}
    assert "rules" not in ap["spec"]  # an ALLOW policy that matches nothing denies all
    assert "denied" in ap["metadata"]["annotations"]["meshgen.dev/note"]


def test_no_access_no_policy() -> None:
    assert "AuthorizationPolicy" not in kinds(render(service(mtls="strict")))


# --- rate limit -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per", "interval"), [("1m", "60s"), ("1s", "1s"), ("500ms", "0.5s"), ("1h", "3600s"), ("1m30s", "90s")]
)
def test_rate_limit_is_an_enforced_local_rate_limit(per: str, interval: str) -> None:
    ef = only(
        render(service(rateLimit={"requests": 100, "per": per}, workload={"app": "api", "track": "stable"})),
        "EnvoyFilter",
    )
    assert ef["apiVersion"] == "networking.istio.io/v1alpha3"
    assert ef["metadata"]["name"] == "api-ratelimit"
    spec = ef["spec"]
    assert spec["workloadSelector"] == {"labels": {"app": "api", "track": "stable"}}
    [patch] = spec["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER"
    assert patch["match"] == {
        "context": "SIDECAR_INBOUND",
        "listener": {
            "filterChain": {
                "filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": {"name": "envoy.filters.http.router"},
                }
            }
        },
    }
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    value = patch["patch"]["value"]
    assert value["name"] == "envoy.filters.http.local_ratelimit"
    typed = value["typed_config"]
    assert typed["@type"] == "type.googleapis.com/udpa.type.v1.TypedStruct"
    assert (
        typed["type_url"]
        == "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
    )
    limiter = typed["value"]
    assert limiter["stat_prefix"] == "http_local_rate_limiter"
    assert limiter["token_bucket"] == {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": interval}
    all_requests = {"numerator": 100, "denominator": "HUNDRED"}
    # enabled alone only counts; enforced is what rejects with 429
    assert limiter["filter_enabled"] == {
        "runtime_key": "local_rate_limit_enabled",
        "default_value": all_requests,
    }
    assert limiter["filter_enforced"] == {
        "runtime_key": "local_rate_limit_enforced",
        "default_value": all_requests,
    }
    [header] = limiter["response_headers_to_add"]
    assert header["header"] == {"key": "x-local-rate-limit", "value": "true"}


# --- egress ------------------------------------------------------------------------------------------------


def test_egress_service_entries() -> None:
    docs = render(
        service(
            egress=[
                {"host": "api.stripe.com"},
                {"host": "hooks.slack.com", "port": 80, "protocol": "http"},
                {"host": "pubsub.googleapis.com", "port": 443, "protocol": "grpc"},
            ]
        )
    )
    entries = [d for d in docs if d["kind"] == "ServiceEntry"]
    assert [e["metadata"]["name"] for e in entries] == [
        "api-egress-api-stripe-com",
        "api-egress-hooks-slack-com",
        "api-egress-pubsub-googleapis-com",
    ]
    assert entries[0]["spec"] == {
        "hosts": ["api.stripe.com"],
        "ports": [{"number": 443, "name": "tls-443", "protocol": "TLS"}],
        "location": "MESH_EXTERNAL",
        "resolution": "DNS",
        "exportTo": ["."],
    }
    assert entries[1]["spec"]["ports"] == [{"number": 80, "name": "http-80", "protocol": "HTTP"}]
    assert entries[2]["spec"]["ports"] == [{"number": 443, "name": "grpc-443", "protocol": "GRPC"}]


def test_egress_same_host_twice_is_one_entry_and_wildcards_do_not_resolve() -> None:
    docs = render(
        service(
            egress=[
                {"host": "api.example.com", "port": 443, "protocol": "https"},
                {"host": "api.example.com", "port": 80, "protocol": "http"},
                {"host": "*.example.org", "port": 443, "protocol": "tls"},
            ]
        )
    )
    first, wildcard = [d for d in docs if d["kind"] == "ServiceEntry"]
    assert first["spec"]["ports"] == [
        {"number": 443, "name": "https-443", "protocol": "HTTPS"},
        {"number": 80, "name": "http-80", "protocol": "HTTP"},
    ]
    assert wildcard["metadata"]["name"] == "api-egress-wildcard-example-org"
    assert wildcard["spec"]["hosts"] == ["*.example.org"]
    assert wildcard["spec"]["resolution"] == "NONE"


def test_long_names_stay_dns_labels_and_stable() -> None:
    long_service = "a" * 30
    long_host = "very-long-subdomain-name." * 4 + "example.com"
    svc = service(
        service=long_service,
        egress=[{"host": long_host}],
        rateLimit={"requests": 1, "per": "1s"},
        ingress={"hosts": ["x.example.com"]},
        observability={"dashboard": True},
    )
    docs = render(svc)  # _checked asserts every name is a DNS-1123 label of at most 63 characters
    names = [d["metadata"]["name"] for d in docs]
    assert names == [d["metadata"]["name"] for d in render(svc)]
    se = only(docs, "ServiceEntry")["metadata"]["name"]
    assert len(se) == 63 and se.startswith(long_service + "-egress-")
    other = dns_name(long_service, "egress", ("other-" + long_host).replace(".", "-"))
    assert other != se
    assert dns_name("api", "ratelimit") == "api-ratelimit"


# --- telemetry and observability ------------------------------------------------------------------------------


def test_telemetry() -> None:
    tel = only(
        render(
            service(
                telemetry={
                    "tracing": {"provider": "zipkin", "samplingPercent": 10},
                    "accessLogs": True,
                    "metrics": {"provider": "prometheus"},
                }
            )
        ),
        "Telemetry",
    )
    assert tel["metadata"]["name"] == "api"
    assert tel["spec"] == {
        "selector": {"matchLabels": {"app": "api"}},
        "tracing": [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": 10}],
        "accessLogging": [{"providers": [{"name": "envoy"}]}],
        "metrics": [{"providers": [{"name": "prometheus"}]}],
    }


def test_telemetry_switched_off() -> None:
    tel = only(render(service(telemetry={"accessLogs": False, "metrics": False})), "Telemetry")
    assert tel["spec"]["accessLogging"] == [{"disabled": True}]
    assert tel["spec"]["metrics"] == [{"overrides": [{"match": {"metric": "ALL_METRICS"}, "disabled": True}]}]
    assert "tracing" not in tel["spec"]


def test_service_and_pod_monitors() -> None:
    docs = render(
        service(
            workload={"app.kubernetes.io/name": "api"},
            observability={
                "serviceMonitor": {"port": "http-metrics", "interval": "30s", "path": "/metrics"},
                "podMonitor": {"port": "metrics", "interval": "1.5s"},
            },
        )
    )
    sm = only(docs, "ServiceMonitor")
    # Assumption (documented on the resource): the Kubernetes Service is labelled app=<service>.
    assert sm["spec"] == {
        "selector": {"matchLabels": {"app": "api"}},
        "namespaceSelector": {"matchNames": ["prod"]},
        "endpoints": [{"port": "http-metrics", "path": "/metrics", "interval": "30s"}],
    }
    assert "app=api" in sm["metadata"]["annotations"]["meshgen.dev/note"]
    pm = only(docs, "PodMonitor")
    assert pm["spec"] == {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
        "namespaceSelector": {"matchNames": ["prod"]},
        "podMetricsEndpoints": [{"port": "metrics", "interval": "1s500ms"}],  # Prometheus has no "1.5s"
    }


def test_service_monitor_defaults_to_the_first_port() -> None:
    sm = only(
        render(service(ports=[{"name": "web", "port": 8080}], observability={"serviceMonitor": True})),
        "ServiceMonitor",
    )
    assert sm["spec"]["endpoints"] == [{"port": "web"}]


def test_dashboard_configmap_with_golden_signals() -> None:
    docs = render(service(service="checkout", namespace="shop", observability={"dashboard": True}))
    cm = only(docs, "ConfigMap")
    assert cm["metadata"]["name"] == "checkout-dashboard"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(cm["data"]) == ["checkout.json"]
    text = cm["data"]["checkout.json"]
    dashboard = json.loads(text)
    assert text == json.dumps(dashboard, indent=2, sort_keys=True) + "\n"  # canonical, so diffs are stable
    sel = 'reporter="destination",destination_service_name="checkout",destination_service_namespace="shop"'
    total = f"sum(rate(istio_requests_total{{{sel}}}[5m]))"
    exprs = {p["title"]: p["targets"][0]["expr"] for p in dashboard["panels"]}
    assert exprs == {
        "Request rate": total,
        "Error rate (5xx share)": f'sum(rate(istio_requests_total{{{sel},response_code=~"5.."}}[5m])) / {total}',
        "Latency p99": f"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[5m])) by (le))",
        "mTLS share": f'sum(rate(istio_requests_total{{{sel},connection_security_policy="mutual_tls"}}[5m])) / {total}',
    }
    assert len(dashboard["uid"]) <= 40
    assert (
        only(
            render(service(service="checkout", namespace="shop", observability={"dashboard": True})),
            "ConfigMap",
        )
        == cm
    )


# --- kind: Namespace and kind: Mesh ------------------------------------------------------------------------------


def test_namespace_defaults() -> None:
    docs = render_ns({"namespace": "payments", "team": "t", "mtls": "permissive", "access": "deny-all"})
    pa = only(docs, "PeerAuthentication")
    assert pa["metadata"]["name"] == "default" and pa["metadata"]["namespace"] == "payments"
    assert pa["spec"] == {"mtls": {"mode": "PERMISSIVE"}}  # no selector: the whole namespace
    ap = only(docs, "AuthorizationPolicy")
    assert ap["metadata"]["name"] == "deny-all" and ap["metadata"]["namespace"] == "payments"
    assert ap["spec"] == {}
    assert "meshgen.dev/service" not in ap["metadata"]["labels"]


def test_namespace_versions_follow_release() -> None:
    docs = render_ns(
        {"namespace": "payments", "mtls": "strict", "access": "deny-all"}, context(config("1.21"))
    )
    assert {d["apiVersion"] for d in docs} == {"security.istio.io/v1beta1"}


def test_namespace_wide_port_modes_are_declared_not_expressible() -> None:
    # The pipeline refuses or skips them from this declaration (tests/test_blueprint_errors.py).
    assert IstioRenderer.capabilities(Config.model_validate({"environments": {"p": {}}}))["namespace.mtls.ports"].support == "none"


def test_mesh_defaults() -> None:
    cfg = Config.model_validate({"environments": {"prod": {}}, "istio": {"rootNamespace": "mesh-root"}})
    docs = render_mesh(
        {
            "telemetry": {
                "tracing": {"provider": "jaeger", "samplingPercent": 10},
                "metrics": {"provider": "prometheus"},
                "accessLogs": {"provider": "otel"},
            },
            "mtls": "strict",
            "observability": {"serviceMonitor": {"interval": "30s"}},
        },
        context(cfg),
    )
    assert kinds(docs) == ["PeerAuthentication", "Telemetry", "ServiceMonitor", "PodMonitor"]
    assert {d["metadata"]["namespace"] for d in docs} == {"mesh-root"}
    pa = only(docs, "PeerAuthentication")
    assert pa["metadata"]["name"] == "default" and pa["spec"] == {"mtls": {"mode": "STRICT"}}
    tel = only(docs, "Telemetry")
    assert tel["metadata"]["name"] == "mesh-default"
    assert tel["spec"] == {
        "tracing": [{"providers": [{"name": "jaeger"}], "randomSamplingPercentage": 10}],
        "accessLogging": [{"providers": [{"name": "otel"}]}],
        "metrics": [{"providers": [{"name": "prometheus"}]}],
    }
    istiod = only(docs, "ServiceMonitor")
    assert istiod["metadata"]["name"] == "istiod"
    assert istiod["spec"]["selector"] == {"matchLabels": {"istio": "pilot"}}
    assert istiod["spec"]["endpoints"] == [{"port": "http-monitoring", "interval": "30s"}]
    envoy = only(docs, "PodMonitor")
    assert envoy["metadata"]["name"] == "envoy-stats"
    assert envoy["spec"]["namespaceSelector"] == {"any": True}
    assert envoy["spec"]["podMetricsEndpoints"] == [
        {"port": "http-envoy-prom", "path": "/stats/prometheus", "interval": "30s"}
    ]


def test_mesh_pod_monitor_interval_and_dashboard() -> None:
    docs = render_mesh({"observability": {"podMonitor": {"interval": "15s"}, "dashboard": True}})
    assert kinds(docs) == ["PodMonitor", "ConfigMap"]
    assert only(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
    exprs = [
        p["targets"][0]["expr"]
        for p in json.loads(only(docs, "ConfigMap")["data"]["istio-mesh.json"])["panels"]
    ]
    assert exprs[0] == 'sum(rate(istio_requests_total{reporter="destination"}[5m]))'


def test_mesh_versions_follow_release() -> None:
    docs = render_mesh({"mtls": "strict", "telemetry": {"accessLogs": True}}, context(config("1.21")))
    assert [d["apiVersion"] for d in docs] == ["security.istio.io/v1beta1", "telemetry.istio.io/v1alpha1"]


# --- skipped features (unsupported: warn) ----------------------------------------------------------------------


def test_skipped_features_are_left_out() -> None:
    skipped = frozenset(
        {
            "rateLimit",
            "routes.fault.delay",
            "routes.rewrite",
            "retries.perTryTimeout",
            "mtls.ports",
            "telemetry.tracing",
            "observability.dashboard",
            "egress",
            "circuitBreaker.minHealthPercent",
        }
    )
    docs = render(service(**EVERYTHING), context(skipped=skipped))
    assert "EnvoyFilter" not in kinds(docs)
    assert "ServiceEntry" not in kinds(docs)
    assert "ConfigMap" not in kinds(docs)
    canary = http_routes(docs)[0]
    assert "delay" not in canary["fault"] and canary["fault"]["abort"]["httpStatus"] == 503
    assert "rewrite" not in canary
    assert canary["retries"] == {"attempts": 3, "retryOn": "5xx"}
    assert "portLevelMtls" not in only(docs, "PeerAuthentication")["spec"]
    assert "tracing" not in only(docs, "Telemetry")["spec"]
    outlier = only(docs, "DestinationRule")["spec"]["trafficPolicy"]["outlierDetection"]
    assert "minHealthPercent" not in outlier and outlier["maxEjectionPercent"] == 50
    # everything else is still there
    assert {"Gateway", "VirtualService", "AuthorizationPolicy", "RequestAuthentication"} <= set(kinds(docs))


def test_skipped_access_condition_drops_the_rule_rather_than_widening_it() -> None:
    docs = render(
        service(access=[{"from": ["web"], "methods": ["GET"]}, {"from": ["admin"]}]),
        context(skipped=frozenset({"access.methods"})),
    )
    assert only(docs, "AuthorizationPolicy")["spec"]["rules"] == [
        {"from": [{"source": {"principals": ["cluster.local/ns/prod/sa/admin"]}}]}
    ]


def test_skipped_namespace_and_mesh_features() -> None:
    assert render_ns(
        {"namespace": "p", "mtls": "strict", "access": "deny-all"},
        context(skipped=frozenset({"namespace.mtls"})),
    ) == [render_ns({"namespace": "p", "access": "deny-all"})[0]]
    assert render_mesh(
        {"mtls": "strict", "telemetry": {"accessLogs": True}}, context(skipped=frozenset({"mesh.telemetry"}))
    ) == render_mesh({"mtls": "strict"})


def test_every_used_feature_of_the_full_blueprint_is_rendered_by_some_resource() -> None:
    """Guards against a feature silently disappearing: each used key maps to a full capability."""
    svc = service(**EVERYTHING)
    caps = IstioRenderer.capabilities(config())
    used = {key for key, _ in used_features(svc)}
    assert used - {"retries.budget"} <= {k for k, c in caps.items() if c.support == "full"}


# --- duration formats -----------------------------------------------------------------------------------------


def test_duration_helpers() -> None:
    d = ServiceBlueprint.model_validate({"service": "a", "namespace": "b", "timeout": "1.5s"}).timeout
    assert d is not None
    assert proto_seconds(d) == "1.5s"
    assert prometheus_duration(d) == "1s500ms"
    for text, prom in [("30s", "30s"), ("10m", "10m"), ("1h", "1h"), ("500ms", "500ms"), ("1m30s", "1m30s")]:
        parsed = ServiceBlueprint.model_validate({"service": "a", "namespace": "b", "timeout": text}).timeout
        assert parsed is not None
        assert prometheus_duration(parsed) == prom
        assert GO_DURATION.match(str(parsed))


def test_names_of_a_63_character_service_are_cut_with_a_hash() -> None:
    name = "s" * 63
    docs = render(
        service(service=name, rateLimit={"requests": 1, "per": "1s"}, ingress={"hosts": ["x.example.com"]})
    )
    assert only(docs, "VirtualService")["metadata"]["name"] == name
    ef = only(docs, "EnvoyFilter")["metadata"]["name"]
    gw = only(docs, "Gateway")["metadata"]["name"]
    assert len(ef) == len(gw) == 63 and ef != gw
    assert only(docs, "VirtualService")["spec"]["gateways"] == [gw, "mesh"]
