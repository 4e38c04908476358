"""Linkerd render vs Istio render of the same fleet, side by side in one run.

Target (issue: Linkerd renderer): the Linkerd render of the 10k fleet within 1.2x the Istio
render's time. The fleet uses consistent hashing and a connection pool, which Linkerd cannot
express, so both renders run with `unsupported: warn` (Linkerd leaves those out and reports
them; the warnings go to /dev/null like every stderr here).

    .venv/bin/python bench/mesh_bench.py [--n 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet  # noqa: E402
from render_bench import (  # noqa: E402
    REPO,
    Run,
    check_ok,
    default_workdir,
    find_meshgen,
    fresh_dir,
    run_measured,
)


def cold(meshgen: list[str], root: Path, out: Path, mesh: str) -> Run:
    # No cache, empty output: every blueprint is parsed, checked, rendered and written.
    import shutil

    shutil.rmtree(root / ".meshgen", ignore_errors=True)
    return check_ok(run_measured([*meshgen, "render", str(root), "--out", str(fresh_dir(out)), "--mesh", mesh]),
                    f"meshgen render --mesh {mesh}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    meshgen = find_meshgen(None)
    assert meshgen, "meshgen is not installed: pip install -e ."
    work = fresh_dir((args.workdir or default_workdir()) / "mesh-bench")
    root = work / "fleet"
    fleet.generate(root, args.n)
    config = root / "meshgen.yaml"
    config.write_text(config.read_text() + "unsupported: warn\n")
    runs: dict[str, list[Run]] = {"istio": [], "linkerd": []}
    for _ in range(args.repeat):  # interleaved, so drift on the machine hits both alike
        for mesh in runs:
            runs[mesh].append(cold(meshgen, root, work / f"out-{mesh}", mesh))
    counts = {mesh: sum(1 for _ in (work / f"out-{mesh}").rglob("*.yaml")) for mesh in runs}
    best = {mesh: min(r.wall_s for r in rs) for mesh, rs in runs.items()}
    ratio = best["linkerd"] / best["istio"]
    lines = [
        "# Linkerd render vs Istio render (same fleet)",
        "",
        f"Reproduce: `.venv/bin/python bench/mesh_bench.py --n {args.n} --repeat {args.repeat}` (fleet on {work}).",
        "",
        "| N | Istio render (s) | Linkerd render (s) | ratio Linkerd/Istio | files Istio / Linkerd | peak RSS Istio / Linkerd (MiB) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {args.n:,} | {best['istio']:.2f} | {best['linkerd']:.2f} | {ratio:.2f}x | {counts['istio']:,} / {counts['linkerd']:,} | "
        f"{max(max(r.maxrss_mib, r.tree_rss_mib) for r in runs['istio']):.0f} / "
        f"{max(max(r.maxrss_mib, r.tree_rss_mib) for r in runs['linkerd']):.0f} |",
        "",
        f"Best of {args.repeat}, cold (no cache, empty output). Target: at most 1.2x: **{'met' if ratio <= 1.2 else 'not met'}**.",
    ]
    text = "\n".join(lines) + "\n"
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "mesh.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
