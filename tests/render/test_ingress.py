"""kind: Ingress: edge routes for hosts, on Istio and on Linkerd (Gateway API), with their meaning checked.

The meaning of a rendered edge route is computed from the manifests alone, the way each data plane
reads them: Istio takes the first VirtualService http route whose match holds and rewrites the matched
prefix literally; a Gateway API implementation takes the most specific match and applies the rule's
URLRewrite filter. Both must send every probe where the blueprint says, with the path it says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import write_repo
from k8s_schema import validate_manifest
from render.meaning import Request, _istio_string, _l5d_score, _prefix_elements

from meshgen.diagnostics import BlueprintError
from meshgen.pipeline import render_repository

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
Edge = tuple[str, str] | None  # (backend service[-version] or a split, path the backend sees); None = 404


def rendered(root: Path) -> list[dict[str, Any]]:
    out = []
    for data in render_repository(root).files().values():
        doc = yaml.safe_load(data)
        validate_manifest(doc)
        if doc["kind"] == "HTTPRoute":
            _gateway_api_rules(doc)
        out.append(doc)
    return out


def _gateway_api_rules(route: dict[str, Any]) -> None:
    """The HTTPRoute CRD's CEL rules and limits, which a JSON Schema check does not run."""
    rules = route["spec"]["rules"]
    assert len(rules) <= 16
    for rule in rules:
        assert 1 <= len(rule["matches"]) <= 8
        for f in rule.get("filters", []):
            if f["type"] == "URLRewrite" and f["urlRewrite"]["path"]["type"] == "ReplacePrefixMatch":
                # "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match
                # must be specified"
                assert len(rule["matches"]) == 1 and rule["matches"][0]["path"]["type"] == "PathPrefix", rule


def istio_edge(docs: list[dict[str, Any]], host: str, req: Request) -> Edge:
    for vs in (d for d in docs if d["kind"] == "VirtualService" and host in d["spec"]["hosts"]):
        assert "mesh" not in vs["spec"]["gateways"], "bound to the gateway only"
        for http in vs["spec"]["http"]:
            for m in http.get("match") or [{}]:
                if "uri" in m and not _istio_string(m["uri"], req.path):
                    continue
                if "method" in m and not _istio_string(m["method"], req.method):
                    continue
                if any(not _istio_string(hm, req.header(n)) for n, hm in (m.get("headers") or {}).items()):
                    continue
                path = req.path
                if "rewrite" in http:
                    matched = m.get("uri", {}).get("prefix", "") if "prefix" in m.get("uri", {}) else path
                    path = http["rewrite"]["uri"] + path[len(matched):]
                return _backends_istio(http["route"]), path
    return None


def _backends_istio(route: list[dict[str, Any]]) -> str:
    names = []
    for dest in route:
        d = dest["destination"]
        name = d["host"].split(".")[0] + (f"-{d['subset']}" if "subset" in d else "")
        names.append(f"{name}:{dest.get('weight', 100)}")
    return ",".join(sorted(names))


def gateway_edge(docs: list[dict[str, Any]], host: str, req: Request) -> Edge:
    best: tuple[Any, dict[str, Any], dict[str, Any]] | None = None
    for route in (d for d in docs if d["kind"] == "HTTPRoute" and host in d["spec"].get("hostnames", [])):
        assert all(p["kind"] == "Gateway" for p in route["spec"]["parentRefs"]), "bound to the gateway only"
        for rule in route["spec"]["rules"]:
            for m in rule["matches"]:
                path = m.get("path", {"type": "PathPrefix", "value": "/"})
                norm = {"path": ({"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}[path["type"]],
                                 path["value"]),
                        "method": m.get("method"),
                        "headers": {h["name"]: ("exact" if h["type"] == "Exact" else "regex", h["value"])
                                    for h in m.get("headers", [])}}
                score = _l5d_score(norm, req)
                if score is not None and (best is None or score > best[0]):
                    best = (score, rule, m)
    if best is None:
        return None
    _, rule, m = best
    path = req.path
    for f in rule.get("filters", []):
        rw = f["urlRewrite"]["path"]
        if rw["type"] == "ReplaceFullPath":
            path = rw["replaceFullPath"]
        else:
            prefix = m["path"]["value"].rstrip("/")
            assert _prefix_elements(prefix or "/", path)
            rest = path[len(prefix):]
            path = (rw["replacePrefixMatch"].rstrip("/") + rest) if rest else rw["replacePrefixMatch"]
            path = path if path.startswith("/") else "/" + path
    names = [f"{b['name']}:{b.get('weight', 1)}" for b in rule["backendRefs"]]
    return ",".join(sorted(names)), path


def test_the_guides_uri_routing_example_renders_to_exactly_that() -> None:
    istio = rendered(FIXTURES / "ingress-istio")
    gateway = rendered(FIXTURES / "ingress-linkerd")
    expected: dict[Request, Edge] = {
        Request("/v2/users"): ("api-service-v2:100", "/users"),
        Request("/v2/"): ("api-service-v2:100", "/"),
        Request("/v1/orders/7", "POST"): ("api-service-v1:100", "/orders/7"),
        Request("/v3/users"): None,  # no implicit default route: the gateway answers 404
        Request("/"): None,
    }
    for req, want in expected.items():
        assert istio_edge(istio, "api.example.com", req) == want, req
        assert gateway_edge(gateway, "api.example.com", req) == want, req
    (route,) = [d for d in gateway if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "api-gateway"]
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "api-gateway"}]
    assert route["spec"]["hostnames"] == ["api.example.com"]
    (vs,) = [d for d in istio if d["kind"] == "VirtualService" and d["metadata"]["name"] == "api-gateway"]
    assert vs["spec"]["gateways"] == ["api-gateway"]
    assert not [d for d in istio if d["kind"] == "Gateway" and d["metadata"]["name"] == "api-gateway"]  # bound, not rendered


