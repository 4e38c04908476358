"""The `canary` section of a blueprint, `prometheus` in meshgen.yaml, and a step rendered for every mesh.

Errors are checked through the real command (`meshgen validate`), so they carry file:line:column
like every other field; a step's split is checked by meaning (which version a request reaches,
with what weight) on the rendered Istio, Gateway API and SMI objects, each valid against its
upstream schema.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import write_repo
from k8s_schema import validate_manifest
from render.meaning import Request, decide_istio, decide_linkerd, routes_istio, routes_linkerd

from meshgen.blueprint.config import Config
from meshgen.blueprint.model import ServiceBlueprint
from meshgen.canary.steps import with_weight
from meshgen.render.base import RenderContext
from meshgen.render.istio import IstioRenderer
from meshgen.render.linkerd import LinkerdRenderer

CONFIG = """\
environments:
  staging: {mesh: istio}
"""

GOOD = """\
service: api
namespace: payments
versions: [v1, v2]
routes:
  - name: beta
    match: {headers: {x-beta: "true"}}
    to: v2
  - name: default
    to: v1
    timeout: 3s
canary:
  stable: v1
  to: v2
  steps: [5, 25, 50, 100]
  interval: 5m
  gates:
    successRate: 99
    latencyP99: 500ms
    custom:
      - {name: queue-depth, query: 'max(queue_depth{app="{service}",version="{version}"})', max: 100}
  minRequests: 20
  failureLimit: 1
  approval: auto
  rollback: auto
environments:
  staging:
    canary:
      stable: v1
      to: v2
      steps: [50, 100]
      gates: {successRate: 95}
      approval: manual
