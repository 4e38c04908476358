"""A limit of the target mesh is the blueprint's error: file:line:col, field, message, exit 1.

Renderers raise RenderError(field path, message); the pipeline turns it into a Diagnostic, so
`meshgen render` prints it like any other blueprint error (never a traceback), and a sync treats
it like any other broken blueprint: its unit is held back as render-failed with the diagnostic, the
job ends (partial, with the error), nothing of that unit is pushed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pygit2
from helpers import write_repo
from sync_support import REDIS_DB_URL, env_repo, make_root, redis_namespace

from meshgen.gitops.sync import sync_repository
from meshgen.settings import Settings

LINKERD = """\
environments:
  production: {mesh: linkerd, path: production}
"""


def _many_routes(n: int) -> str:
    routes = "".join(f"  - name: r{i}\n    match: {{path: {{exact: /r{i}}}}}\n    to: v1\n" for i in range(n))
    return (
        "service: api\n"
        "namespace: shop\n"
        "versions: {v1: {version: v1}}\n"
        "ingress:\n"
        "  hosts: [api.example.com]\n"
        "  gateway: edge/public\n"
        f"routes:\n{routes}"
    )


def _meshgen(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=120)


def test_linkerd_ingress_over_16_rules_is_a_diagnostic_not_a_traceback(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"shop/api.yaml": _many_routes(21)}, config=LINKERD)
    run = _meshgen("render", root, "--out", tmp_path / "out")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    # `ingress:` is on line 4, column 1 of the blueprint
    assert ("blueprints/shop/api.yaml:4:1: ingress: linkerd 2.18 httproute+annotations: ingress needs more than "
            "16 HTTPRoute rules") in run.stderr
    assert "simplify the route matches" in run.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written
    # the same blueprint with 15 routes (16 rules with the default) renders
    ok = write_repo(tmp_path / "ok", {"shop/api.yaml": _many_routes(15)}, config=LINKERD)
    assert _meshgen("render", ok, "--out", tmp_path / "out-ok").returncode == 0


def test_kind_ingress_over_16_rules_points_at_routes(tmp_path: Path) -> None:
    routes = "".join(f"  - match: {{path: {{exact: /p{i}}}}}\n    to: {{service: api}}\n" for i in range(17))
    text = f"kind: Ingress\nname: edge\nnamespace: shop\nhosts: [a.example.com]\ngateway: public\nroutes:\n{routes}"
    root = write_repo(tmp_path / "repo", {"shop/edge.yaml": text}, config=LINKERD)
    run = _meshgen("render", root, "--out", tmp_path / "out")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "blueprints/shop/edge.yaml:6:1: routes: linkerd 2.18 httproute+annotations: these routes need 17 " \
           "HTTPRoute rules, Gateway API allows 16" in run.stderr


def test_a_sync_with_a_renderer_error_holds_back_its_unit_with_the_diagnostic(tmp_path: Path) -> None:
    """The job ends (partial: the healthy unit still syncs), never `running`; the broken unit is
    render-failed with the diagnostic, and nothing of it is pushed."""
    root = make_root(tmp_path / "bp", ["cart"])
    with redis_namespace("render-error") as rns:
        settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, lock_ttl=2, lock_wait=5)
        sync_repository(root, settings, records=rns.records)
        (root / "blueprints" / "api.yaml").write_text("mesh: linkerd\n" + _many_routes(21))
        job = sync_repository(root, settings, records=rns.records)
        assert job.state == "partial"
        recorded = rns.records.get_job(job.id)
        assert recorded is not None and recorded.state == "partial"
        expected = "blueprints/api.yaml:5:1: ingress: linkerd 2.18 httproute+annotations: ingress needs more than 16"
        assert any(e.startswith(expected) for e in recorded.errors), recorded.errors
        unit = rns.records.get_unit("production", "shop", "api")
        assert unit is not None and unit.render_state == "render-failed"
        assert (unit.render_error or "").startswith(expected)
        repo = pygit2.Repository(str(env_repo(root)))
        assert not [r for r in repo.references if r.endswith("/shop/api")]  # nothing of it pushed