SHOP_PROBES = [
    Request("/cart", "GET", (("x-beta", "true"),)),
    Request("/cart/items", "GET"),
    Request("/cart/items", "GET", (("x-beta", "true"),)),
    Request("/cart/admin/users", "GET", (("x-beta", "true"),)),
    Request("/cart/admin", "POST"),
    Request("/cartoon"),
    Request("/"),
]


def test_first_match_wins_at_the_edge_as_in_the_blueprint() -> None:
    gateway = rendered(FIXTURES / "ingress-linkerd")
    want = {
        SHOP_PROBES[0]: ("cart-v2:100", "/cart"),
        SHOP_PROBES[1]: ("cart-v1:90,cart-v2:10", "/cart/items"),
        SHOP_PROBES[2]: ("cart-v2:100", "/cart/items"),
        # admin comes first in the blueprint: it wins even where the beta route (more specific by
        # its header) also matches, and its rewrite keeps the rest of the path.
        SHOP_PROBES[3]: ("cart-admin:100", "/admin/users"),
        SHOP_PROBES[4]: ("cart-admin:100", "/admin"),
        SHOP_PROBES[5]: ("storefront:100", "/cartoon"),
        SHOP_PROBES[6]: ("storefront:100", "/"),
    }
    for req, edge in want.items():
        assert gateway_edge(gateway, "shop.example.com", req) == edge, req
        assert gateway_edge(gateway, "www.shop.example.com", req) == edge, req


def test_istio_edge_route_features() -> None:
    istio = rendered(FIXTURES / "ingress-istio")
    (vs,) = [d for d in istio if d["kind"] == "VirtualService" and d["metadata"]["name"] == "shop"]
    assert vs["spec"]["gateways"] == ["shop"]  # the Gateway meshgen renders, never `mesh`
    assert [h["name"] for h in vs["spec"]["http"]] == ["GET /cart (beta)", "cart", "storefront"]
    assert vs["spec"]["http"][0]["route"][0]["destination"]["host"] == "cart.shop.svc.cluster.local"
    assert vs["spec"]["http"][2]["retries"] == {"attempts": 0}
    (gw,) = [d for d in istio if d["kind"] == "Gateway"]
    assert gw["metadata"]["name"] == "shop" and gw["spec"]["servers"][0]["tls"]["credentialName"] == "shop-example-com-cert"
    assert istio_edge(istio, "shop.example.com", Request("/cart/x")) == ("cart-v1:90,cart-v2:10", "/cart/x")
    assert istio_edge(istio, "shop.example.com", Request("/elsewhere")) == ("storefront:100", "/elsewhere")


def test_a_cross_namespace_backend_on_gateway_api_lists_the_reference_grant() -> None:
    result = render_repository(FIXTURES / "ingress-linkerd")
    (unit,) = [u for u in result.units if u.service == "shop"]
    assert any("ReferenceGrant in namespace shop must allow HTTPRoutes from namespace production" in w
               for w in unit.warnings), unit.warnings
    assert not any(b"ReferenceGrant" in data for data in unit.files.values())  # required, not rendered
    assert [w.path for w in result.warnings] == ["routes[1].to"]  # once per file and feature


LINKERD = "environments:\n  prod: {mesh: linkerd}\n"
ISTIO = "environments:\n  prod: {mesh: istio}\n"
EDGE = "kind: Ingress\nname: edge\nnamespace: web\nhosts: [a.example.com]\n"


