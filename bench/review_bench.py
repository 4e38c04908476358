"""Review-loop benchmarks (issue 10), each side by side with the baseline in the same run.

1. churn: an environment repository with P open meshgen PRs (local forge, real git); one is merged,
   then a sync runs. Counted: pushes to the *other* PRs' branches. Baseline: the previous rule
   (rebuild every branch whose parent is not the base), run on an identical copy.
2. merge event -> rollout state: uvicorn serves the API on loopback with records in Redis; N times,
   a signed GitHub `pull_request` closed (merged) delivery is POSTed to the environment-repository
   webhook and GET /api/v1/rollouts/... is polled until it reads awaiting-sync. Reported p50 / p95.
   Baseline: the polling fallback, i.e. the next `meshgen sync` records the merge (timed the same way).
3. plan: `meshgen plan --base main` (the working tree changes one blueprint) in a B-blueprint git
   repository, cold (no cache: what CI runs on a fresh checkout) and warm, wall and CPU (with worker
   processes), per source tree (--before). Baseline: rendering both revisions in full.

Reproduce:  .venv/bin/python bench/review_bench.py                 (P=200, N=20, B=1000)
            .venv/bin/python bench/review_bench.py --only plan --before /tmp/before --repeat 5
              (the plan beside another source tree: git archive REV meshgen | tar -x -C /tmp/before)
            .venv/bin/python bench/review_bench.py --prs 20 --events 5 --blueprints 100   (quick)
Needs Redis at --redis (default redis://127.0.0.1:6379/13; keys under a unique prefix, removed after).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pygit2
import redis

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
sys.path.insert(0, str(TOP / "bench"))
sys.path.insert(0, str(TOP / "tests"))
sys.path.insert(0, str(TOP / "tests" / "gitops"))

import fleet  # noqa: E402
from gitops_support import BOT, Origin, make_unit, semantic  # noqa: E402

from meshgen.gitops import lifecycle  # noqa: E402
from meshgen.gitops.envrepo import EnvRepo  # noqa: E402
from meshgen.forges.local import LocalForge  # noqa: E402


# ---- 1. churn --------------------------------------------------------------------------------


def _churn(tmp: Path, prs: int, *, old_rule: bool) -> tuple[int, int, float]:
    """(pushes to other PR branches after one merge, PRs left open, seconds of the sync)."""
    origin = Origin(tmp / "env.git", {"README.md": b"env\n"})
    repo = EnvRepo(origin.path, cache_dir=tmp / "cache", identity=BOT)
    forge = LocalForge(origin.path, identity=BOT)
    units = [make_unit(f"svc-{i:04d}", team=f"t{i % 10}") for i in range(prs)]
    first = lifecycle.sync_env(repo, forge, units, env="staging", env_path="staging", describe=semantic)
    assert sum(r.action == "opened" for r in first.results) == prs
    merged = forge.merge(first.results[0].number or 0)
    pushes: list[str] = []
    original_push = EnvRepo.push

    def counting(self: EnvRepo, branch: str, new: Any, *, expected: Any) -> None:
        pushes.append(branch)
        original_push(self, branch, new, expected=expected)

    saved = lifecycle._head_still_fits
    EnvRepo.push = counting  # type: ignore[method-assign]
    if old_rule:
        lifecycle._head_still_fits = lambda *a, **k: False  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        lifecycle.sync_env(repo, forge, units, env="staging", env_path="staging", describe=semantic)
        seconds = time.perf_counter() - started
    finally:
        EnvRepo.push = original_push  # type: ignore[method-assign]
        lifecycle._head_still_fits = saved  # type: ignore[assignment]
    others = [b for b in pushes if b != merged.branch]
    return len(others), len(forge.list("open")), seconds


# ---- 2. merge event -> rollout state ---------------------------------------------------------

SECRET = "whsec_bench_review"


def _events(tmp: Path, redis_url: str, n: int) -> dict[str, list[float]]:
    import uvicorn

    from meshgen.api.app import create_app
    from meshgen.gitops.sync import sync_repository
    from meshgen.records import Records
    from meshgen.settings import Settings

    client = redis.Redis.from_url(redis_url)
    prefix = f"bench-review-{uuid.uuid4().hex[:8]}:"
    records = Records(client, prefix)
    root = tmp / "bp"
    (root / "blueprints").mkdir(parents=True)
    (root / "meshgen.yaml").write_text("environments:\n  production: {mesh: istio, path: production}\n")
    for i in range(n):
        (root / "blueprints" / f"s{i}.yaml").write_text(
            f"service: s{i}\nnamespace: shop\nversions: {{v1: {{version: v1}}, v2: {{version: v2}}}}\n"
            "routes:\n  - name: default\n    to: {v1: 90, v2: 10}\n")
    settings = Settings(root=root, redis_url=redis_url, redis_prefix=prefix, api_public_reads=True,
                        webhook_secret_github=SECRET)
    out: dict[str, list[float]] = {"webhook": [], "next sync (baseline)": []}
    try:
        job = sync_repository(root, settings, records=records)
        forge = LocalForge(root / ".meshgen" / "env-repo")
        numbers = {p.branch.rsplit("/", 1)[1]: p.number for p in job.prs}
        app = create_app(settings)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        # The local forge speaks no webhooks; the record meshgen keeps is re-labelled as the GitHub
        # pull request the webhook names (same number, branch and URL), which is what the handler matches.
        (root / "meshgen.yaml").write_text("environments:\n  production: {mesh: istio, path: production}\n"
                                           "envRepo: {forge: {kind: github, owner: acme, repo: env}}\n")
        with httpx.Client(base_url=base, timeout=10) as http:
            for i in range(n):
                service = f"s{i}"
                pr = forge.merge(numbers[service] or 0)
                unit = records.get_unit("production", "shop", service)
                assert unit is not None and unit.pr is not None
                half = i % 2 == 0
                if half:
                    payload = {"action": "closed", "number": pr.number, "repository": {"full_name": "acme/env"},
                               "pull_request": {"number": pr.number, "merged": True, "merge_commit_sha": pr.merge_sha,
                                                "state": "closed", "html_url": unit.pr.url, "title": pr.title,
                                                "body": "", "head": {"ref": pr.branch, "sha": pr.head_sha},
                                                "base": {"ref": "main", "sha": pr.merge_sha}}}
                    body = json.dumps(payload).encode()
                    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                    started = time.perf_counter()
                    r = http.post("/api/v1/webhooks/github/env-repo", content=body,
                                  headers={"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": sig})
                    assert r.status_code == 202, r.text
                else:
                    started = time.perf_counter()
                    (root / "meshgen.yaml").write_text(
                        "environments:\n  production: {mesh: istio, path: production}\n")
                    sync_repository(root, settings, records=records)
                    (root / "meshgen.yaml").write_text(
                        "environments:\n  production: {mesh: istio, path: production}\n"
                        "envRepo: {forge: {kind: github, owner: acme, repo: env}}\n")
                while http.get(f"/api/v1/rollouts/production/shop/{service}").json()["state"] != "awaiting-sync":
                    time.sleep(0.01)
                out["webhook" if half else "next sync (baseline)"].append(time.perf_counter() - started)
        server.should_exit = True
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- 3. plan ---------------------------------------------------------------------------------


def _plan(tmp: Path, blueprints: int, trees: dict[str, Path], repeat: int) -> list[tuple[str, str, float, float, float]]:
    """(tree, what, best wall, median wall, median CPU incl. worker processes) for a cold and a warm plan
    with each source tree, interleaved so that load on a shared machine hits all alike; the plans must
    print the same. The last row: rendering both revisions in full (the naive plan)."""
    root = tmp / "plan"
    fleet.generate(root, blueprints)
    repo = pygit2.init_repository(str(root), initial_head="main")
    (root / ".gitignore").write_text(".meshgen/\n")
    repo.index.add_all()
    repo.index.write()
    sig = pygit2.Signature("bench", "bench@example.com")
    repo.create_commit("HEAD", sig, sig, "base", repo.index.write_tree(), [])
    target = sorted((root / "blueprints").rglob("*.yaml"))[0]
    target.write_text(target.read_text().replace("v1: 90, v2: 10", "v1: 80, v2: 20"))
    outputs: dict[str, str] = {}

    def timed(tree: Path) -> tuple[float, float]:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        cpu = _children_cpu()
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "meshgen", "plan", str(root), "--base", "main", "--format", "json"],
                             capture_output=True, text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - started
        assert run.returncode == 0, run.stderr
        assert outputs.setdefault("plan", run.stdout) == run.stdout, f"{tree} plans differently"
        return wall, _children_cpu() - cpu

    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(repeat):
        for name, tree in trees.items():
            shutil.rmtree(root / ".meshgen", ignore_errors=True)
            samples.setdefault((name, "cold (first plan in a fresh checkout)"), []).append(timed(tree))
            samples.setdefault((name, "warm (cache of the previous plan)"), []).append(timed(tree))
    probe = ("import sys, time; from pathlib import Path; from meshgen.pipeline import render_repository\n"
             "render_repository(Path(sys.argv[1])); render_repository(Path(sys.argv[1]))")
    for _ in range(repeat):
        cpu = _children_cpu()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", probe, str(root)], check=True, capture_output=True)
        samples.setdefault(("-", "two full renders (naive baseline)"), []).append(
            (time.perf_counter() - started, _children_cpu() - cpu))
    return [(name, what, min(w for w, _ in s), statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
            for (name, what), s in samples.items()]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prs", type=int, default=200)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--blueprints", type=int, default=1000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--results", type=Path, default=TOP / "bench" / "results" / "review.md")
    ap.add_argument("--only", choices=["churn", "events", "plan"], action="append",
                    help="run only these parts (repeatable; default: all)")
    ap.add_argument("--before", type=Path, default=None, metavar="TREE",
                    help="plan also with this meshgen source tree, side by side "
                         "(e.g. `git archive f9fe153 meshgen | tar -x -C /tmp/before`)")
    ap.add_argument("--repeat", type=int, default=3, help="plan measurements per tree")
    args = ap.parse_args(argv)
    parts = set(args.only or ["churn", "events", "plan"])
    lines = [f"### review loop ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", ""]
    with tempfile.TemporaryDirectory(prefix="meshgen-review-bench-") as tmp:
        t = Path(tmp)
        if "churn" in parts:
            new = _churn(t / "new", args.prs, old_rule=False)
            old = _churn(t / "old", args.prs, old_rule=True)
            lines += [f"1. merge 1 of {args.prs} open PRs, then sync: pushes to the other {args.prs - 1} PR branches",
                      "", "| rule | pushes to other PRs | open PRs after | sync seconds |", "|---|---|---|---|",
                      f"| meshgen (issue 10) | {new[0]} | {new[1]} | {new[2]:.2f} |",
                      f"| previous rule (baseline) | {old[0]} | {old[1]} | {old[2]:.2f} |", ""]
        if "events" in parts:
            events = _events(t / "events", args.redis, args.events)
            lines += ["2. merge in the forge -> rollout API reads awaiting-sync (seconds)", "",
                      "| path | samples | p50 | p95 |", "|---|---|---|---|"]
            for name, samples in events.items():
                q = statistics.quantiles(samples, n=20) if len(samples) > 1 else samples * 19
                lines.append(f"| {name} | {len(samples)} | {statistics.median(samples):.3f} | {q[18]:.3f} |")
            lines.append("")
        if "plan" in parts:
            trees = {"this tree": TOP}
            if args.before is not None:
                trees = {f"before ({args.before})": args.before.resolve(), **trees}
            plan = _plan(t, args.blueprints, trees, args.repeat)
            lines += [f"3. `meshgen plan --base main`, one blueprint changed, {args.blueprints} blueprints "
                      f"(seconds, {args.repeat} runs each, interleaved; {os.cpu_count()} CPUs)", "",
                      "| tree | plan | best wall | median wall | median CPU |", "|---|---|---:|---:|---:|",
                      *(f"| {n} | {w} | {b:.2f} | {m:.2f} | {c:.2f} |" for n, w, b, m, c in plan), ""]
    text = "\n".join(lines)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
