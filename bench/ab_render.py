"""Two meshgen source trees side by side, in one run: did a change make rendering slower?

Renders the benchmark fleet (bench/fleet.py) with each tree, interleaved so that load on a
shared machine hits both alike: cold `meshgen render` for Istio and for Linkerd (no cache,
empty output; the numbers of BENCHMARKS.md's "render vs helm" and "Linkerd vs Istio"), and the
re-render after one blueprint changed (warm cache). Each tree gets its own copy of the fleet, so
the caches never mix. Best and median of --repeat; outputs must be byte-identical between the
trees unless --allow-diff.

Usage: .venv/bin/python bench/ab_render.py --base /path/to/baseline/tree [--n 5000] [--repeat 5]
(make the baseline with `git archive main | tar -x -C /tmp/base`).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fleet

HERE = Path(__file__).resolve().parent


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


LAST_CPU = [0.0]  # user+sys seconds of the last render command and its worker processes


def _render(tree: Path, root: Path, out: Path, mesh: str | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "meshgen", "render", str(root), "--out", str(out)]
    if mesh:
        cmd += ["--mesh", mesh]
    start, cpu = time.perf_counter(), _cpu()
    # cwd outside both trees: the tree on PYTHONPATH is the meshgen that runs
    run = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"render with {tree} failed:\n{run.stderr[-2000:]}")
    LAST_CPU[0] = _cpu() - cpu
    return took


def _cold(tree: Path, root: Path, out: Path, mesh: str) -> float:
    shutil.rmtree(root / ".meshgen", ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return _render(tree, root, out, mesh)


def _one_change(tree: Path, root: Path, out: Path, flip: int) -> float:
    """Warm cache, then one blueprint's text changes (a comment line added or removed: a new digest, so
    the file is loaded, checked and rendered again, the rest comes from the cache)."""
    blueprint = min((root / "blueprints").rglob("*.yaml"))
    text = blueprint.read_text()
    marker = "# ab_render change"
    text = text.replace(f"\n{marker}\n", "\n") if marker in text else text + f"\n{marker}\n"
    if flip % 2 == 0:  # keep the cache warm and in step with the blueprint before the timed run
        _render(tree, root, out)
    blueprint.write_text(text)
    return _render(tree, root, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True, help="baseline source tree (has meshgen/)")
    p.add_argument("--new", type=Path, default=HERE.parent, help="tree under test (default: this one)")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--allow-diff", action="store_true")
    args = p.parse_args(argv)
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    work = Path(tempfile.mkdtemp(prefix="meshgen-ab-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        fleet.generate(work / "fleet", args.n)
        config = work / "fleet" / "meshgen.yaml"
        config.write_text(config.read_text() + "unsupported: warn\n")
        roots = {name: work / f"fleet-{name}" for name in trees}
        for root in roots.values():
            shutil.copytree(work / "fleet", root)
        samples: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for i in range(args.repeat):
            for name, tree in (list(trees.items()) if i % 2 == 0 else list(reversed(trees.items()))):
                for mesh in ("istio", "linkerd"):
                    samples.setdefault((name, mesh), []).append(_cold(tree, roots[name], work / f"out-{name}-{mesh}", mesh))
                    cpu.setdefault((name, mesh), []).append(LAST_CPU[0])
                samples.setdefault((name, "one change"), []).append(
                    _one_change(tree, roots[name], work / f"out-{name}-rerender", i))
                cpu.setdefault((name, "one change"), []).append(LAST_CPU[0])
        for mesh in ("istio", "linkerd"):
            a, b = (sorted(p.relative_to(work / f"out-{n}-{mesh}").as_posix() for p in (work / f"out-{n}-{mesh}").rglob("*"))
                    for n in trees)
            same = a == b and all((work / f"out-base-{mesh}" / f).read_bytes() == (work / f"out-new-{mesh}" / f).read_bytes()
                                  for f in a if (work / f"out-base-{mesh}" / f).is_file())
            if not same and not args.allow_diff:
                raise SystemExit(f"{mesh}: the two trees render different output; pass --allow-diff to time anyway")
        lines = [(f"| measurement (N={args.n:,}, {args.repeat} interleaved runs) | base wall best / median (s) "
                  "| new wall best / median (s) | new/base wall best | base / new CPU median (s) | new/base CPU |"),
                 "|---|---:|---:|---:|---:|---:|"]
        for what in ("istio", "linkerd", "one change"):
            base, new = samples[("base", what)], samples[("new", what)]
            label = {"istio": "cold render, Istio", "linkerd": "cold render, Linkerd",
                     "one change": "re-render after one change"}[what]
            bc, nc = statistics.median(cpu[("base", what)]), statistics.median(cpu[("new", what)])
            lines.append(f"| {label} | {min(base):.2f} / {statistics.median(base):.2f} "
                         f"| {min(new):.2f} / {statistics.median(new):.2f} | {min(new) / min(base):.2f}x "
                         f"| {bc:.2f} / {nc:.2f} | {nc / bc:.2f}x |")
        for name in trees:
            ratio = min(samples[(name, "linkerd")]) / min(samples[(name, "istio")])
            cratio = statistics.median(cpu[(name, "linkerd")]) / statistics.median(cpu[(name, "istio")])
            lines.append(f"| Linkerd/Istio ({name}) | | | {ratio:.2f}x wall | | {cratio:.2f}x CPU |")
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
