"""One changed service pushed over authenticated smart HTTP: fetch + commit + push, 100 vs 10,000 services.

Goal (issue 15): p50 under 1 s at 10,000 services, and the growth from a 100-service repository,
side by side in one run.

Setup per size (not timed): a bare environment repository built like bench/commit_bench.py (50
namespaces, 4 YAML files per service folder), served by git's own `git http-backend` behind a
threaded HTTP server that requires basic auth (tests/gitserver.py, the server the tests use), on
127.0.0.1 (repacked, as a forge keeps it); a meshgen mirror cloned from it through meshgen.gitops.transport with a token
credential (the first, full fetch is reported as "clone").

Timed per run, exactly what a sync does for one changed service: `EnvRepo.fetch()` (incremental,
authenticated), the in-memory tree for the changed unit + the commit, and the leased push
(`EnvRepo.push`, force-with-lease via libgit2 push negotiation, chunked upload) of the service's
branch. Every run renders a new weight, so every push sends new objects.

Reproduce:  .venv/bin/python bench/transport_bench.py   (add --runs N, --sizes 100,10000)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
sys.path.insert(0, str(TOP / "tests"))
sys.path.insert(0, str(TOP / "bench"))

from commit_bench import _unit, build_repo  # noqa: E402
from gitserver import Account, GitHttpServer  # noqa: E402

from meshgen.gitops.envrepo import EnvRepo, Identity, write_tree  # noqa: E402
from meshgen.forges.base import GitCredential  # noqa: E402
from meshgen.gitops.transport import RemoteAccess  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class _Size:
    """One repository size: its server, the mirror, and the timings of its runs."""

    def __init__(self, tmp: Path, size: int) -> None:
        self.size = size
        served = tmp / f"srv-{size}"
        served.mkdir()
        t0 = time.perf_counter()
        build_repo(served / "env.git", size)
        # Forges keep repositories packed; build_repo leaves ~5 loose objects per service, which would
        # measure the test server's disk layout (receive-pack's connectivity check) rather than meshgen.
        subprocess.run(["git", "-C", str(served / "env.git"), "repack", "-adq"], check=True)
        self.build_s = time.perf_counter() - t0
        self.server = GitHttpServer(served, [Account(TOKEN, "x-access-token")]).start()
        access = RemoteAccess(self.server.url("env.git"), "environment repository",
                              credential=GitCredential("x-access-token", lambda: TOKEN, "bench"))
        self.repo = EnvRepo(access.url, cache_dir=tmp / f"cache-{size}", access=access,
                            identity=Identity("bench", "bench@example.com"))
        t0 = time.perf_counter()
        self.repo.fetch()
        self.clone_s = time.perf_counter() - t0
        self.times: dict[str, list[float]] = {"fetch": [], "commit": [], "push": [], "total": []}
        self.pushes = 0

    def run(self, i: int, record: bool) -> None:
        repo = self.repo
        branch = "meshgen/staging/ns-07/svc-00007"
        t0 = time.perf_counter()
        repo.fetch()
        t1 = time.perf_counter()
        base = repo.commit_at("main")
        assert base is not None
        tree = write_tree(repo.repo, base.tree, [_unit(1_000 + i)])
        commit = repo.commit(tree, [base.id], "meshgen(staging): update ns-07/svc-00007\n")
        t2 = time.perf_counter()
        repo.push(branch, commit, expected=repo.tip(branch))
        t3 = time.perf_counter()
        self.pushes += 1
        if record:
            for key, value in (("fetch", t1 - t0), ("commit", t2 - t1), ("push", t3 - t2), ("total", t3 - t0)):
                self.times[key].append(value * 1000)

    def close(self) -> None:
        seen = sum(1 for method, path, user, status in self.server.log
                   if path.endswith("git-receive-pack") and method == "POST" and status == 200)
        self.server.stop()
        assert seen == self.pushes, f"expected {self.pushes} pushes, the server saw {seen}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,10000", help="service counts, comma-separated (first = reference)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=TOP / "bench" / "results" / "transport.md")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="meshgen-transport-bench-") as tmp:
        rows = [_Size(Path(tmp), size) for size in sizes]
        # Sizes take turns run by run, so load from other processes on the machine hits both alike.
        for i in range(-args.warmup, args.runs):  # warm-up runs (i < 0) are not counted
            for row in rows:
                row.run(i, record=i >= 0)
        for row in rows:
            row.close()
            print(f"{row.size} services: p50 {statistics.median(row.times['total']):.0f} ms", file=sys.stderr)

    ref = statistics.median(rows[0].times["total"])
    lines = [
        "# Transport benchmark: one changed service over authenticated smart HTTP",
        "",
        f"Reproduce: `.venv/bin/python bench/transport_bench.py --sizes {args.sizes} --runs {args.runs}`",
        "",
        f"`git http-backend` behind basic auth on 127.0.0.1; {args.runs} runs per size after {args.warmup} "
        "warm-up runs, each pushing new content; the sizes take turns run by run. Timed: authenticated incremental fetch + tree and commit "
        "for the changed service + leased push of its branch.",
        "",
        "| services | clone (s) | fetch p50 (ms) | commit p50 (ms) | push p50 (ms) | **total p50 (ms)** "
        "| total p90 (ms) | total max (ms) | p50 vs reference |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        t = row.times
        med = statistics.median(t["total"])
        lines.append(
            f"| {row.size:,} | {row.clone_s:.2f} | {statistics.median(t['fetch']):.0f} "
            f"| {statistics.median(t['commit']):.1f} | {statistics.median(t['push']):.0f} "
            f"| **{med:.0f}** | {_pct(t['total'], 0.9):.0f} | {max(t['total']):.0f} | {med / ref:.2f}x |")
    p50 = statistics.median(rows[-1].times["total"])
    lines += ["", f"Goal p50 < 1000 ms at {sizes[-1]:,} services: {'met' if p50 < 1000 else 'NOT met'} "
              f"({p50:.0f} ms)."]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
