"""`istio.dataplane: ambient`: the switch from sidecars, on the example repository, through the CLI.

The example repository (blueprints/) is the sidecar demo; it also uses fault injection, `retries`
and a local rate limit, which ambient mode cannot say (declared `none`). So the one-line switch
must fail with exactly those findings, at their file:line, under the example's `unsupported: error`,
and render everything else, strictly valid, once they are allowed to be dropped.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from k8s_schema import validate_manifest

from meshgen.blueprint.config import Config
from meshgen.blueprint.model import IngressBlueprint, NamespaceBlueprint, ServiceBlueprint
from meshgen.render.base import RenderContext
from meshgen.render.istio import IstioRenderer
from meshgen.render.istio_ambient import CAPABILITIES

EXAMPLES = Path(__file__).resolve().parents[2] / "blueprints"
AMBIENT = Config.model_validate({"environments": {"prod": {"mesh": "istio"}}, "istio": {"dataplane": "ambient"}})


def _meshgen(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=300)


def _switch(root: Path) -> None:
    """What the platform team does: one line under `istio:` in meshgen.yaml."""
    path = root / "meshgen.yaml"
    before = path.read_text()
    after = before.replace('istio:\n  version: "1.24"\n', 'istio:\n  version: "1.24"\n  dataplane: ambient\n')
    changed = [d for d in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
               if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    assert changed == ["+  dataplane: ambient"]
    path.write_text(after)


def test_the_one_line_switch_on_the_example_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns(".meshgen"))
    _switch(root)
    run = _meshgen("render", root, "--out", tmp_path / "out")
    # Every error is a feature ambient declares `none`, named at its file:line, and nothing else.
    errors = [line for line in run.stderr.splitlines() if re.match(r"blueprints/\S+:\d+:\d+: (?!warning)", line)]
    assert run.returncode == 1 and errors and "Traceback" not in run.stderr
    assert all("istio 1.24 ambient cannot express this" in e for e in errors), errors
    none = {k for k, c in CAPABILITIES.items() if c.support == "none"}
    reasons = {c.note for k, c in CAPABILITIES.items() if k in none}
    assert all(any(r in e for r in reasons) for e in errors), errors
    assert any("payments-processor.yaml" in e and "rateLimit" in e for e in errors)
    assert any("ratings.yaml" in e and "fault" in e for e in errors)
    assert not (tmp_path / "out").exists()

    # Allowing those to be dropped (they become warnings in the pull request), the same repository
    # renders for ambient, strictly valid, with no mesh VirtualService left.
    config = root / "meshgen.yaml"
    config.write_text(config.read_text().replace("unsupported: error", "unsupported: warn"))
    run = _meshgen("render", root, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    docs = [d for p in sorted((tmp_path / "out").rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    for doc in docs:
        validate_manifest(doc)
    kinds = {d["kind"] for d in docs}
    assert {"HTTPRoute", "Gateway", "Service"} <= kinds and "EnvoyFilter" not in kinds
    assert all(d["spec"].get("gateways") for d in docs if d["kind"] == "VirtualService")  # edge only
    assert all("subsets" not in d["spec"] for d in docs if d["kind"] == "DestinationRule")
    waypoints = [d for d in docs if d["kind"] == "Gateway" and d["spec"].get("gatewayClassName") == "istio-waypoint"]
    assert {d["metadata"]["namespace"] for d in waypoints} == {"payments"}  # the one kind: Namespace


def _ctx(**kw: Any) -> RenderContext:
    return RenderContext(config=AMBIENT, env="prod", mesh="istio", blueprint_path="blueprints/t/x.yaml", **kw)


def _render(raw: dict[str, Any], **kw: Any) -> tuple[list[dict[str, Any]], RenderContext]:
    ctx = _ctx(**kw)
    out = [r.body for r in IstioRenderer().render_service(ServiceBlueprint.model_validate(raw), ctx)]
    for body in out:
        validate_manifest(body)
    return out, ctx


def test_flavour_and_capabilities_follow_the_setting() -> None:
    assert IstioRenderer.flavours(AMBIENT) == "istio 1.24 ambient"
    sidecar = Config.model_validate({"environments": {"prod": {"mesh": "istio"}}})
    assert IstioRenderer.flavours(sidecar) == "istio 1.24"
    assert IstioRenderer.capabilities(sidecar)["retries"].support == "full"
    caps = IstioRenderer.capabilities(AMBIENT)
    assert {k for k, c in caps.items() if c.support == "none"} >= {
        "retries", "retries.never", "routes.fault.delay", "routes.fault.abort", "rateLimit"}


def test_traffic_policy_goes_to_every_destination_host_and_the_note_asks_for_the_labels() -> None:
    out, ctx = _render({"service": "api", "namespace": "shop", "versions": ["v1", "v2"],
                        "routes": [{"to": {"v1": 80, "v2": 20}}], "loadBalancing": "random"})
    drs = {d["spec"]["host"]: d["spec"] for d in out if d["kind"] == "DestinationRule"}
    assert drs == {h: {"host": h, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}
                   for h in ("api", "api-v1", "api-v2")}
    services = {d["metadata"]["name"]: d["spec"]["selector"] for d in out if d["kind"] == "Service"}
    assert services == {"api-v1": {"app": "api", "version": "v1"}, "api-v2": {"app": "api", "version": "v2"}}
    (note,) = ctx.notes
    assert "istio.io/use-waypoint: waypoint" in note and 'istio.io/ingress-use-waypoint: "true"' in note
    assert "shop/api" in note


def test_a_service_that_needs_no_waypoint_gets_no_note() -> None:
    out, ctx = _render({"service": "db", "namespace": "shop", "mtls": "strict", "access": [{"from": ["api"]}]})
    assert ctx.notes == [] and {d["kind"] for d in out} == {"PeerAuthentication", "AuthorizationPolicy"}


def test_edge_routes_reach_versions_through_their_services() -> None:
    ing = IngressBlueprint.model_validate({
        "kind": "Ingress", "name": "edge", "namespace": "shop", "hosts": ["a.example.com"], "gateway": "public",
        "routes": [{"to": {"service": "api", "version": "v2"}}]})
    (vs,) = [r.body for r in IstioRenderer().render_ingress(ing, _ctx())]
    assert vs["spec"]["http"][0]["route"] == [{"destination": {"host": "api-v2.shop.svc.cluster.local"}}]


def test_namespace_renders_the_waypoint_and_a_deny_all_at_both_layers() -> None:
    ns = NamespaceBlueprint.model_validate({"kind": "Namespace", "namespace": "shop", "access": "deny-all"})
    out = {(r.kind, r.name): r.body for r in IstioRenderer().render_namespace(ns, _ctx())}
    for body in out.values():
        validate_manifest(body)
    gw = out[("Gateway", "waypoint")]
    assert gw["spec"] == {"gatewayClassName": "istio-waypoint",
                          "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}
    assert gw["metadata"]["labels"]["istio.io/waypoint-for"] == "service"
    ztunnel = out[("AuthorizationPolicy", "deny-all")]["spec"]
    assert ztunnel["rules"] == [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/waypoint"]}}]}]
    waypoint = out[("AuthorizationPolicy", "deny-all-waypoint")]["spec"]
    assert waypoint == {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
                        "action": "ALLOW"}


def test_a_misspelt_dataplane_is_an_error_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "blueprints").mkdir()
    (tmp_path / "meshgen.yaml").write_text("environments:\n  prod: {mesh: istio}\nistio:\n  dataplane: ambiant\n")
    run = _meshgen("validate", tmp_path)
    assert run.returncode == 1
    assert ("meshgen.yaml:4:3: istio.dataplane: the string 'ambiant' is not allowed; input should be 'sidecar' or "
            "'ambient'") in run.stderr


def test_mesh_dashboard_reads_waypoint_metrics() -> None:
    from meshgen.blueprint.model import MeshBlueprint

    mesh = MeshBlueprint.model_validate({"kind": "Mesh", "observability": {"serviceMonitor": {}, "dashboard": True}})
    (cm,) = [r.body for r in IstioRenderer().render_mesh(mesh, _ctx()) if r.kind == "ConfigMap"]
    exprs = [p["targets"][0]["expr"] for p in json.loads(cm["data"]["istio-mesh.json"])["panels"]]
    assert all('reporter="waypoint"' in e for e in exprs)


def test_service_dashboard_counts_the_version_services_the_waypoint_reports() -> None:
    out, _ = _render({"service": "api", "namespace": "shop", "versions": ["v1", "v2"],
                      "routes": [{"to": {"v1": 90, "v2": 10}}], "observability": {"dashboard": True}})
    (cm,) = [d for d in out if d["kind"] == "ConfigMap"]
    exprs = [p["targets"][0]["expr"] for p in json.loads(cm["data"]["api.json"])["panels"]]
    assert all('reporter="waypoint"' in e and 'destination_service_name=~"api|api-v1|api-v2"' in e for e in exprs)