def errors(tmp_path: Path, blueprints: dict[str, str], config: str) -> list[str]:
    with pytest.raises(BlueprintError) as info:
        render_repository(write_repo(tmp_path / "r", blueprints, config=config))
    return [str(d) for d in info.value.diagnostics if d.severity == "error"]


@pytest.mark.parametrize("routes,message", [
    ("routes:\n  - match: {method: GET}\n", "6:5: routes[0]: at the edge every route names its service(s)"),
    ("routes:\n  - to: v2\n", "6:5: routes[0].to: an Ingress has no versions of its own; name a service: "
                              "to: {service: <name>, version: v2}"),
    ("routes: []\n", "5:1: routes: an Ingress needs at least one route"),
    ("gateway: gw\ntls: {credentialName: c}\nroutes:\n  - to: {service: s}\n",
     "6:1: tls: `tls` configures the gateway meshgen renders"),
])
def test_ingress_mistakes(tmp_path: Path, routes: str, message: str) -> None:
    errs = errors(tmp_path, {"web/edge.yaml": EDGE + routes}, ISTIO)
    assert any(e.startswith("blueprints/web/edge.yaml:") and message in e for e in errs), errs


def test_linkerd_cannot_render_the_gateway_or_rewrite_after_a_regex(tmp_path: Path) -> None:
    errs = errors(tmp_path, {"web/edge.yaml": EDGE + "routes:\n  - match: {path: {regex: \"/v[0-9]+/.*\"}}\n"
                             "    rewrite: /\n    to: {service: s}\n"}, LINKERD)
    assert any("name: linkerd 2.18 httproute+annotations cannot express this: Linkerd has no ingress gateway" in e
               for e in errs), errs
    assert any(re.search(r"routes\[0\]\.rewrite: Gateway API URLRewrite .* cannot say what to replace", e)
               for e in errs), errs


def test_an_ingress_and_a_service_cannot_share_a_name_or_a_host(tmp_path: Path) -> None:
    errs = errors(tmp_path, {
        "web/edge.yaml": EDGE + "routes:\n  - to: {service: s}\n",
        "web/svc.yaml": "service: edge\nnamespace: web\n",
        "web/other.yaml": "service: other\nnamespace: web\ningress: {hosts: [a.example.com], gateway: gw}\n",
    }, ISTIO)
    assert any("the name web/edge in environment prod is also used by blueprints/web/svc.yaml" in e for e in errs), errs
    assert any("ingress host a.example.com is claimed by several blueprints in prod: Ingress web/edge, web/other" in e
               for e in errs), errs


def test_an_ingress_route_to_an_undeclared_version_of_another_service(tmp_path: Path) -> None:
    errs = errors(tmp_path, {
        "web/edge.yaml": EDGE + "routes:\n  - to: {service: api.shop, version: v3}\n",
        "shop/api.yaml": "service: api\nnamespace: shop\nversions: [v1, v2]\n",
    }, ISTIO)
    assert any("[IST0101] routes[0].to: service shop/api has no version 'v3' (it declares: v1, v2)" in e
               for e in errs), errs


def test_a_rewrite_keeps_its_meaning_on_overlaps_meshgen_adds(tmp_path: Path) -> None:
    bp = EDGE + ("gateway: gw\nroutes:\n"
                 "  - {name: api, match: {path: {prefix: /api/}}, rewrite: /, to: {service: api}}\n"
                 "  - {name: internal, match: {path: {prefix: /api/internal}, headers: {x-int: '1'}}, to: {service: int}}\n"
                 "  - {name: exact, match: {path: {exact: /api/internal/health}, method: GET}, to: {service: health}}\n"
                 "  - {name: rest, to: {service: web}}\n")
    probes = [Request("/api/internal/x", "GET", (("x-int", "1"),)), Request("/api/internal/health"),
              Request("/api/v1/users"), Request("/apix"), Request("/")]
    # (`/api` itself is left out: Gateway API's PathPrefix /api/ matches it, Istio's literal prefix does not.)
    results = {}
    for mesh, config in (("istio", ISTIO), ("linkerd", LINKERD)):
        docs = rendered(write_repo(tmp_path / mesh, {"web/edge.yaml": bp}, config=config))
        edge = istio_edge if mesh == "istio" else gateway_edge
        results[mesh] = [edge(docs, "a.example.com", req) for req in probes]
    assert results["linkerd"] == [("api:100", "/internal/x"), ("api:100", "/internal/health"),
                                  ("api:100", "/v1/users"), ("web:100", "/apix"), ("web:100", "/")]
    assert results["istio"] == results["linkerd"]
