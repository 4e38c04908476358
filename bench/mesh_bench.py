"""Linkerd render vs Istio render of the same fleet, side by side in one run.

Target (issue: Linkerd renderer): the Linkerd render of the 10k fleet within 1.2x the Istio
render's time. The fleet uses consistent hashing and a connection pool, which Linkerd cannot
express, so both renders run with `unsupported: warn` (Linkerd leaves those out and reports
them; the warnings go to /dev/null like every stderr here).

    .venv/bin/python bench/mesh_bench.py [--n 10000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet  # noqa: E402
from render_bench import (  # noqa: E402
    Run,
    check_ok,
    default_workdir,
    find_meshgen,
    fresh_dir,
    publish,
    run_measured,
)


def cold(meshgen: list[str], root: Path, out: Path, mesh: str, *, sample_tree: bool = False) -> Run:
    # No cache, empty output: every blueprint is parsed, checked, rendered and written.
    shutil.rmtree(root / ".meshgen", ignore_errors=True)
    return check_ok(run_measured([*meshgen, "render", str(root), "--out", str(fresh_dir(out)), "--mesh", mesh],
                                 sample_tree=sample_tree),
                    f"meshgen render --mesh {mesh}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    meshgen = find_meshgen(None)
    assert meshgen, "meshgen is not installed: pip install -e ."
    work = fresh_dir((args.workdir or default_workdir()) / "mesh-bench")
    root = work / "fleet"
    fleet.generate(root, args.n)
    config = root / "meshgen.yaml"
    config.write_text(config.read_text() + "unsupported: warn\n")
    meshes = ("istio", "linkerd")
    # Memory first, in runs of their own: sampling the process tree's PSS takes CPU from the
    # command (more from the one with more memory), so the timed runs go without it.
    rss = {mesh: cold(meshgen, root, work / f"out-{mesh}", mesh, sample_tree=True).peak_rss_mib for mesh in meshes}
    runs: dict[str, list[Run]] = {mesh: [] for mesh in meshes}
    for _ in range(args.repeat):  # interleaved, so drift on the machine hits both alike
        for mesh in meshes:
            runs[mesh].append(cold(meshgen, root, work / f"out-{mesh}", mesh))
    counts = {mesh: sum(1 for _ in (work / f"out-{mesh}").rglob("*.yaml")) for mesh in meshes}
    best = {mesh: min(r.wall_s for r in rs) for mesh, rs in runs.items()}
    median = {mesh: statistics.median(r.wall_s for r in rs) for mesh, rs in runs.items()}
    cpu = {mesh: statistics.median(r.cpu_s for r in rs) for mesh, rs in runs.items()}
    ratio = best["linkerd"] / best["istio"]
    lines = [
        "# Linkerd render vs Istio render (same fleet)",
        "",
        f"Reproduce: `.venv/bin/python bench/mesh_bench.py --n {args.n} --repeat {args.repeat}` (fleet on {work}).",
        "",
        "| N | Istio render (s) | Linkerd render (s) | ratio Linkerd/Istio | median Istio / Linkerd (s), ratio "
        "| CPU Istio / Linkerd (s), ratio | files Istio / Linkerd | peak RSS Istio / Linkerd (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.n:,} | {best['istio']:.2f} | {best['linkerd']:.2f} | {ratio:.2f}x "
        f"| {median['istio']:.2f} / {median['linkerd']:.2f}, {median['linkerd'] / median['istio']:.2f}x "
        f"| {cpu['istio']:.1f} / {cpu['linkerd']:.1f}, {cpu['linkerd'] / cpu['istio']:.2f}x "
        f"| {counts['istio']:,} / {counts['linkerd']:,} | {rss['istio']:.0f} / {rss['linkerd']:.0f} |",
        "",
        f"Wall time best of {args.repeat} interleaved runs, cold (no cache, empty output); CPU is user+sys of the "
        "command and its workers, median. Target: at most 1.2x: "
        f"**{'met' if ratio <= 1.2 else 'not met'}**.",
        "",
        "Samples (s): " + "; ".join(f"{mesh} " + ", ".join(f"{r.wall_s:.2f}" for r in rs) for mesh, rs in runs.items()),
    ]
    publish(lines, "mesh.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
