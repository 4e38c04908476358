"""`meshgen plan` (issue 10, item 7): a real git repository, rendered at two revisions, as users run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pygit2
from helpers import write_repo

API = """\
service: api
namespace: payments
team: payments
versions: {v1: {version: v1}, v2: {version: v2}}
routes:
  - name: default
    to: {v1: 90, v2: 10}
access:
  - from: [frontend]
"""
WEB = API.replace("service: api", "service: web")


def meshgen(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def commit_all(root: Path, message: str) -> str:
    repo = pygit2.Repository(str(root)) if (root / ".git").exists() else pygit2.init_repository(str(root),
                                                                                                initial_head="main")
    repo.index.add_all()
    repo.index.write()
    sig = pygit2.Signature("Ada", "ada@example.com")
    parents = [] if repo.head_is_unborn else [repo.head.target]
    return str(repo.create_commit("HEAD", sig, sig, message, repo.index.write_tree(), parents))


def test_plan_json_markdown_and_revisions(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "bp", {"payments/api.yaml": API, "payments/web.yaml": WEB})
    base = commit_all(root, "base")
    (root / "blueprints/payments/api.yaml").write_text(
        API.replace("v1: 90, v2: 10", "v1: 75, v2: 25") + "  - from: [edge/gateway]\n")
    (root / "blueprints/payments/web.yaml").unlink()
    (root / "blueprints/payments/new.yaml").write_text(API.replace("service: api", "service: new"))
    run = meshgen("plan", root, "--base", "main", "--format", "json")
    assert run.returncode == 0, run.stderr
    units = json.loads(run.stdout)
    assert all(set(u) == {"env", "namespace", "service", "changes", "warnings", "errors"} for u in units)
    by = {(u["env"], u["service"]): u for u in units}
    assert {env for env, _ in by} == {"staging", "production"}
    api = by[("production", "api")]
    assert "VirtualService payments/api: route default: weight v2 10 → 25" in api["changes"]
    assert any("access: + payments/gateway" not in c and "edge/gateway" in c for c in api["changes"])
    assert by[("production", "web")]["changes"][0].startswith("- ")  # a deleted blueprint removes its resources
    assert by[("staging", "new")]["changes"][0].startswith("+ ")
    assert not any(u["errors"] for u in units)
    # The same plan between two commits, in markdown.
    head = commit_all(root, "change")
    md = meshgen("plan", root, "--base", base, "--head", head)
    assert md.returncode == 0, md.stderr
    assert f"`{base[:12]}` → `{head[:12]}`" in md.stdout and "### production" in md.stdout
    assert "#### payments/api" in md.stdout and "weight v2 10 → 25" in md.stdout
    # Nothing changed: nothing planned.
    same = meshgen("plan", root, "--base", head, "--format", "json")
    assert same.returncode == 0 and json.loads(same.stdout) == []


def test_plan_exits_1_with_errors_at_file_and_line(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "bp", {"payments/api.yaml": API, "payments/web.yaml": WEB})
    commit_all(root, "base")
    (root / "blueprints/payments/web.yaml").write_text(WEB.replace("v1: 90, v2: 10", "v1: 90, v2: 20"))
    (root / "blueprints/payments/api-copy.yaml").write_text(API)  # claims payments/api a second time
    run = meshgen("plan", root, "--base", "main", "--format", "json")
    assert run.returncode == 1
    units = {(u["env"], u["service"]): u for u in json.loads(run.stdout)}
    web = units[("production", "web")]["errors"]
    assert web and web[0].startswith("blueprints/payments/web.yaml:") and "sum to 100" in web[0]
    assert any("also claimed" in e for e in units[("production", "api")]["errors"])
    assert "blueprints/payments/web.yaml:" in run.stderr
    # Unknown revisions and non-repositories are clear errors.
    bad = meshgen("plan", root, "--base", "no-such-branch")
    assert bad.returncode == 1 and "no-such-branch" in bad.stderr and "Traceback" not in bad.stderr
    plain = write_repo(tmp_path / "plain", {"payments/api.yaml": API})
    assert "not inside a git repository" in meshgen("plan", plain, "--base", "main").stderr


AMBIENT = """\
environments:
  staging: {mesh: istio, path: staging}
istio: {dataplane: ambient}
teams:
  payments: {namespaces: [payments]}
