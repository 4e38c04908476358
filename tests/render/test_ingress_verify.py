"""Issue 14, checked independently: kind: Ingress and free-text route names on every flavour.

Each case renders through the real pipeline for Istio sidecar, Istio ambient, Linkerd
httproute+annotations and Linkerd smi+serviceprofile, validates every object strictly against
the upstream schemas, and reads the meaning back from the manifests alone (which backend a
request reaches, with which path; None = the gateway answers 404).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import write_repo
from k8s_schema import validate_manifest
from render.meaning import Request
from render.test_ingress import gateway_edge, istio_edge, rendered

from meshgen.diagnostics import BlueprintError
from meshgen.pipeline import render_repository
from meshgen.names import dns_name, route_labels

FLAVOURS = {
    "istio": "environments:\n  prod: {mesh: istio}\n",
    "ambient": "environments:\n  prod: {mesh: istio}\nistio: {dataplane: ambient}\n",
    "linkerd": "environments:\n  prod: {mesh: linkerd}\n",
    "linkerd-serviceprofile": ("environments:\n  prod: {mesh: linkerd}\n"
                               "linkerd: {version: '2.14', trafficSplit: smi, routePolicy: serviceprofile}\n"),
}

EDGE = """\
kind: Ingress
name: edge
namespace: web
hosts: [a.example.com, "*.b.example.com"]
gateway: infra/public
routes:
  - name: "GET /api/users (exact)"
    match: {path: {exact: /api/users}, method: [GET, HEAD]}
    rewrite: /users
    to: {service: users.accounts, port: 8080}
    timeout: 2s
  - name: "beta: yes"
    match: {path: {prefix: /shop/}, headers: {x-beta: "true"}}
    rewrite: /
    to: {service: shop, version: v2, port: 8080}
  - name: "shop split"
    match: {path: {prefix: /shop/}}
    rewrite: /
    to: [{service: shop, version: v1, port: 8080, weight: 80}, {service: shop, version: v2, port: 8080, weight: 20}]
  - name: 'static "assets"'
    match: {path: {prefix: /static/}, method: [GET, POST]}
    rewrite: /assets/
    to: {service: files.cdn, port: 9000}
  - name: items
    match: {path: {regex: "/item/[0-9]+"}}
    to: [{service: items, weight: 50}, {service: items-next, weight: 50}]
