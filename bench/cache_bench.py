"""Re-render after one change: this tree against a baseline meshgen, side by side in one run.

Issue 13 replaced the pickled render cache (code execution from a committed cache file) with
authenticated JSON. This measures what that costs where the cache matters: a warm cache, one
blueprint changed, `meshgen render` again. For each fleet size both meshgen trees get their
own copy of the same generated fleet (bench/fleet.py) and output folder; runs alternate
between them so load on the machine hits both alike. Reported: meshgen's own in-process
`timings: total=` and its `load=` (reading the cache), best and median of --repeat runs.

Usage: .venv/bin/python bench/cache_bench.py [--sizes 2000,10000] [--repeat 5] [--baseline main]
(--baseline is a git revision of this repository, exported with `git archive`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import fleet

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
_TIMINGS = re.compile(r"timings: total=([0-9.]+)s load=([0-9.]+)s")


def _export(revision: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _render(src: Path, root: Path, out: Path) -> tuple[float, float]:
    code = "import sys; sys.argv[0] = 'meshgen'; from meshgen.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-c", code, "render", str(root), "--out", str(out), "--timings"],
                          env=env, capture_output=True, text=True, cwd=src)
    if proc.returncode != 0:
        raise RuntimeError(f"render with {src} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    m = _TIMINGS.search(proc.stderr)
    if m is None:
        raise RuntimeError(f"no timings line from {src}: {proc.stderr[-500:]}")
    return float(m.group(1)) * 1000, float(m.group(2)) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2000,10000")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--baseline", default="main", help="git revision to compare with (default main)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshgen-cache-bench-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "baseline-src").mkdir()
        trees = {f"baseline ({args.baseline})": _export(args.baseline, tmp / "baseline-src"), "this tree": REPO}
        print("| N | meshgen | re-render total, best / median (ms) | cache load, best / median (ms) |")
        print("|---:|---|---:|---:|")
        for n in (int(x) for x in args.sizes.split(",")):
            roots: dict[str, tuple[Path, Path]] = {}
            gen = tmp / f"fleet-{n}"
            fleet.generate(gen, n)
            for name in trees:
                slug = re.sub(r"\W+", "-", name)
                root, out = tmp / f"{slug}-{n}", tmp / f"{slug}-{n}-out"
                shutil.copytree(gen, root)
                _render(trees[name], root, out)  # cold: fills the cache and the output folder
                roots[name] = (root, out)
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for step in range(1, args.repeat + 1):
                for name, src in trees.items():
                    root, out = roots[name]
                    fleet.touch_one(root, step)
                    samples[name].append(_render(src, root, out))
            for name, got in samples.items():
                total = [t for t, _ in got]
                load = [ld for _, ld in got]
                print(f"| {n:,} | {name} | {min(total):.0f} / {statistics.median(total):.0f} "
                      f"| {min(load):.0f} / {statistics.median(load):.0f} |", flush=True)
            for root, out in roots.values():
                shutil.rmtree(root)
                shutil.rmtree(out)
            shutil.rmtree(gen)


if __name__ == "__main__":
    main()