"""
REGEX_REWRITE = API.replace("  - name: default\n", "  - name: default\n    match: {path: {regex: \"/v[0-9]+/.*\"}}\n"
                            "    rewrite: /\n")


def test_cold_parallel_and_warm_plans_agree_even_on_errors_only_a_render_finds(tmp_path: Path) -> None:
    # api.yaml is unchanged and fails only when its resources are built (Gateway API cannot rewrite a
    # regex path): a plan reads unchanged files without serializing them, and must still report it.
    root = write_repo(tmp_path / "bp", {"payments/api.yaml": REGEX_REWRITE, "payments/web.yaml": WEB}, AMBIENT)
    commit_all(root, "base")
    (root / "blueprints/payments/web.yaml").write_text(WEB.replace("v1: 90, v2: 10", "v1: 80, v2: 20"))
    spread = ("import sys; import meshgen.pipeline as p; p.PARALLEL_MIN_FILES = 1; from meshgen.cli import main; "
              "sys.argv[0] = 'meshgen'; main()")
    runs = []
    for how in ("in-process", "forked", "warm"):
        if how != "warm":
            shutil.rmtree(root / ".meshgen", ignore_errors=True)
        args = ["plan", str(root), "--base", "main", "--format", "json"]
        cmd = [sys.executable, "-c", spread, *args] if how == "forked" else [sys.executable, "-m", "meshgen", *args]
        run = subprocess.run(cmd, capture_output=True, text=True)
        runs.append((run.returncode, run.stdout, run.stderr))
    assert runs[0] == runs[1] == runs[2]
    code, out, err = runs[0]
    assert code == 1 and "blueprints/payments/api.yaml:" in err and "cannot be rewritten" in err
    units = {u["service"]: u for u in json.loads(out)}
    assert "10 → 20" in " ".join(units["web"]["changes"])
    assert any("cannot be rewritten" in e for e in units["api"]["errors"])


def test_plan_of_a_hostile_revision_skips_symlinks_and_submodules_and_never_reads_a_huge_blob(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "bp", {"payments/api.yaml": API})
    base = commit_all(root, "base")
    repo = pygit2.Repository(str(root))
    huge = repo.create_blob(b"# filler\n" * 200_000)  # 1.8 MB: over the 256 KiB limit of a blueprint
    payments = repo.TreeBuilder(repo[base].peel(pygit2.Commit).tree["blueprints/payments"].peel(pygit2.Tree))
    payments.insert("evil.yaml", repo.create_blob(b"/etc/passwd"), pygit2.GIT_FILEMODE_LINK)
    payments.insert("sub.yaml", pygit2.Oid(hex="12" * 20), pygit2.GIT_FILEMODE_COMMIT)  # not in this repository
    payments.insert("huge.yaml", huge, pygit2.GIT_FILEMODE_BLOB)
    blueprints = repo.TreeBuilder(repo[base].peel(pygit2.Commit).tree["blueprints"].peel(pygit2.Tree))
    blueprints.insert("payments", payments.write(), pygit2.GIT_FILEMODE_TREE)
    top = repo.TreeBuilder(repo[base].peel(pygit2.Commit).tree)
    top.insert("blueprints", blueprints.write(), pygit2.GIT_FILEMODE_TREE)
    sig = pygit2.Signature("Mallory", "m@example.com")
    head = str(repo.create_commit(None, sig, sig, "hostile", top.write(), [pygit2.Oid(hex=base)]))
    run = meshgen("plan", root, "--base", base, "--head", head, "--format", "json")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "blueprints/payments/huge.yaml:1:1: file is" in run.stderr and "over the 262144-byte limit" in run.stderr
    assert "evil.yaml" not in run.stderr + run.stdout and "sub.yaml" not in run.stderr + run.stdout
    # Odd revisions are revisions, never options, and name what to do.
    for rev in ("--upload-pack=touch x", "", "HEAD~9"):
        odd = meshgen("plan", root, "--base", rev)
        assert odd.returncode == 1 and "fetch it, or name a branch" in odd.stderr and "Traceback" not in odd.stderr


def test_plan_lists_environments_in_meshgen_yaml_order_and_a_blocked_unit_is_not_called_unchanged(
        tmp_path: Path) -> None:
    root = write_repo(tmp_path / "bp", {"payments/api.yaml": API, "payments/web.yaml": WEB})
    commit_all(root, "base")
    (root / "blueprints/payments/api.yaml").write_text(API.replace("v1: 90, v2: 10", "v1: 80, v2: 20"))
    (root / "blueprints/payments/web.yaml").write_text(WEB + "routes: [oops\n")
    md = meshgen("plan", root, "--base", "main")
    assert md.returncode == 1
    assert md.stdout.index("### staging") < md.stdout.index("### production")  # as in meshgen.yaml
    web = md.stdout[md.stdout.index("#### payments/web"):]
    assert web.split("```text\n", 1)[1].startswith("(not planned: its blueprint has errors, below)")
    units = json.loads(meshgen("plan", root, "--base", "main", "--format", "json").stdout)
    assert [u["env"] for u in units] == ["staging"] * 2 + ["production"] * 2
