"""Adding a mesh is one module and one registration line (CONTRIBUTING.md): a toy third mesh
(tests/toymesh.py), registered in a fresh `meshgen` process, is taken up by meshgen.yaml and its
schema, the CLI, the capability matrix, bootstrap, the blueprint checks and the canary gates, with
no edit anywhere else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import write_repo

from meshgen.diagnostics import BlueprintError
from meshgen.pipeline import render_repository
from meshgen.render import registry
from meshgen.render.istio import MESH as ISTIO

TESTS = Path(__file__).resolve().parent
TOY_CONFIG = """\
environments:
  lab: {mesh: toy}
  prod: {mesh: istio}
toy: {namespace: toy-control, level: fancy}
teams:
  payments: {namespaces: [payments]}
"""
API = """\
service: api
namespace: payments
versions: [v1, v2]
routes:
  - to: {v1: 90, v2: 10}
"""


def toy_meshgen(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`meshgen ARGS` in a new process with the toy mesh registered first."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    code = "import sys, toymesh; toymesh.install(); from meshgen.cli import main; main(prog_name='meshgen')"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          check=False)


def toy_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", "import toymesh; toymesh.install()\n" + code],
                         capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_meshgen_yaml_takes_the_mesh_and_its_section_and_render_uses_its_renderer(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api.yaml": API}, config=TOY_CONFIG)
    run = toy_meshgen("render", root, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    cm = yaml.safe_load((tmp_path / "out/lab/payments/api/configmap-toy-api.yaml").read_text())
    assert cm["data"] == {"versions": "v1,v2"}
    assert (tmp_path / "out/prod/payments/api/virtualservice-api.yaml").exists()  # the others are untouched


def test_a_misspelt_key_of_its_section_is_a_file_line_error(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {}, config=TOY_CONFIG.replace("level: fancy", "levle: fancy"))
    run = toy_meshgen("validate", root)
    assert run.returncode == 1
    assert "meshgen.yaml:4:31: toy.levle: unknown key 'levle', did you mean 'level'? (valid keys: level, namespace)" \
        in run.stderr


def test_cli_mesh_option_accepts_it(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api.yaml": API})  # every environment on istio
    run = toy_meshgen("render", root, "--mesh", "toy", "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.yaml")) == ["configmap-toy-api.yaml"] * 2
    assert "[istio|linkerd|toy]" in toy_meshgen("render", "--help").stdout


def test_capability_matrix_has_its_columns(tmp_path: Path) -> None:
    run = toy_meshgen("capabilities", "--format", "json")
    assert run.returncode == 0, run.stderr
    columns = json.loads(run.stdout)["columns"]
    assert [c["flavour"] for c in columns[-2:]] == ["toy basic", "toy fancy"]
    assert columns[-2]["features"]["timeout"] == {"support": "none", "note": "toy basic has no timeouts"}
    root = write_repo(tmp_path / "repo", {}, config=TOY_CONFIG)
    from_file = json.loads(toy_meshgen("capabilities", root, "--format", "json").stdout)["columns"]
    assert [c["flavour"] for c in from_file][-1] == "toy fancy"


def test_bootstrap_sends_the_mesh_wide_unit_to_its_system_namespace(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {}, config=TOY_CONFIG)
    run = toy_meshgen("bootstrap", "argocd", root, "--repo-url", "https://git.example.com/env.git")
    assert run.returncode == 0, run.stderr
    namespaces = {}
    for doc in yaml.safe_load_all(run.stdout):
        for gen in doc["spec"]["generators"]:
            values = gen["git"]["values"]
            if values["scope"] == "mesh":
                namespaces[values["name"]] = values["destinationNamespace"]
    assert namespaces == {"meshgen-mesh-lab": "toy-control", "meshgen-mesh-prod": "istio-system"}


def test_unknown_mesh_names_list_the_registered_ones_at_their_line(tmp_path: Path) -> None:
    config = TOY_CONFIG.replace("lab: {mesh: toy}", "lab: {mesh: tyo}")
    run = toy_meshgen("validate", write_repo(tmp_path / "a", {}, config=config))
    assert "meshgen.yaml:2:9: environments.lab.mesh: the string 'tyo' is not allowed; input should be 'istio', " \
           "'linkerd' or 'toy'" in run.stderr
    run = toy_meshgen("validate", write_repo(tmp_path / "b", {"payments/api.yaml": API + "mesh: tyo\n"},
                                             config=TOY_CONFIG))
    assert "blueprints/payments/api.yaml:6:1: mesh: the string 'tyo' is not allowed; input should be 'istio', " \
           "'linkerd' or 'toy'" in run.stderr


def test_its_checks_run_on_blueprints_for_it(tmp_path: Path) -> None:
    three = API.replace("[v1, v2]", "[v1, v2, v3]")
    edge = ("kind: Ingress\nname: edge\nnamespace: payments\nhosts: [shop.example.com]\n"
            "routes:\n  - to: {service: api}\n")
    root = write_repo(tmp_path / "repo", {"payments/api.yaml": three, "payments/edge.yaml": edge},
                      config=TOY_CONFIG.replace("  prod: {mesh: istio}\n", ""))
    run = toy_meshgen("validate", root)
    assert "blueprints/payments/api.yaml:3:1: versions: the toy mesh routes between at most two versions" in run.stderr
    # The edge route names no port: the toy mesh's backends get 8080, which the service does not have.
    assert "blueprints/payments/edge.yaml:6:5: routes[0].to: service payments/api has no port 8080" in run.stderr


def test_schemas_list_it() -> None:
    out = toy_python(
        "import json\n"
        "from meshgen.blueprint.schema import blueprint_schema\n"
        "config, service = blueprint_schema('config'), blueprint_schema('Service')\n"
        "print(json.dumps([sorted(config['properties']), config['$defs']['Environment']['properties']['mesh'],"
        " service['$defs']['ServiceBlueprint']['properties']['mesh']['anyOf'][0]]))\n")
    sections, env_mesh, bp_mesh = json.loads(out)
    assert "toy" in sections
    assert env_mesh["enum"] == ["istio", "linkerd", "toy"] and env_mesh["default"] == "istio"
    assert bp_mesh == {"enum": ["istio", "linkerd", "toy"], "type": "string"}


def test_canary_gates_ask_it_for_its_series() -> None:
    out = toy_python(
        "from meshgen.canary.gates import Target, default_gates\n"
        "t = Target(mesh='toy', namespace='payments', service='api', version='v2', pod_labels={'version': '2.0'})\n"
        "for g in default_gates(t, 60, success_rate=99, latency_p99_ms=500): print(g.query)\n")
    success, latency = out.splitlines()
    assert success == ('(1 - (sum(rate(toy_requests_total{ns="payments", svc="api", v="2.0", code=~"5.."}[60s])) '
                       'or vector(0)) / sum(rate(toy_requests_total{ns="payments", svc="api", v="2.0"}[60s]))) * 100')
    assert latency == ('histogram_quantile(0.99, sum by (le) (rate(toy_latency_ms_bucket'
                       '{ns="payments", svc="api", v="2.0"}[60s])))')


# --- the registry itself, in this process ----------------------------------------------------------


def test_an_unknown_mesh_names_the_registered_ones() -> None:
    with pytest.raises(registry.UnknownMesh, match="unknown mesh 'consul'; meshgen renders istio, linkerd"):
        registry.mesh("consul")


def test_registration_refuses_a_mesh_twice_or_a_mismatched_renderer() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry._register(ISTIO, ISTIO)
    from dataclasses import replace

    with pytest.raises(ValueError, match="registers the renderer of 'istio'"):
        registry._register(replace(ISTIO, name="other"))


def test_a_blueprint_naming_an_unknown_mesh_is_an_error_at_its_line(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api.yaml": API + "mesh: consul\n",
                                          "payments/web.yaml": API.replace("api", "web") +
                                          "environments:\n  production: {mesh: kuma}\n"})
    with pytest.raises(BlueprintError) as info:
        render_repository(root)
    assert [str(d) for d in info.value.diagnostics if d.severity == "error"] == [
        "blueprints/payments/api.yaml:6:1: mesh: the string 'consul' is not allowed; input should be 'istio' or 'linkerd'",
        ("blueprints/payments/web.yaml:7:16: environments.production.mesh: the string 'kuma' is not allowed; "
         "input should be 'istio' or 'linkerd'"),
    ]
