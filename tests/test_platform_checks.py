"""Checks that catch platform mistakes early (issue 14): Argo CD Application name clashes, overlays that
drop routes, and every error of a file reported in one run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_repo

from meshgen.diagnostics import BlueprintError
from meshgen.output import render_to_dir
from meshgen.pipeline import render_repository

CLASH_CONFIG = """\
environments:
  staging: {mesh: istio}
teams:
  payments: {namespaces: [payments]}
  catalog: {namespaces: [catalog]}
"""
CLASH = {
    "payments/api.yaml": "service: api\nnamespace: payments\n",
    "catalog/api.yaml": "service: api\nnamespace: catalog\n",
}
CLASH_MESSAGE = ("the Argo CD Application of payments/api in environment staging would be named 'api-staging' "
                 "(argocd.nameTemplate '{service}-{env}'), like that of catalog/api (blueprints/catalog/api.yaml)")


def meshgen(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("command", ["validate", "render", "sync", "bootstrap"])
def test_one_service_name_in_two_namespaces_clashes_in_argocd(tmp_path: Path, command: str) -> None:
    root = write_repo(tmp_path / "bp", CLASH, config=CLASH_CONFIG)
    args = {
        "validate": ["validate", root],
        "render": ["render", root, "--out", tmp_path / "out"],
        "sync": ["sync", root, "--no-records"],
        "bootstrap": ["bootstrap", "argocd", root, "--repo-url", "https://git.example.com/env.git"],
    }[command]
    run = meshgen(*args)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert f"blueprints/payments/api.yaml:1:1: service: {CLASH_MESSAGE}" in run.stderr, run.stderr
    assert "put {namespace} in argocd.nameTemplate" in run.stderr
    assert not (tmp_path / "out").exists()  # nothing written
    env_repo = root / ".meshgen" / "env-repo"
    if env_repo.exists():  # sync: no branch, no pull request
        import pygit2

        assert not [r for r in pygit2.Repository(str(env_repo)).references if r.startswith("refs/heads/meshgen/")]


def test_a_name_template_with_the_namespace_has_no_clash(tmp_path: Path) -> None:
    config = CLASH_CONFIG + "argocd:\n  nameTemplate: \"{service}-{namespace}-{env}\"\n"
    root = write_repo(tmp_path / "bp", CLASH, config=config)
    assert len(render_repository(root).units) == 2
    run = meshgen("bootstrap", "argocd", root, "--repo-url", "https://git.example.com/env.git")
    assert run.returncode == 0, run.stderr


def test_an_overlay_that_drops_a_named_route_warns_naming_it(tmp_path: Path) -> None:
    bp = """\
service: api
namespace: payments
versions: [v1, v2]
routes:
  - name: canary-header
    match: {headers: {x-canary: "true"}}
    to: v2
  - name: default
    to: {v1: 90, v2: 10}
environments:
  staging:
    routes: [{name: default, to: {v1: 50, v2: 50}}]
  production: {}
"""
    config = "environments:\n  staging: {mesh: istio}\n  production: {mesh: istio}\n"
    result = render_repository(write_repo(tmp_path / "bp", {"p/api.yaml": bp}, config=config))
    assert [str(w) for w in result.warnings] == [
        "blueprints/p/api.yaml:12:5: warning: environments.staging.routes: environment staging: this overlay replaces "
        "the whole route list and drops route(s) 'canary-header' of the base; repeat them here to keep them in this "
        "environment (an overlay never merges lists)"
    ]


def test_a_misspelt_key_hides_neither_a_weights_error_nor_an_undeclared_version(tmp_path: Path) -> None:
    bp = """\
service: api-service
namespace: payments
versions: {v1: {version: v1}, v2: {version: v2}}
routes:
  - name: canary
    match: {headers: {x-canary: "true"}}
    to: v3
  - name: default
    to: {v1: 95, v2: 10}
    retires: {attempts: 3}
"""
    root = write_repo(tmp_path / "bp", {"payments/api.yaml": bp})
    with pytest.raises(BlueprintError) as info:
        render_repository(root)
    assert [str(d) for d in info.value.diagnostics if d.severity == "error"] == [
        "blueprints/payments/api.yaml:7:5: [IST0101] routes[0].to: version 'v3' is not declared in `versions` (v1, v2)",
        "blueprints/payments/api.yaml:9:5: routes[1].to: weights must sum to 100, these sum to 105 (95 + 10)",
        "blueprints/payments/api.yaml:10:5: routes[1].retires: unknown key 'retires', did you mean 'retries'? "
        "(valid keys: fault, match, name, retries, rewrite, timeout, to)",
    ]
    with pytest.raises(BlueprintError):
        render_to_dir(root, tmp_path / "out")  # the render command's path reports the same, writes nothing
    assert not (tmp_path / "out").exists()


def test_render_one_environment_after_a_full_render_rewrites_nothing(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "blueprints"
    out = tmp_path / "out"
    full = render_to_dir(examples, out, use_cache=False)
    assert full.written == full.files
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.yaml")}
    staging = render_to_dir(examples, out, env="staging", use_cache=False)
    assert staging.written == 0 and staging.removed == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.yaml")} == before
