"""A render spread over worker processes says and writes exactly what a render in one process does.

From PARALLEL_MIN_FILES changed blueprints up, `meshgen render` forks workers that render,
hold their output until every diagnostic of the run is known, then write it themselves.
These tests run the real command on a fleet just above that size, once with `--jobs 1`
(in-process) and once with `--jobs 2`, and compare what users see: files, bytes, messages.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_repo

from meshgen.pipeline import PARALLEL_MIN_FILES

pytestmark = pytest.mark.slow

N = PARALLEL_MIN_FILES + 20
CONFIG = """\
environments:
  staging: {mesh: istio, path: staging}
  production: {mesh: linkerd, path: production}
unsupported: warn
teams:
  team-a: {namespaces: [ns-a]}
  team-b: {namespaces: [ns-b]}
"""


def blueprint(i: int, *, retries: int = 3) -> str:
    team = "team-a" if i % 2 else "team-b"
    ns = "ns-a" if i % 2 else "ns-b"
    # Every third service uses consistent hashing, which Linkerd cannot express: a warning
    # in production, nothing in staging.
    lb = "loadBalancing: {consistentHash: {header: x-user}}\n" if i % 3 == 0 else ""
    return (
        f"service: svc-{i:04d}\nnamespace: {ns}\nteam: {team}\n"
        "versions: {v1: {version: v1}, v2: {version: v2}}\n"
        "routes:\n"
        "  - name: canary\n    match: {headers: {x-canary: \"true\"}}\n    to: v2\n"
        f"  - name: default\n    to: {{v1: 90, v2: 10}}\n    retries: {{attempts: {retries}}}\n"
        "mtls: strict\naccess:\n  - from: [frontend]\n    methods: [GET]\n" + lb
    )


def fleet(root: Path) -> Path:
    return write_repo(root, {f"team-{i % 7}/svc-{i:04d}.yaml": blueprint(i) for i in range(N)}, config=CONFIG)


def meshgen(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", *map(str, args)], capture_output=True, text=True)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_spread_render_writes_and_reports_what_an_in_process_render_does(tmp_path: Path) -> None:
    root = fleet(tmp_path / "repo")
    one = meshgen("render", root, "--out", tmp_path / "one", "--jobs", "1", "--no-cache")
    two = meshgen("render", root, "--out", tmp_path / "two", "--jobs", "2", "--no-cache")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    files = tree(tmp_path / "one")
    assert files == tree(tmp_path / "two")
    assert one.stderr.replace(str(tmp_path / "one"), "OUT") == two.stderr.replace(str(tmp_path / "two"), "OUT")
    # Both meshes, every service: Istio's 4 objects in staging, Linkerd's 8 in production.
    assert len([f for f in files if f.startswith("staging/")]) == 4 * N
    assert len([f for f in files if f.startswith("production/")]) == 8 * N
    assert f"{12 * N} files" in two.stderr and f"{N} blueprints rendered" in two.stderr
    assert "blueprints/team-0/svc-0000.yaml" in two.stderr  # the first warning, with its file
    assert "loadBalancing.consistentHash" in two.stderr


def test_an_error_anywhere_in_a_spread_render_writes_nothing(tmp_path: Path) -> None:
    root = fleet(tmp_path / "repo")
    # One file with a schema error, and one service declared twice (a fleet-level error).
    (root / "blueprints/team-3/svc-0300.yaml").write_text(blueprint(300).replace("attempts: 3", "attempts: many"))
    (root / "blueprints/team-0/dup.yaml").write_text(blueprint(7))
    run = meshgen("render", root, "--out", tmp_path / "out", "--jobs", "2")
    assert run.returncode == 1
    assert "blueprints/team-3/svc-0300.yaml:11:15: routes[1].retries.attempts: expected a whole number" in run.stderr
    assert "blueprints/team-0/dup.yaml:1:1: [IST0109] service: service ns-a/svc-0007" in run.stderr
    assert "nothing was written" in run.stderr
    assert not (tmp_path / "out").exists() or tree(tmp_path / "out") == {}


def test_a_spread_rerender_writes_only_outputs_whose_content_changed(tmp_path: Path) -> None:
    root = fleet(tmp_path / "repo")
    out = tmp_path / "out"
    first = meshgen("render", root, "--out", out, "--jobs", "2")
    assert first.returncode == 0, first.stderr
    before = {rel: os.stat(out / rel) for rel in tree(out)}
    # Every blueprint changes (enough for a spread render); only svc-0001's retries change what
    # is rendered, and only in its default HTTPRoute / VirtualService.
    for i in range(N):
        path = root / f"blueprints/team-{i % 7}/svc-{i:04d}.yaml"
        path.write_text(f"# reviewed\n{blueprint(i, retries=5 if i == 1 else 3)}")
    (root / "blueprints/team-2/svc-0002.yaml").unlink()
    again = meshgen("render", root, "--out", out, "--jobs", "2")
    assert again.returncode == 0, again.stderr
    assert f"{N - 1} blueprints rendered" in again.stderr
    after = tree(out)
    written = sorted(rel for rel in after if os.stat(out / rel).st_mtime_ns != before[rel].st_mtime_ns)
    assert written == ["production/ns-a/svc-0001/httproute-svc-0001-default.yaml",
                       "staging/ns-a/svc-0001/virtualservice-svc-0001.yaml"]
    assert "(2 written, 12 removed" in again.stderr
    assert not any("svc-0002" in rel for rel in after)
    assert b"retry.linkerd.io/limit: \"5\"" in after["production/ns-a/svc-0001/httproute-svc-0001-default.yaml"]
    # The cache now matches the folder: nothing to do.
    idle = meshgen("render", root, "--out", out, "--jobs", "2")
    assert "(0 written, 0 removed, 0 blueprints rendered" in idle.stderr


def test_diff_against_a_spread_render_finds_nothing(tmp_path: Path) -> None:
    root = fleet(tmp_path / "repo")
    assert meshgen("render", root, "--out", tmp_path / "out", "--jobs", "2").returncode == 0
    # `diff` renders the whole fleet again (spread, handing full outcomes back) and compares.
    run = meshgen("diff", root, "--against", tmp_path / "out", "--exit-code")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_unwritable_output_folder_is_reported_without_a_traceback(tmp_path: Path, jobs: str) -> None:
    root = fleet(tmp_path / "repo")
    out = tmp_path / "out"
    out.mkdir()
    (out / "staging").write_text("a file where meshgen needs a folder\n")
    run = meshgen("render", root, "--out", out, "--jobs", jobs)
    assert run.returncode == 1
    assert f"meshgen: cannot write {out}/staging/" in run.stderr and "Not a directory" in run.stderr
    assert "Traceback" not in run.stderr
    # Fixed, the next render completes the folder.
    (out / "staging").unlink()
    again = meshgen("render", root, "--out", out, "--jobs", jobs)
    assert again.returncode == 0, again.stderr
    assert len(tree(out)) == 12 * N