"""
SHOP = "service: shop\nnamespace: web\nports: [{name: http, port: 8080}]\nversions: [v1, v2]\n"
USERS = "service: users\nnamespace: accounts\nports: [{name: http, port: 8080}]\n"

# (request, host) -> (backends "name:weight" sorted, path the backend sees) or None (404)
EXPECTED: list[tuple[Request, str, tuple[str, str] | None]] = [
    (Request("/api/users"), "a.example.com", ("users:100", "/users")),
    (Request("/api/users", "HEAD"), "x.b.example.com", ("users:100", "/users")),
    (Request("/api/users", "POST"), "a.example.com", None),
    (Request("/api/users/7"), "a.example.com", None),
    (Request("/shop/cart", "GET", (("x-beta", "true"),)), "a.example.com", ("shop-v2:100", "/cart")),
    (Request("/shop/cart", "DELETE"), "a.example.com", ("shop-v1:80,shop-v2:20", "/cart")),
    (Request("/shop/", "GET", (("x-beta", "false"),)), "a.example.com", ("shop-v1:80,shop-v2:20", "/")),
    (Request("/static/app.js"), "a.example.com", ("files:100", "/assets/app.js")),
    (Request("/static/app.js", "PUT"), "a.example.com", None),
    (Request("/item/42"), "deep.b.example.com", ("items-next:50,items:50", "/item/42")),
    (Request("/item/x"), "a.example.com", None),
    (Request("/"), "a.example.com", None),
]


def _host_as_written(host: str, written: list[str]) -> str:
    """The host pattern that serves `host`: itself, or a `*.suffix` wildcard (one or more labels,
    as Istio and Gateway API both read it)."""
    for pattern in written:
        if pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return pattern
    return host


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_a_many_featured_ingress_means_the_same_on_every_flavour(tmp_path: Path, flavour: str) -> None:
    root = write_repo(tmp_path / "r", {"web/edge.yaml": EDGE, "web/shop.yaml": SHOP, "accounts/users.yaml": USERS},
                      config=FLAVOURS[flavour])
    docs = rendered(root)  # every object strictly schema-valid
    edge = istio_edge if flavour in ("istio", "ambient") else gateway_edge
    for req, host, want in EXPECTED:
        got = edge(docs, _host_as_written(host, ["a.example.com", "*.b.example.com"]), req)
        assert got == want, (flavour, host, req, got)
    assert edge(docs, "c.example.com", Request("/api/users")) is None  # a host the Ingress does not name
    (bound,) = [d for d in docs if d["kind"] in ("VirtualService", "HTTPRoute") and d["metadata"]["name"] == "edge"]
    if flavour in ("istio", "ambient"):
        assert bound["spec"]["gateways"] == ["infra/public"]
        assert bound["spec"]["hosts"] == ["a.example.com", "*.b.example.com"]
        assert [h["name"] for h in bound["spec"]["http"]] == [
            "GET /api/users (exact)", "beta: yes", "shop split", 'static "assets"', "items"]
        hosts = {d["host"] for h in bound["spec"]["http"] for d in (r["destination"] for r in h["route"])}
        assert "users.accounts.svc.cluster.local" in hosts and "files.cdn.svc.cluster.local" in hosts
        assert not [d for d in docs if d["kind"] == "Gateway" and d["apiVersion"].startswith("networking.istio.io")]
    else:
        assert bound["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                                "name": "public", "namespace": "infra"}]
        assert bound["spec"]["hostnames"] == ["a.example.com", "*.b.example.com"]
        timeouts = [r.get("timeouts") for r in bound["spec"]["rules"]
                    if r["matches"][0]["path"] == {"type": "Exact", "value": "/api/users"}]
        assert timeouts == [{"request": "2s"}, {"request": "2s"}]


@pytest.mark.parametrize("flavour", ["istio", "ambient"])
def test_a_rendered_tls_gateway_serves_every_host(tmp_path: Path, flavour: str) -> None:
    bp = ("kind: Ingress\nname: edge\nnamespace: web\nhosts: [a.example.com, '*.b.example.com']\n"
          "tls: {credentialName: edge-cert}\nroutes:\n  - {name: all, to: {service: web, port: 8080}}\n")
    docs = rendered(write_repo(tmp_path / "r", {"web/edge.yaml": bp}, config=FLAVOURS[flavour]))
    (gw,) = [d for d in docs if d["kind"] == "Gateway"]
    (vs,) = [d for d in docs if d["kind"] == "VirtualService"]
    assert vs["spec"]["gateways"] == [gw["metadata"]["name"]]
    https = [s for s in gw["spec"]["servers"] if s["port"]["protocol"] == "HTTPS"]
    assert https and https[0]["hosts"] == ["a.example.com", "*.b.example.com"]
    assert https[0]["tls"] == {"mode": "SIMPLE", "credentialName": "edge-cert"}
    assert istio_edge(docs, "*.b.example.com", Request("/x")) == ("web:100", "/x")


NAMES = [
    "GET /api/users", "get-api-users", "Ünïcode ☃ route", "with 'single' and \"double\" quotes",
    "yes", "no", "on", "y", "null", "~", "123", "1e3", "0x1F", "2024-01-02", "- dash", "# hash", "a: b",
    "x" * 128, "x" * 127 + "y",
]
SERVICE = "service: api\nnamespace: web\nroutes:\n" + "".join(
    f"  - name: {json.dumps(n, ensure_ascii=False)}\n    match: {{path: {{exact: /r{i}}}}}\n    timeout: {i + 1}s\n"
    for i, n in enumerate(NAMES))


def _all_docs(root: Path) -> list[dict[str, Any]]:
    out = []
    for data in render_repository(root).files().values():
        doc = yaml.safe_load(data)
        validate_manifest(doc)
        out.append(doc)
    return out


@pytest.mark.parametrize("flavour", list(FLAVOURS) + ["linkerd-sp-2.18"])
def test_free_text_route_names_survive_every_flavour(tmp_path: Path, flavour: str) -> None:
    config = FLAVOURS.get(flavour, "environments:\n  prod: {mesh: linkerd}\nlinkerd: {routePolicy: serviceprofile}\n")
    docs = _all_docs(write_repo(tmp_path / "r", {"web/api.yaml": SERVICE}, config=config))
    kinds = {d["kind"] for d in docs}
    if flavour == "istio":
        (vs,) = [d for d in docs if d["kind"] == "VirtualService"]
        assert [h["name"] for h in vs["spec"]["http"]][:len(NAMES)] == NAMES  # as written, strings all
    if "ServiceProfile" in kinds:
        (sp,) = [d for d in docs if d["kind"] == "ServiceProfile"]
        assert [r["name"] for r in sp["spec"]["routes"]][:len(NAMES)] == NAMES
    if flavour in ("linkerd", "ambient"):
        routes = [d for d in docs if d["kind"] == "HTTPRoute" and d["apiVersion"].startswith("gateway.")]
        names = [d["metadata"]["name"] for d in routes]
        assert len(names) == len(set(names))  # unique DNS names (each validated above)
        if flavour == "linkerd":  # one HTTPRoute per route (their timeouts differ), named from the route
            labels = route_labels(NAMES)
            by_path = {r["spec"]["rules"][0]["matches"][0]["path"]["value"]: r["metadata"]["name"] for r in routes}
            assert [by_path[f"/r{i}"] for i in range(len(NAMES))] == [dns_name("api", labels[n]) for n in NAMES]


@pytest.mark.parametrize("flavour", ["istio", "ambient"])
def test_free_text_names_on_an_ingress_are_kept_as_written(tmp_path: Path, flavour: str) -> None:
    bp = "kind: Ingress\nname: edge\nnamespace: web\nhosts: [a.example.com]\ngateway: gw\nroutes:\n" + "".join(
        f"  - name: {json.dumps(n, ensure_ascii=False)}\n    match: {{path: {{exact: /r{i}}}}}\n"
        f"    to: {{service: s{i}}}\n" for i, n in enumerate(NAMES))
    docs = _all_docs(write_repo(tmp_path / "r", {"web/edge.yaml": bp}, config=FLAVOURS[flavour]))
    (vs,) = [d for d in docs if d["kind"] == "VirtualService"]
    assert [h["name"] for h in vs["spec"]["http"]] == NAMES
    assert istio_edge(docs, "a.example.com", Request("/r4")) == ("s4:100", "/r4")
    assert istio_edge(docs, "a.example.com", Request("/r99")) is None


@pytest.mark.parametrize("flavour", ["linkerd", "linkerd-serviceprofile"])
def test_an_edge_route_to_a_port_the_service_lacks_is_an_error(tmp_path: Path, flavour: str) -> None:
    """Gateway API backendRefs always name a port (80 when the route names none): a service
    declaring only 8080 would get a backendRef nothing listens on, a 500 at the gateway."""
    bp = ("kind: Ingress\nname: edge\nnamespace: web\nhosts: [a.example.com]\ngateway: gw\nroutes:\n"
          "  - match: {path: {prefix: /a/}}\n    to: {service: shop, version: v1}\n"
          "  - to: {service: shop, port: 9999}\n")
    with pytest.raises(BlueprintError) as info:
        render_repository(write_repo(tmp_path / "r", {"web/edge.yaml": bp, "web/shop.yaml": SHOP},
                                     config=FLAVOURS[flavour]))
    errs = [str(d) for d in info.value.diagnostics if d.severity == "error"]
    assert "blueprints/web/edge.yaml:8:5: routes[0].to: service web/shop has no port 80, the port a Gateway API " \
           "backendRef gets when the route names none (it declares: 8080); name it: to: {service: shop, port: 8080}" in errs
    assert "blueprints/web/edge.yaml:9:5: routes[1].to: service web/shop has no port 9999 (it declares: 8080)" in errs
    fixed = bp.replace("version: v1}", "version: v1, port: 8080}").replace("9999", "8080")
    docs = rendered(write_repo(tmp_path / "ok", {"web/edge.yaml": fixed, "web/shop.yaml": SHOP},
                               config=FLAVOURS[flavour]))
    assert gateway_edge(docs, "a.example.com", Request("/a/x")) == ("shop-v1:100", "/a/x")
    (route,) = [d for d in docs if d["kind"] == "HTTPRoute"]
    assert {b["port"] for r in route["spec"]["rules"] for b in r["backendRefs"]} == {8080}
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "shop-v1")
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080]


@pytest.mark.parametrize("flavour", ["istio", "linkerd-serviceprofile"])
def test_names_meshgen_gives_unnamed_routes_never_repeat_a_written_name(tmp_path: Path, flavour: str) -> None:
    """An unnamed route at index 1 is `route-1`; when the owner already named a route so, or named
    one `default`, the derived names move aside: route names stay unique within the blueprint."""
    bp = ("service: api\nnamespace: web\nversions: [v1, v2]\nroutes:\n"
          "  - {name: route-1, match: {path: {prefix: /a}}, timeout: 1s}\n"
          "  - {match: {path: {prefix: /b}}, timeout: 2s}\n"
          "  - {name: default, match: {method: POST}, timeout: 3s}\n")
    docs = _all_docs(write_repo(tmp_path / "r", {"web/api.yaml": bp}, config=FLAVOURS[flavour]))
    if flavour == "istio":
        (vs,) = [d for d in docs if d["kind"] == "VirtualService"]
        names = [h["name"] for h in vs["spec"]["http"]]
    else:
        (sp,) = [d for d in docs if d["kind"] == "ServiceProfile"]
        names = [r["name"] for r in sp["spec"]["routes"]]
    assert names[:3] == ["route-1", "route-1-2", "default"] and len(names) == len(set(names)), names


REWRITES = ("kind: Ingress\nname: edge\nnamespace: web\nhosts: [a.example.com]\ngateway: gw\nroutes:\n"
            "  - {match: {path: {prefix: /v2}, method: [GET, POST]}, rewrite: /, to: {service: two}}\n"
            "  - {match: {path: {prefix: /api/}}, rewrite: /internal, to: {service: api}}\n"
            "  - {match: {path: {prefix: /old}}, rewrite: /new/, to: {service: api}}\n"
            "  - {match: {path: {prefix: /keep}}, rewrite: /kept, to: {service: api}}\n")


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_a_rewrite_replaces_whole_path_segments_on_every_flavour(tmp_path: Path, flavour: str) -> None:
    """`rewrite` replaces the matched prefix as Gateway API does, segment by segment: Envoy's literal
    prefix replacement would send `//users` for prefix /v2 rewritten to /, and `/internalx`."""
    docs = rendered(write_repo(tmp_path / "r", {"web/edge.yaml": REWRITES}, config=FLAVOURS[flavour]))
    edge = istio_edge if flavour in ("istio", "ambient") else gateway_edge
    want: dict[Request, tuple[str, str] | None] = {
        Request("/v2/users"): ("two:100", "/users"),
        Request("/v2/", "POST"): ("two:100", "/"),
        Request("/v2"): ("two:100", "/"),
        Request("/v2/users", "DELETE"): None,
        Request("/v2x"): None,
        Request("/api/x"): ("api:100", "/internal/x"),
        Request("/api/"): ("api:100", "/internal/"),
        Request("/old/y"): ("api:100", "/new/y"),
        Request("/old"): ("api:100", "/new/"),
        Request("/keep/a/b"): ("api:100", "/kept/a/b"),
        Request("/keep"): ("api:100", "/kept"),
    }
    for req, expected in want.items():
        assert edge(docs, "a.example.com", req) == expected, (flavour, req)


@pytest.mark.parametrize("where", ["kind: Ingress", "a service's ingress"])
def test_an_ip_address_is_not_an_ingress_host(tmp_path: Path, where: str) -> None:
    """Gateway API's Hostname refuses IP addresses and Istio matches hosts against Host/SNI: an address
    there would be refused by the API server or match nothing. The error names the file, line and field."""
    if where == "kind: Ingress":
        files = {"web/edge.yaml": "kind: Ingress\nname: edge\nnamespace: web\nhosts: [a.example.com, 10.0.0.7]\n"
                                  "gateway: gw\nroutes:\n  - to: {service: shop, port: 8080}\n", "web/shop.yaml": SHOP}
        expected = "blueprints/web/edge.yaml:4:"
    else:
        files = {"web/shop.yaml": SHOP + "ingress: {hosts: [10.0.0.7], gateway: gw}\n"}
        expected = "blueprints/web/shop.yaml:5:"
    with pytest.raises(BlueprintError) as info:
        render_repository(write_repo(tmp_path / "r", files, config=FLAVOURS["istio"]))
    errs = [str(d) for d in info.value.diagnostics if d.severity == "error"]
    assert any(e.startswith(expected) and "'10.0.0.7' is an IP address; an ingress host is a DNS name" in e
               for e in errs), errs
    # A name with digits is still a name.
    ok = {k: v.replace("10.0.0.7", "10-0-0-7.example.com") for k, v in files.items()}
    render_repository(write_repo(tmp_path / "ok", ok, config=FLAVOURS["istio"]))
