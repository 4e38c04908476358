"""`meshgen render / validate / diff / schema` as users run them (the real console entry point)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import write_repo

from meshgen.blueprint.yamlsource import load_document

EXAMPLES = Path(__file__).resolve().parents[1] / "blueprints"
API = """\
service: api-service
namespace: payments
versions: {v1: {version: v1}, v2: {version: v2}}
routes:
  - name: canary
    match: {headers: {x-canary: "true"}}
    to: v2
  - name: default
    to: {v1: 90, v2: 10}
    retries: {attempts: 3, perTryTimeout: 2s, on: [5xx]}
    timeout: 10s
mtls: strict
access:
  - from: [frontend]
"""


def meshgen(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_render_lays_out_one_resource_per_file(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api-service.yaml": API})
    run = meshgen("render", root, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    files = tree(tmp_path / "out")
    assert "production/payments/api-service/virtualservice-api-service.yaml" in files
    assert "staging/payments/api-service/destinationrule-api-service.yaml" in files
    for path, data in files.items():
        doc = yaml.safe_load(data)
        assert list(doc)[:3] == ["apiVersion", "kind", "metadata"], path
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "meshgen"
        assert labels["meshgen.dev/service"] == "api-service"
        assert labels["meshgen.dev/team"] == "payments"
        assert doc["metadata"]["annotations"]["meshgen.dev/blueprint"] == "blueprints/payments/api-service.yaml"
        assert path.endswith(f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml")


def test_output_is_byte_identical_across_runs_and_discovery_order(tmp_path: Path) -> None:
    names = sorted(p.relative_to(EXAMPLES / "blueprints").as_posix() for p in (EXAMPLES / "blueprints").rglob("*.yaml"))
    for label, order in (("a", names), ("b", list(reversed(names)))):
        root = tmp_path / label
        root.mkdir()
        shutil.copy(EXAMPLES / "meshgen.yaml", root / "meshgen.yaml")
        for name in order:  # files created in a different order: different directory order on disk
            (root / "blueprints" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(EXAMPLES / "blueprints" / name, root / "blueprints" / name)
        for n in (1, 2):
            run = meshgen("render", root, "--out", tmp_path / f"out-{label}{n}", "--no-cache")
            assert run.returncode == 0, run.stderr
    first = tree(tmp_path / "out-a1")
    assert len(first) > 40
    assert first == tree(tmp_path / "out-a2") == tree(tmp_path / "out-b1") == tree(tmp_path / "out-b2")
    assert not any(b"timestamp" in v or b"creationTimestamp" in v for v in first.values())


def test_errors_exit_1_and_write_nothing(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api-service.yaml": API, "payments/bad.yaml": "service: b\nnamespace: payments\ntimeout: soon\n"})
    run = meshgen("render", root, "--out", tmp_path / "out")
    assert run.returncode == 1
    assert "blueprints/payments/bad.yaml:3:1: timeout: 'soon' is not a duration" in run.stderr
    assert "nothing was written" in run.stderr
    assert not (tmp_path / "out").exists()


def test_validate_reports_analysis_warnings_and_strict_fails_on_them(tmp_path: Path) -> None:
    shadowed = API.replace("  - name: default\n", "  - name: again\n    match: {headers: {x-canary: \"true\"}}\n    to: v1\n  - name: default\n")
    root = write_repo(tmp_path / "repo", {"payments/api-service.yaml": shadowed})
    run = meshgen("validate", root)
    assert run.returncode == 0, run.stderr
    assert "warning: [IST0130] routes[1].match: this route can never match: route 'canary' has the identical match" in run.stderr
    assert meshgen("validate", root, "--strict").returncode == 1


def test_render_only_one_environment(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api-service.yaml": API})
    assert meshgen("render", root, "--out", tmp_path / "out", "--env", "staging").returncode == 0
    assert {p.split("/")[0] for p in tree(tmp_path / "out")} == {"staging"}
    bad = meshgen("render", root, "--out", tmp_path / "out2", "--env", "qa")
    assert bad.returncode == 1 and "--env qa: no such environment (environments: staging, production)" in bad.stderr


def test_rerender_touches_only_what_changed_and_removes_what_is_gone(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api-service.yaml": API,
                                          "catalog/reviews.yaml": "service: reviews\nnamespace: catalog\ntimeout: 3s\n"})
    out = tmp_path / "out"
    first = meshgen("render", root, "--out", out)
    assert first.returncode == 0 and "2 blueprints rendered" in first.stderr
    vs = out / "production/payments/api-service/virtualservice-api-service.yaml"
    reviews = out / "production/catalog/reviews/virtualservice-reviews.yaml"
    before = reviews.stat().st_mtime_ns
    (root / "blueprints/payments/api-service.yaml").write_text(API.replace("v1: 90, v2: 10", "v1: 75, v2: 25"))
    second = meshgen("render", root, "--out", out)
    assert second.returncode == 0, second.stderr
    assert "1 blueprints rendered, 1 unchanged" in second.stderr
    weights = [d.get("weight") for d in yaml.safe_load(vs.read_text())["spec"]["http"][1]["route"]]
    assert weights == [75, 25]
    assert reviews.stat().st_mtime_ns == before  # untouched
    (root / "blueprints/catalog/reviews.yaml").unlink()
    third = meshgen("render", root, "--out", out)
    assert third.returncode == 0 and not (out / "production/catalog").exists()
    # The cached result is the same as a cold render.
    cold = tmp_path / "cold"
    assert meshgen("render", root, "--out", cold, "--no-cache").returncode == 0
    assert tree(cold) == tree(out)


def test_diff_reads_like_a_review(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api-service.yaml": API})
    out = tmp_path / "out"
    assert meshgen("render", root, "--out", out).returncode == 0
    (root / "blueprints/payments/api-service.yaml").write_text(
        API.replace("v1: 90, v2: 10", "v1: 75, v2: 25") + "  - from: [mobile-app]\n    methods: [GET, POST]\n    paths: [/api/v1/*]\n")
    run = meshgen("diff", root, "--against", out, "--env", "production", "--exit-code")
    assert run.returncode == 2, run.stderr
    lines = run.stdout.splitlines()
    assert "production: VirtualService payments/api-service: route default: weight v1 90 → 75" in lines
    assert "production: VirtualService payments/api-service: route default: weight v2 10 → 25" in lines
    assert "production: AuthorizationPolicy payments/api-service: access: + payments/mobile-app GET,POST /api/v1/*" \
        in lines
    same = meshgen("diff", root, "--against", out, "--env", "staging", "--exit-code")
    assert same.returncode == 2  # staging changed too (no overlay)


def test_diff_keys_resources_by_environment(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api-service.yaml": API})
    out = tmp_path / "out"
    assert meshgen("render", root, "--out", out).returncode == 0
    # The same resource changes differently in each environment: neither hides the other.
    (root / "blueprints/payments/api-service.yaml").write_text(
        API.replace("v1: 90, v2: 10", "v1: 75, v2: 25")
        + "environments:\n  staging:\n    routes: [{name: default, to: {v1: 50, v2: 50}}]\n"
        + "  production: {}\n")
    (root / "blueprints/payments/web.yaml").write_text(
        "service: web\nnamespace: payments\nversions: {v1: {version: v1}}\n"
        "routes:\n  - name: beta\n    match: {headers: {x-beta: \"1\"}, path: {prefix: /beta}}\n    to: v1\n"
        "  - name: default\n    to: v1\naccess:\n  - from: [edge/web-gateway]\n")
    run = meshgen("diff", root, "--against", out, "--exit-code")
    assert run.returncode == 2, run.stderr
    lines = run.stdout.splitlines()
    assert "production: VirtualService payments/api-service: route default: weight v2 10 → 25" in lines
    assert "staging: VirtualService payments/api-service: route default: weight v2 10 → 50" in lines
    assert all(line.split(":", 1)[0] in ("staging", "production") for line in lines)
    assert "production: + VirtualService payments/web" in lines
    summary = lines[lines.index("production: + VirtualService payments/web") + 1]
    assert "route beta: when" in summary and "header x-beta=1" in summary and "^=/beta" in summary
    assert any("access: edge/web-gateway" in line for line in lines)


def test_diff_against_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"payments/api-service.yaml": API})
    run = meshgen("diff", root, "--against", tmp_path / "nope")
    assert run.returncode == 2 and "does not exist" in run.stderr and not run.stdout


def test_schema_validates_the_examples(tmp_path: Path) -> None:
    import jsonschema

    run = meshgen("schema")
    assert run.returncode == 0
    schema = json.loads(run.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((EXAMPLES / "blueprints").rglob("*.yaml")):
        # As an editor sees it: YAML 1.2 (`on:` is a key) and JSON's string keys.
        doc = json.loads(json.dumps(load_document(path.read_bytes()).data))
        errors = list(validator.iter_errors(doc))
        assert not errors, (path, [e.message for e in errors])
    assert list(validator.iter_errors({"service": "a", "namespace": "b", "retires": 3}))


def test_the_examples_repository_validates_cleanly() -> None:
    run = meshgen("validate", EXAMPLES, "--strict")
    assert run.returncode == 0, run.stderr


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "meshgen"
    run = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and "meshgen" in run.stdout


def test_readme_capability_table_is_what_the_renderers_declare() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    table = readme.split("<!-- capabilities -->\n", 1)[1].split("\n<!-- /capabilities -->", 1)[0]
    run = meshgen("capabilities", "--format", "markdown")
    assert run.returncode == 0
    assert table == run.stdout.strip(), "README is stale: paste the output of `meshgen capabilities` between the markers"


def test_top_level_help_lists_lazy_commands_without_importing_them() -> None:
    import importlib

    from meshgen.cli import LAZY_COMMANDS

    # The one-line help kept beside each lazy command is the command's own.
    for name, (target, line) in LAZY_COMMANDS.items():
        module, attr = target.split(":")
        assert getattr(importlib.import_module(module), attr).get_short_help_str(10_000) == line, name
    probe = ("import sys, runpy; sys.argv = ['meshgen', '--help']\n"
             "try:\n    runpy.run_module('meshgen', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('pygit2', 'celery', 'fastapi') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "pr            Pull requests of the local forge" in run.stdout
    assert run.stdout.strip().endswith("[]")  # none of the heavy imports happened


def test_an_unexpected_exception_is_one_line_and_exit_70_not_a_traceback(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Expected failures have their own messages; a bug gets one line saying it is one, and how to get
    the traceback (MESHGEN_DEBUG=1), from the same group class `meshgen` runs."""
    import click
    from click.testing import CliRunner

    from meshgen.cli import EXIT_INTERNAL_ERROR, LazyGroup

    group = LazyGroup(name="meshgen", lazy_subcommands={})

    @group.command()
    def boom() -> None:
        raise RuntimeError("deep\n\x1b[31mfailure")

    @group.command()
    def usage() -> None:
        raise click.UsageError("bad flag")

    monkeypatch.delenv("MESHGEN_DEBUG", raising=False)
    result = CliRunner().invoke(group, ["boom"])
    assert result.exit_code == EXIT_INTERNAL_ERROR == 70
    assert "Traceback" not in result.output
    assert "meshgen: internal error: RuntimeError: deep\\n\\x1b[31mfailure" in result.output
    assert "MESHGEN_DEBUG=1" in result.output
    assert CliRunner().invoke(group, ["usage"]).exit_code == 2  # click's own errors keep their status
    monkeypatch.setenv("MESHGEN_DEBUG", "1")
    result = CliRunner().invoke(group, ["boom"])
    assert isinstance(result.exception, RuntimeError)


