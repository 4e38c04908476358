"""Cost of committing one changed service, in a 100- and a 10,000-service environment repository.

Goal: under 150 ms at 10,000 services, and at most 1.5x the 100-service time, i.e. the cost
of a commit follows the size of the change, not of the repository.

Timed per run: meshgen.gitops.envrepo.write_tree (in-memory tree for one changed unit on
top of the base tree) + writing the commit + updating the branch ref. Each run renders a
new weight, so every run writes new blobs and trees (no run is a no-op). As an
extra, informative column: the same plus the leased push into a local remote
(EnvRepo.push: copy missing objects + ref compare-and-swap).

Reproduce:  .venv/bin/python bench/commit_bench.py   (add --runs N, --sizes 100,10000)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshgen.gitops.envrepo import EnvRepo, Identity, write_tree
from meshgen.units import Unit

NAMESPACES = 50
ENV = "staging"
SIG = pygit2.Signature("bench", "bench@example.com", 1_700_000_000, 0)
KINDS = ("VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy")


def _manifest(kind: str, ns: str, svc: str, weight: int) -> bytes:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {svc}\n  namespace: {ns}\n"
        f"  labels:\n    app.kubernetes.io/managed-by: meshgen\nspec:\n  host: {svc}.{ns}.svc.cluster.local\n"
        f"  weight: {weight}\n"
    ).encode()


def _files(ns: str, svc: str, weight: int) -> dict[str, bytes]:
    return {f"{kind.lower()}.yaml": _manifest(kind, ns, svc, weight) for kind in KINDS}


def build_repo(path: Path, services: int) -> pygit2.Repository:
    """A bare repository whose main holds `services` service folders over 50 namespaces.

    Built tree by tree with TreeBuilders (no work tree), like meshgen writes.
    """
    repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
    env = repo.TreeBuilder()
    per_ns: dict[str, list[str]] = {}
    for i in range(services):
        per_ns.setdefault(f"ns-{i % NAMESPACES:02d}", []).append(f"svc-{i:05d}")
    for ns, svcs in per_ns.items():
        ns_tb = repo.TreeBuilder()
        for svc in svcs:
            folder = repo.TreeBuilder()
            for name, data in _files(ns, svc, 10).items():
                folder.insert(name, repo.create_blob(data), pygit2.GIT_FILEMODE_BLOB)
            ns_tb.insert(svc, folder.write(), pygit2.GIT_FILEMODE_TREE)
        env.insert(ns, ns_tb.write(), pygit2.GIT_FILEMODE_TREE)
    root = repo.TreeBuilder()
    root.insert(ENV, env.write(), pygit2.GIT_FILEMODE_TREE)
    root.insert("README.md", repo.create_blob(b"# environments\n"), pygit2.GIT_FILEMODE_BLOB)
    repo.create_commit("refs/heads/main", SIG, SIG, "initial", root.write(), [])
    return repo


def _unit(weight: int) -> Unit:
    ns, svc = "ns-07", "svc-00007"
    return Unit(ENV, ns, svc, "payments", f"{ENV}/{ns}/{svc}", _files(ns, svc, weight))


def time_commit(repo: pygit2.Repository, runs: int, warmup: int = 5) -> list[float]:
    base = repo.revparse_single("refs/heads/main").peel(pygit2.Commit)
    out = []
    for i in range(-warmup, runs):  # warm-up runs (i < 0) are not counted
        start = time.perf_counter()
        tree = write_tree(repo, base.tree, [_unit(100 + i)])
        commit = repo.create_commit(
            None, SIG, SIG, "meshgen(staging): update ns-07/svc-00007\n", tree, [base.id]
        )
        repo.references.create("refs/heads/meshgen/staging/ns-07/svc-00007", commit, force=True)
        if i >= 0:
            out.append((time.perf_counter() - start) * 1000)
    return out


def time_commit_and_push(origin: Path, cache: Path, runs: int, warmup: int = 5) -> list[float]:
    env_repo = EnvRepo(origin, cache_dir=cache, identity=Identity("bench", "bench@example.com"))
    env_repo.fetch()  # setup, not timed
    branch = "meshgen/staging/ns-07/svc-00007-push"
    base = env_repo.commit_at("main")
    assert base is not None
    out = []
    for i in range(-warmup, runs):
        start = time.perf_counter()
        tree = write_tree(env_repo.repo, base.tree, [_unit(10_000 + i)])
        commit = env_repo.commit(tree, [base.id], "meshgen(staging): update ns-07/svc-00007\n")
        env_repo.push(branch, commit, expected=env_repo.tip(branch))
        if i >= 0:
            out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="100,10000", help="service counts, comma-separated (first = reference)"
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "commit.md")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    with tempfile.TemporaryDirectory(prefix="meshgen-commit-bench-") as tmp:
        for size in sizes:
            t0 = time.perf_counter()
            repo = build_repo(Path(tmp) / f"env-{size}.git", size)
            build_s = time.perf_counter() - t0
            commit_ms = time_commit(repo, args.runs)
            push_ms = time_commit_and_push(
                Path(tmp) / f"env-{size}.git", Path(tmp) / f"cache-{size}", args.runs
            )
            rows.append((size, build_s, commit_ms, push_ms))
            print(f"{size} services: built in {build_s:.1f}s, best {min(commit_ms):.2f} ms", file=sys.stderr)

    ref_best = min(rows[0][2])
    ref_median = statistics.median(rows[0][2])
    lines = [
        "# Commit benchmark: one changed service",
        "",
        f"Reproduce: `.venv/bin/python bench/commit_bench.py --sizes {args.sizes} --runs {args.runs}`",
        "",
        f"{NAMESPACES} namespaces, 4 YAML files per service folder; "
        f"{args.runs} runs per size after 5 warm-up runs, "
        "each with new content.",
        "Timed: in-memory tree for the changed unit + commit + branch ref update (`commit`);",
        "the same plus the leased push into a local remote (`+ push`).",
        "",
        "| services | commit best (ms) | commit median (ms) | vs reference (best / median) "
        "| + push best (ms) | + push median (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for size, _build, commit_ms, push_ms in rows:
        best, median = min(commit_ms), statistics.median(commit_ms)
        lines.append(
            f"| {size:,} | {best:.2f} | {median:.2f} | {best / ref_best:.2f}x / {median / ref_median:.2f}x "
            f"| {min(push_ms):.2f} | {statistics.median(push_ms):.2f} |"
        )
    big_size, _, big_ms, _ = rows[-1]
    big_best, big_median = min(big_ms), statistics.median(big_ms)
    ok_abs = big_median < 150
    ok_ratio = big_median <= 1.5 * ref_median or big_best <= 1.5 * ref_best
    lines += [
        "",
        f"Goal at {big_size:,} services: median under 150 ms: **{'met' if ok_abs else 'NOT met'}** "
        f"({big_median:.2f} ms); at most 1.5x the {rows[0][0]:,}-service commit: "
        f"**{'met' if ok_ratio else 'NOT met'}** "
        f"(best {big_best / ref_best:.2f}x, median {big_median / ref_median:.2f}x).",
        "",
        f"Machine: Python {sys.version.split()[0]}, pygit2 {pygit2.__version__}, "
        f"libgit2 {pygit2.LIBGIT2_VERSION}.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    return 0 if ok_abs and ok_ratio else 1


if __name__ == "__main__":
    raise SystemExit(main())