"""


def _validate(tmp_path: Path, blueprint: str, config: str = CONFIG) -> subprocess.CompletedProcess[str]:
    root = write_repo(tmp_path / "repo", {"payments/api.yaml": blueprint}, config=config)
    return subprocess.run([sys.executable, "-m", "meshgen", "validate", str(root)], capture_output=True, text=True,
                          check=False)


def test_the_spec_example_validates(tmp_path: Path) -> None:
    result = _validate(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("canary", "expected"), [
    ("{stable: v1, to: v3, steps: [5, 100], gates: {successRate: 99}}",
     "api.yaml:12:22: [IST0101] canary.to: version 'v3' is not declared in `versions` (v1, v2)"),
    ("{stable: v1, to: v1, steps: [5, 100], gates: {successRate: 99}}",
     "canary: stable and to are both 'v1'"),
    ("{stable: v1, to: v2, steps: [50, 25, 100], gates: {successRate: 99}}",
     "canary.steps: steps must increase: [50, 25, 100]"),
    ("{stable: v1, to: v2, steps: [5, 50], gates: {successRate: 99}}",
     "canary.steps: the last step must be 100 (the new version serves everything), got 50; e.g. [5, 50, 100]"),
    ("{stable: v1, to: v2, steps: [0, 100], gates: {successRate: 99}}",
     "canary.steps: each step is a whole percentage from 1 to 100, got the number 0"),
    ("{stable: v1, to: v2, steps: [5, 100], gates: {}}",
     "canary.gates: a canary needs at least one gate"),
    ("{stable: v1, to: v2, steps: [5, 100], gates: {successRate: 101}}",
     "canary.gates.successRate: 101 is not a percentage"),
    ("{stable: v1, to: v2, steps: [5, 100], gates: {latencyP99: 500}}",
     "canary.gates.latencyP99: expected a duration string such as 500ms"),
    ("{stable: v1, to: v2, steps: [5, 100], gates: {custom: [{name: q, query: 'x'}]}}",
     "canary.gates.custom[0]: gate 'q' needs `max:`"),
    ("{stable: v1, to: v2, steps: [5, 100], gates: {custom: [{name: q, query: 'x', min: 5, max: 1}]}}",
     "gate 'q': min 5.0 is above max 1.0"),
    ("{stable: v1, to: v2, steps: [5, 100], gates: {successRate: 99}, minRequests: 0}",
     "canary.minRequests: 0 is too small; use a whole number >= 1"),
    ("{stable: v1, to: v2, steps: [5, 100], gates: {successRate: 99}, approval: yes}",
     "canary.approval: the string 'yes' is not allowed"),
    ("{stable: v1, to: v2, steps: [5, 100], gates: {successRate: 99}, intervall: 5m}",
     "canary.intervall: unknown key 'intervall', did you mean 'interval'?"),
])
def test_canary_errors_name_the_field_and_what_is_valid(tmp_path: Path, canary: str, expected: str) -> None:
    blueprint = "service: api\nnamespace: payments\nversions: [v1, v2]\nroutes:\n  - to: v1\n" + (
        "\n" * 6) + f"canary: {canary}\n"
    result = _validate(tmp_path, blueprint)
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_default_route_must_start_at_stable(tmp_path: Path) -> None:
    blueprint = GOOD.replace("  - name: default\n    to: v1\n", "  - name: default\n    to: {v1: 90, v2: 10}\n")
    result = _validate(tmp_path, blueprint)
    assert result.returncode == 1
    assert ("blueprints/payments/api.yaml:9:5: routes[1].to: the canary walks this default route from 'v1' to "
            "'v2', so it must send everything to 'v1'") in result.stderr


def test_prometheus_settings_and_per_environment_override() -> None:
    config = Config.model_validate({
        "environments": {"staging": {}, "production": {"prometheus": {"url": "http://prom.prod:9090/"}}},
        "prometheus": {"url": "http://prometheus.monitoring:9090", "tokenEnv": "MESHGEN_PROMETHEUS_TOKEN"},
    })
    staging, production = config.prometheus_for("staging"), config.prometheus_for("production")
    assert staging is not None and staging.url == "http://prometheus.monitoring:9090"
    assert staging.token_env == "MESHGEN_PROMETHEUS_TOKEN"
    assert production is not None and production.url == "http://prom.prod:9090"


def test_a_prometheus_url_with_credentials_is_refused(tmp_path: Path) -> None:
    config = CONFIG + "prometheus: {url: 'http://admin:hunter2@prom:9090'}\n"
    result = _validate(tmp_path, GOOD, config=config)
    assert result.returncode == 1
    assert "meshgen.yaml:3:" in result.stderr and "prometheus.url: expected an http(s) URL" in result.stderr
    assert "hunter2" not in result.stderr.split("got ")[0]


# --- a step, rendered ------------------------------------------------------------------------------

MESHES = {
    "istio": Config.model_validate({"environments": {"e": {"mesh": "istio"}}}),
    "linkerd": Config.model_validate({"environments": {"e": {"mesh": "linkerd"}}}),
    "linkerd-smi": Config.model_validate({"environments": {"e": {"mesh": "linkerd"}},
                                          "linkerd": {"trafficSplit": "smi"}}),
}


def _blueprint(routes: list[dict[str, Any]]) -> ServiceBlueprint:
    return ServiceBlueprint.model_validate({
        "service": "api", "namespace": "payments", "versions": ["v1", "v2"], "routes": routes,
        "canary": {"stable": "v1", "to": "v2", "steps": [5, 25, 100], "gates": {"successRate": 99}},
    })


def _render(flavour: str, bp: ServiceBlueprint) -> list[dict[str, Any]]:
    mesh = "istio" if flavour == "istio" else "linkerd"
    renderer = IstioRenderer() if mesh == "istio" else LinkerdRenderer()
    ctx = RenderContext(config=MESHES[flavour], env="e", mesh=mesh, blueprint_path="blueprints/api.yaml")
    bodies = [r.body for r in renderer.render_service(bp, ctx)]
    for body in bodies:
        validate_manifest(body)
    return bodies


def _split(flavour: str, bodies: list[dict[str, Any]], request: Request) -> tuple[tuple[str, int], ...]:
    if flavour == "istio":
        decision = decide_istio(routes_istio(bodies, "api", ["v1", "v2"]), request)
    elif flavour == "linkerd":
        decision = decide_linkerd(routes_linkerd(bodies, "api", 80, ["v1", "v2"]), request)
    else:
        (split,) = [b for b in bodies if b["kind"] == "TrafficSplit"]
        return tuple(sorted((s["service"].removeprefix("api-"), int(s["weight"])) for s in split["spec"]["backends"]))
    assert decision is not None
    return decision.backends


@pytest.mark.parametrize("flavour", sorted(MESHES))
@pytest.mark.parametrize("explicit_default", [True, False])
def test_a_step_moves_only_the_default_route(flavour: str, explicit_default: bool) -> None:
    routes: list[dict[str, Any]] = [{"name": "beta", "match": {"headers": {"x-beta": "true"}}, "to": "v2"}]
    if explicit_default:
        routes.append({"name": "default", "to": "v1", "timeout": "3s"})
    bp = _blueprint(routes)
    plain, beta = Request(), Request(headers=(("x-beta", "true"),))
    if flavour == "linkerd-smi":
        steps = {w: _split(flavour, _render(flavour, with_weight(bp, w)), plain) for w in (25, 100)}
        assert steps[25] == (("v1", 75), ("v2", 25))
        assert dict(steps[100]).get("v2") == 100 and dict(steps[100]).get("v1", 0) == 0
        return
    assert _split(flavour, _render(flavour, with_weight(bp, 25)), plain) == (("v1", 75), ("v2", 25))
    assert _split(flavour, _render(flavour, with_weight(bp, 100)), plain) == (("v2", 100),)
    # A route with a match keeps its own `to` at every step.
    assert _split(flavour, _render(flavour, with_weight(bp, 25)), beta) == (("v2", 100),)


@pytest.mark.parametrize("flavour", sorted(MESHES))
def test_weight_zero_renders_the_blueprint_as_written(flavour: str) -> None:
    bp = _blueprint([{"name": "default", "to": "v1", "timeout": "3s"}])
    assert with_weight(bp, 0) is bp
    assert _render(flavour, with_weight(bp, 0)) == _render(flavour, bp)


def test_a_step_keeps_the_default_routes_policies() -> None:
    bp = _blueprint([{"name": "default", "to": "v1", "timeout": "3s", "retries": False}])
    moved = with_weight(bp, 50).routes[0]
    assert moved.name == "default" and str(moved.timeout) == "3s" and moved.retries == bp.routes[0].retries
    assert [(b.version, b.weight) for b in moved.to or ()] == [("v1", 50), ("v2", 50)]
    with pytest.raises(ValueError, match="from 0 to 100"):
        with_weight(bp, 101)
