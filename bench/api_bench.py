"""Rollout API benchmark: one rollout and list pages with 10,000 rollouts cached, side by side
with a bare FastAPI endpoint returning a constant JSON, under the same uvicorn settings, with wrk.

    .venv/bin/python bench/api_bench.py [--units 10000] [--duration 10] [--connections 64]

Needs Redis at 127.0.0.1:6379 (DB 13, a unique prefix, removed afterwards) and wrk
(`apt-get install -y wrk`). Writes bench/results/api.md.

The setup goes through the real path: UnitRecords in Redis, a loopback stand-in for Argo CD
serving 10,000 Applications, poll_once (list mode) into Redis, a real environment repository
whose merge commit each Application's synced revision descends from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pygit2
import redis
import yaml
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "api.md"
REDIS_URL = "redis://127.0.0.1:6379/13"
TOKEN = "bench-read-token"


def bare_app() -> FastAPI:
    """The baseline: the cheapest FastAPI endpoint there is (uvicorn --factory api_bench:bare_app)."""
    app = FastAPI()

    @app.get("/const")
    async def const() -> dict[str, Any]:
        return {"status": "ok", "state": "healthy", "live": True}

    return app


# ---- setup ------------------------------------------------------------------------------


def _env_repo(folder: Path) -> tuple[Path, str, str]:
    path = folder / "env.git"
    repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
    sig = pygit2.Signature("bench", "bench@example.com", 1_700_000_000, 0)

    def commit(parents: list[pygit2.Oid], data: bytes) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        tb.insert("f", repo.create_blob(data), pygit2.GIT_FILEMODE_BLOB)
        return repo.create_commit(None, sig, sig, "c", tb.write(), parents)

    base = commit([], b"0")
    merge = commit([base], b"1")
    later = commit([merge], b"2")
    repo.references.create("refs/heads/main", later)
    return path, str(merge), str(later)


def _argo_app(name: str, revision: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "argocd"},
            "spec": {"project": "default", "source": {"repoURL": "https://git.example.com/env.git", "path": name}},
            "status": {"sync": {"status": "Synced", "revision": revision}, "health": {"status": "Healthy"},
                       "reconciledAt": "2026-01-01T10:05:00Z",
                       "operationState": {"phase": "Succeeded", "finishedAt": "2026-01-01T10:00:00Z",
                                          "syncResult": {"revision": revision}}}}


def _argo_server(apps: list[dict[str, Any]]) -> ThreadingHTTPServer:
    body = json.dumps({"items": apps}).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def seed(work: Path, prefix: str, units: int) -> dict[str, float]:
    from meshgen.argocd.poller import poll_once
    from meshgen.blueprint.loading import load_config
    from meshgen.records import PRRef, Records, UnitRecord
    from meshgen.settings import Settings

    env_path, merge, later = _env_repo(work)
    client = redis.Redis.from_url(REDIS_URL)
    records = Records(client, prefix)
    pipe = client.pipeline(transaction=False)
    apps = []
    for i in range(units):
        ns, svc = f"ns{i // 100:03d}", f"svc{i:05d}"
        unit = UnitRecord(env="staging", namespace=ns, service=svc, team=f"team{i % 20:02d}",
                          blueprint_path=f"blueprints/{ns}/{svc}.yaml", blueprint_commit="b" * 40, job_id="j",
                          pr=PRRef(number=i + 1, url=f"https://git.example.com/env/pulls/{i + 1}", state="merged",
                                   branch=f"meshgen/staging/{ns}/{svc}", head_sha=merge, merge_sha=merge))
        pipe.set(f"{prefix}unit:{unit.key}", unit.model_dump_json())
        pipe.sadd(f"{prefix}units", unit.key)
        apps.append(_argo_app(f"{svc}-staging", later))
        if (i + 1) % 1000 == 0:
            pipe.execute()
    pipe.execute()
    server = _argo_server(apps)
    root = work / "blueprints"
    root.mkdir()
    (root / "meshgen.yaml").write_text(yaml.safe_dump({
        "environments": {"staging": {}}, "envRepo": {"url": str(env_path)},
        "argocd": {"url": f"http://127.0.0.1:{server.server_address[1]}", "staleAfter": "10m"},
    }))
    settings = Settings(root=root, redis_url=REDIS_URL, redis_prefix=prefix, argocd_token="t")
    started = time.perf_counter()
    result = poll_once(load_config(root)[0], settings, records)
    poll_seconds = time.perf_counter() - started
    server.shutdown()
    assert result.ok and result.apps == units, result
    return {"poll_seconds": poll_seconds}


# ---- measuring --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uvicorn(target: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--factory", target, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--no-access-log", "--log-level", "warning", "--app-dir", str(ROOT / "bench")]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz" if "meshgen" in target else url + "/const", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"{target} did not start")
        time.sleep(0.2)
    return proc, url


def _wrk(url: str, script: Path, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return {"rps": rps, "p50": pct("50"), "p99": pct("99")}


def _lua(path: Path, requests: str) -> Path:
    path.write_text(requests)
    return path


def _latency(url: str, path: str, n: int) -> dict[str, float]:
    samples = []
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for _ in range(5):
            client.get(url + path).raise_for_status()
        for _ in range(n):
            started = time.perf_counter()
            resp = client.get(url + path)
            samples.append((time.perf_counter() - started) * 1000)
            resp.raise_for_status()
    samples.sort()
    return {"median": statistics.median(samples), "p99": samples[int(len(samples) * 0.99) - 1],
            "bytes": len(resp.content)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    prefix = f"meshgen-bench-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            setup = seed(work, prefix, args.units)
            env = {**os.environ, "MESHGEN_ROOT": str(work / "blueprints"), "MESHGEN_REDIS_URL": REDIS_URL,
                   "MESHGEN_REDIS_PREFIX": prefix, "MESHGEN_API_READ_TOKENS": TOKEN, "PYTHONPATH": str(ROOT)}
            meshgen, murl = _uvicorn("meshgen.api.app:create_app", env)
            procs.append(meshgen)
            bare, burl = _uvicorn("api_bench:bare_app", env)
            procs.append(bare)
            from meshgen.api.view import RolloutView  # noqa: F401 - measured below through the server
            one = _latency(murl, "/api/v1/rollouts/staging/ns000/svc00000", 200)
            auth = f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
            rollout_lua = _lua(work / "rollout.lua", auth + (
                f"math.randomseed(42)\nrequest = function()\n  local i = math.random(0, {args.units - 1})\n"
                '  return wrk.format("GET", string.format("/api/v1/rollouts/staging/ns%03d/svc%05d", i // 100, i))\n'
                "end\n").replace("i // 100", "math.floor(i / 100)"))
            const_lua = _lua(work / "const.lua", auth + 'request = function()\n  return wrk.format("GET", "/const")\nend\n')
            # Warm both, then measure alternately (bare, meshgen, bare, meshgen) and keep the best of each.
            _wrk(burl, const_lua, 2, args.connections, args.threads)
            _wrk(murl, rollout_lua, 2, args.connections, args.threads)
            runs: dict[str, list[dict[str, float]]] = {"bare": [], "rollout": []}
            for _ in range(2):
                runs["bare"].append(_wrk(burl, const_lua, args.duration, args.connections, args.threads))
                runs["rollout"].append(_wrk(murl, rollout_lua, args.duration, args.connections, args.threads))
            best = {k: max(v, key=lambda r: r["rps"]) for k, v in runs.items()}
            pages = {
                "limit=100": _latency(murl, "/api/v1/rollouts?limit=100", 200),
                "limit=1000": _latency(murl, "/api/v1/rollouts?limit=1000", 100),
                "limit=1000, cursor in the middle": _latency(murl, "/api/v1/rollouts?limit=1000&cursor=staging/ns050/svc05000", 100),
                "team filter, limit=1000": _latency(murl, "/api/v1/rollouts?team=team07&limit=1000", 100),
                "status page, one team": _latency(murl, "/?team=team07", 50),
            }
            build = httpx.get(murl + "/readyz").json()["checks"]["snapshot"]["detail"]
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            keys = list(client.scan_iter(match=prefix + "*", count=5000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
    ratio = best["rollout"]["rps"] / best["bare"]["rps"]
    report(args, setup, best, runs, ratio, one, pages, build)


def report(args: Any, setup: dict[str, float], best: dict[str, dict[str, float]], runs: dict[str, Any], ratio: float,
           one: dict[str, float], pages: dict[str, dict[str, float]], build: str) -> None:
    import fastapi
    import uvicorn

    lines = [
        "# Rollout API benchmark",
        "",
        "```sh",
        (f".venv/bin/python bench/api_bench.py --units {args.units} --duration {args.duration} "
        f"--connections {args.connections}"),
        "```",
        "",
        (f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__} (1 worker, default loop/http, "
        f"no access log); wrk -t{args.threads} -c{args.connections} -d{args.duration}s on the same machine."),
        (f"{args.units} rollouts cached (all `healthy`: merged PR, Application synced to a descendant of the "
        "merge commit); each wrk request asks for a random one, with a read token."),
        "",
        "| endpoint | requests/s | p50 | p99 |",
        "|---|---|---|---|",
        (f"| bare FastAPI `GET /const` (constant JSON) | {best['bare']['rps']:,.0f} | {best['bare']['p50']:.2f} ms | "
        f"{best['bare']['p99']:.2f} ms |"),
        (f"| `GET /api/v1/rollouts/{{env}}/{{namespace}}/{{service}}` | {best['rollout']['rps']:,.0f} | "
        f"{best['rollout']['p50']:.2f} ms | {best['rollout']['p99']:.2f} ms |"),
        "",
        f"**Ratio: {ratio:.2f}x** of the bare endpoint (target ≥ 0.7x); p99 {best['rollout']['p99']:.2f} ms "
        "(target < 20 ms). Best of two alternating runs each; all runs: "
        + ", ".join(f"{k} {[round(r['rps']) for r in v]}" for k, v in runs.items()) + ".",
        "",
        f"One rollout, sequential (no load): median {one['median']:.2f} ms, {one['bytes']} bytes.",
        "",
        "| list / page (sequential, no load) | median | p99 | body |",
        "|---|---|---|---|",
        *[f"| {name} | {r['median']:.2f} ms | {r['p99']:.2f} ms | {r['bytes'] / 1024:.0f} KiB |"
          for name, r in pages.items()],
        "",
        (f"Setup: poll_once of {args.units} Applications (list mode, trim, Redis, mirror fetch) "
        f"{setup['poll_seconds']:.2f} s. Snapshot: {build}."),
        "",
        ("Why it is fast: every API process keeps the joined view (unit + job + Application + Git "
        "ancestry → state) as one pre-encoded JSON body per rollout, rebuilt in a thread only when a "
        "fingerprint in Redis moves (version counters, newest job records). A request is a dict lookup "
        "plus appending `stale`/`age_seconds`; list pages are a bisect and a byte join."),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