def test_rendering_does_not_load_the_forges(tmp_path: Path) -> None:
    """A render reads meshgen.yaml, whose envRepo.forge is checked against the forge registry only when
    someone wrote one: the forge providers (HTTP clients, pygit2 PRs) are not a render's import cost."""
    root = write_repo(tmp_path / "repo", {"payments/cart.yaml": "service: cart\nnamespace: payments\n"})
    code = ("import sys\nfrom pathlib import Path\nfrom meshgen.pipeline import render_repository\n"
            f"result = render_repository(Path({str(root)!r}))\n"
            "print(len(result.units), sorted(m for m in sys.modules if m.startswith('meshgen.forges')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = run.stdout.split()
    assert out == ["2", "[]"], out  # staging and production
    written = root / "meshgen.yaml"
    written.write_text(written.read_text() + "envRepo:\n  forge: {kind: github}\n")
    check = subprocess.run([sys.executable, "-m", "meshgen", "validate", str(root)], capture_output=True, text=True)
    assert check.returncode == 1 and "forge kind 'github' needs owner, repo" in check.stderr, check.stderr


def test_a_reader_closing_the_pipe_is_not_an_internal_error() -> None:
    """`meshgen schema | head` and the like: the reader goes away before meshgen has written. That ends
    the command quietly with the shell's status for SIGPIPE, not with "internal error" or a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "meshgen", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even imported meshgen: its first write fails
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == "", stderr
