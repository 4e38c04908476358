"""GitOps benchmarks: webhook → pull request latency through a real worker, and the first sync of a fleet.

1. webhook → PR opened: uvicorn serves the webhook router (real HTTP), `meshgen worker` runs the
   syncs (Redis broker), the environment repository and its PRs are local (local forge). The fleet
   is synced once and every PR merged, then N pushes each change a *different* service; for each
   we time from sending the signed GitHub push to the moment its PR exists. Reported: p50 / p95.
   The default debounce (MESHGEN_SYNC_DEBOUNCE=0.3 s) is included in every sample.
2. first sync of an S-service fleet (bench/fleet.py), in-process `sync_repository` with job and
   unit records in Redis: time split into render / repo / forge / records.

Reproduce:  .venv/bin/python bench/gitops_bench.py            (N=20, S=1000; appends to bench/results/gitops.md)
            .venv/bin/python bench/gitops_bench.py --pushes 5 --fleet 100 --results /tmp/g.md   (quick)
Needs Redis at --redis (default redis://127.0.0.1:6379/13; keys under a unique prefix, removed after).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
sys.path.insert(0, str(TOP / "bench"))

import fleet

from meshgen.forges.local import LocalForge
from meshgen.gitops.sync import sync_repository
from meshgen.records import Records
from meshgen.settings import Settings

SECRET = "bench-webhook-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check, timeout: float, what: str, interval: float = 0.005):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def _env(root: Path, redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHGEN_")}
    env.update(MESHGEN_ROOT=str(root), MESHGEN_REDIS_URL=redis_url, MESHGEN_REDIS_PREFIX=prefix,
               MESHGEN_QUEUE=prefix.replace(":", "-") + "q", MESHGEN_WEBHOOK_SECRET_GITHUB=SECRET,
               MESHGEN_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    return env


def _push(http: httpx.Client, url: str, sha: str) -> None:
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "acme/blueprints"},
                       "head_commit": {"id": sha, "author": {"name": "bench"}}}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = http.post(url, content=body, headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": uuid.uuid4().hex,
                                              "X-Hub-Signature-256": sig, "Content-Type": "application/json"})
    if r.status_code != 202 or r.json().get("status") != "queued":
        raise RuntimeError(f"webhook answered {r.status_code}: {r.text}")


def _set_split(path: Path, v2: int) -> None:
    text = path.read_text()
    start = text.index("    to: {v1: ")
    end = text.index("\n", start)
    path.write_text(text[:start] + f"    to: {{v1: {100 - v2}, v2: {v2}}}" + text[end:])


def bench_webhook(work: Path, redis_url: str, prefix: str, n: int) -> list[float]:
    root = work / "webhook-fleet"
    fleet.generate(root, n)
    settings = Settings(root=root, redis_url=redis_url, redis_prefix=prefix)
    sync_repository(root, settings)  # the fleet exists, every PR merged: later pushes each open one PR
    forge = LocalForge(root / ".meshgen" / "env-repo")
    for pr in forge.list("open"):
        forge.merge(pr.number)
    env = _env(root, redis_url, prefix)
    port = _free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "meshgen", "worker", "--without-mingle", "--without-gossip"],
                         env=env, cwd=str(TOP), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "uvicorn", "gitops_webhook_app:app", "--app-dir", str(TOP / "bench"),
                          "--port", str(port), "--log-level", "warning"], env=env, cwd=str(TOP),
                         start_new_session=True),
    ]
    samples: list[float] = []
    try:
        url = f"http://127.0.0.1:{port}/api/v1/webhooks/github"
        with httpx.Client(timeout=10) as http:
            _wait(lambda: _alive(http, port), 30, "uvicorn")
            specs = fleet.services(n)
            _warm_up(http, url, root, specs[0], forge)
            for i, spec in enumerate(specs):
                _set_split(fleet.blueprint_path(root, spec), 30 + i % 40)
                branch = f"meshgen/production/{spec.namespace}/{spec.name}"
                started = time.perf_counter()
                _push(http, url, f"{i + 1:040x}")
                _wait(lambda b=branch: forge.find_open(b), 30, f"the PR of {spec.name}")
                samples.append(time.perf_counter() - started)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
    return samples


def _alive(http: httpx.Client, port: int) -> bool:
    try:
        http.get(f"http://127.0.0.1:{port}/docs")
        return True
    except httpx.HTTPError:
        return False


def _warm_up(http: httpx.Client, url: str, root: Path, spec: fleet.ServiceSpec, forge: LocalForge) -> None:
    """One untimed push (worker imports, first connections), then back to the merged state."""
    path = fleet.blueprint_path(root, spec)
    original = path.read_text()
    _set_split(path, 77)
    _push(http, url, "f" * 40)
    branch = f"meshgen/production/{spec.namespace}/{spec.name}"
    pr = _wait(lambda: forge.find_open(branch), 60, "the warm-up PR")
    forge.merge(pr.number)
    path.write_text(original)  # differs from the merged 77/23 again: its timed push opens a new PR


def bench_first_sync(work: Path, redis_url: str, prefix: str, size: int) -> dict[str, float]:
    root = work / f"fleet-{size}"
    fleet.generate(root, size)
    client = redis.Redis.from_url(redis_url)
    job = sync_repository(root, Settings(root=root, redis_url=redis_url, redis_prefix=prefix),
                          records=Records(client, prefix))
    client.close()
    if job.state != "succeeded" or sum(p.action == "opened" for p in job.prs) != size:
        raise RuntimeError(f"first sync did not open {size} PRs: {job.state} {job.errors[:3]}")
    return job.timings


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--fleet", type=int, default=1000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--results", type=Path, default=TOP / "bench" / "results" / "gitops.md")
    args = parser.parse_args(argv)
    prefix = f"meshgen-bench:{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(args.redis)
    try:
        with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
            samples = bench_webhook(Path(tmp), args.redis, prefix, args.pushes)
            timings = bench_first_sync(Path(tmp), args.redis, prefix, args.fleet)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    p50, p95 = statistics.median(samples), _pct(samples, 0.95)
    command = "python bench/gitops_bench.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    report = f"""
## {time.strftime('%Y-%m-%d %H:%M')} — `{command}`

Webhook → PR opened (uvicorn + `meshgen worker`, local forge, {args.pushes} pushes to different services,
debounce 0.3 s included): **p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms** (min {min(samples) * 1000:.0f},
max {max(samples) * 1000:.0f}); goal p50 < 1 s: **{'met' if p50 < 1 else 'NOT met'}**.

First sync of a {args.fleet:,}-service fleet (in-process `sync_repository`, records in Redis, {args.fleet:,} PRs opened):

| render (s) | repo (s) | forge (s) | records (s) | total (s) |
|---:|---:|---:|---:|---:|
| {timings['render']:.2f} | {timings['repo']:.2f} | {timings['forge']:.2f} | {timings['records']:.2f} | {timings['total']:.2f} |

Machine: Python {platform.python_version()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}.
"""
    args.results.parent.mkdir(parents=True, exist_ok=True)
    if not args.results.exists():
        args.results.write_text("# GitOps benchmarks (appended by bench/gitops_bench.py)\n")
    with args.results.open("a") as out:
        out.write(report)
    print(report)


if __name__ == "__main__":
    main()
