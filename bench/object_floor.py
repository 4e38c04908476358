"""Experiment: how fast could any mesh that renders 8 objects per service be, relative to Istio's 4?

Renders the benchmark fleet in-process (`render_to_dir`, the same pipeline and worker processes as
`meshgen render`) twice, interleaved: once as Istio renders it (4 objects per service), once with
the Istio renderer run twice per service and both copies emitted and written (8 objects per
service, each at exactly Istio's per-object cost, and no warnings). The ratio of the two is a
floor for the Linkerd/Istio ratio of bench/mesh_bench.py: Linkerd's output for this fleet is 8
objects per service, plus 8 warnings per service about what Linkerd cannot express.

Not a test and not shipped behaviour: the doubling is a patch applied inside this script only.

    .venv/bin/python bench/object_floor.py [--n 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet  # noqa: E402
from render_bench import default_workdir, fresh_dir, publish  # noqa: E402

from meshgen.output import render_to_dir  # noqa: E402
from meshgen.render.istio import IstioRenderer  # noqa: E402

_single = IstioRenderer.render_service


def _twice(self: IstioRenderer, svc: Any, ctx: Any) -> Any:
    first, second = _single(self, svc, ctx), _single(self, svc, ctx)
    for res in second:
        res.body["metadata"]["name"] += "-copy"
    return first + second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    work = fresh_dir(default_workdir() / "object-floor")
    root = work / "fleet"
    fleet.generate(root, args.n)
    samples: dict[str, list[float]] = {"4 objects (Istio)": [], "8 objects (Istio twice)": []}
    files: dict[str, int] = {}
    for _ in range(args.repeat):
        for label in samples:
            IstioRenderer.render_service = _twice if "twice" in label else _single  # type: ignore[method-assign]
            shutil.rmtree(root / ".meshgen", ignore_errors=True)
            out = fresh_dir(work / "out")
            start = time.perf_counter()
            stats = render_to_dir(root, out, mesh="istio", use_cache=False)
            samples[label].append(time.perf_counter() - start)
            files[label] = stats.files
    IstioRenderer.render_service = _single  # type: ignore[method-assign]
    (four, eight) = samples.values()
    lines = [
        "# Floor: 8 objects per service at Istio's per-object cost vs Istio's 4",
        "",
        f"Reproduce: `.venv/bin/python bench/object_floor.py --n {args.n} --repeat {args.repeat}`",
        "",
        "| N | render | files | best (s) | median (s) |",
        "|---:|---|---:|---:|---:|",
        *(f"| {args.n:,} | {label} | {files[label]:,} | {min(v):.2f} | {statistics.median(v):.2f} |"
          for label, v in samples.items()),
        "",
        f"Ratio 8/4 objects: best {min(eight) / min(four):.2f}x, median {statistics.median(eight) / statistics.median(four):.2f}x.",
    ]
    publish(lines, "object_floor.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
