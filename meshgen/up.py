"""`meshgen up`: the whole flow on one laptop, with nothing to set up.

* the environment repository is a local bare repository under ROOT/.meshgen/ (created if absent),
  and pull requests live in it (the local forge: `meshgen pr list | merge N`);
* sync jobs run in this process, on a single thread, in order;
* job and rollout records go to Redis when one answers at MESHGEN_REDIS_URL, else to an
  in-memory Redis (fakeredis) that lives as long as the process;
* the API and the status page serve on MESHGEN_HOST:MESHGEN_PORT (127.0.0.1:8080);
* a change to meshgen.yaml or blueprints/ is noticed within a second and synced again.

Argo CD is not part of the embedded setup, so rollouts stop at `awaiting-sync` once merged.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshgen.diagnostics import BlueprintError
from meshgen.forges.base import ForgeError
from meshgen.gitops.envrepo import EnvRepoError
from meshgen.records import JobRecord, Records
from meshgen.settings import Settings

log = logging.getLogger("meshgen.up")

POLL_SECONDS = 1.0
PRS_LISTED = 25  # pull requests named after a sync; the rest are counted


def fingerprint(root: Path) -> tuple[object, ...]:
    """What a sync depends on, cheaply: the stat keys of meshgen.yaml and of every blueprint."""
    from meshgen.blueprint.loading import CONFIG_FILE, scan

    config = root / CONFIG_FILE
    st = config.stat() if config.exists() else None
    return ((st.st_mtime_ns, st.st_size) if st else None, *scan(root).items())


def connect_records(settings: Settings) -> tuple[Records, str]:
    """Records in the configured Redis when it answers, else in an in-process Redis."""
    import redis

    from meshgen.gitops.jobs import records_for

    records = records_for(settings)
    try:
        records.client.ping()
        return records, f"Redis at {settings.redis_url}"
    except redis.RedisError:
        import fakeredis

        return records_for(settings, fakeredis.FakeRedis()), "memory (no Redis answered; records end with the process)"


@dataclass
class JobRunner:
    """Runs sync jobs one at a time on a background thread; requests made while one runs coalesce."""

    run: Callable[[str, JobRecord | None], JobRecord]
    _wanted: queue.Queue[tuple[str, JobRecord | None]] = field(default_factory=lambda: queue.Queue())
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="meshgen-sync", daemon=True)
        self._thread.start()

    def submit(self, trigger: str, job: JobRecord | None = None) -> None:
        self._wanted.put((trigger, job))

    def stop(self) -> None:
        self._stop.set()
        self._wanted.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            trigger, job = self._wanted.get()
            if self._stop.is_set():
                return
            # Everything asked for meanwhile is covered by this one sync of the current files.
            while not self._wanted.empty():
                trigger, job = self._wanted.get_nowait()
            try:
                self.run(trigger, job)
            except BlueprintError:
                pass  # already printed as diagnostics by _sync_once: a traceback would only hide them
            except (EnvRepoError, ForgeError) as exc:  # their message names the repository and the fix
                log.error("sync failed: %s", exc)
            except Exception:  # a failed sync is recorded in its job; the loop goes on
                log.exception("sync failed")


def watch(root: Path, on_change: Callable[[], None], stop: threading.Event, interval: float = POLL_SECONDS) -> None:
    """Call `on_change` when meshgen.yaml or a blueprint is added, edited or removed."""
    last = fingerprint(root)
    while not stop.wait(interval):
        now = fingerprint(root)
        if now != last:
            last = now
            on_change()


def canary_timer(runner: JobRunner, interval: float, stop: threading.Event) -> None:
    """Ask for a sync pass (trigger `canary`) every `interval` seconds until `stop`."""
    while not stop.wait(interval):
        runner.submit("canary")


class ProgressReport:
    """A progress bar per environment on long syncs (a terminal), or a log line every 10% (a pipe)."""

    MIN_GROUPS = 50  # short syncs finish before a bar is worth drawing

    def __init__(self) -> None:
        self._bar: Any = None
        self._env: str | None = None
        self._logged = -1

    def __call__(self, env: str, done: int, total: int) -> None:
        if total < self.MIN_GROUPS:
            return
        if env != self._env:
            self.close()
            self._env, self._logged = env, -1
            if sys.stderr.isatty():
                import click

                self._bar = click.progressbar(length=total, label=f"syncing {env}", file=sys.stderr)
                self._bar.__enter__()
        if self._bar is not None:
            self._bar.update(1)
        elif (tenth := done * 10 // total) > self._logged:
            self._logged = tenth
            log.info("syncing %s: %d/%d pull-request groups", env, done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _sync_once(root: Path, settings: Settings, records: Records, trigger: str, job: JobRecord | None,
               retry_rejected: bool = False) -> JobRecord:
    from meshgen.diagnostics import BlueprintError
    from meshgen.gitops.sync import pr_summary, sync_repository

    started = time.perf_counter()
    log.info("sync started (%s)", trigger)
    bar = ProgressReport()
    try:
        done = sync_repository(root, settings, trigger=trigger, records=records, job=job, progress=bar,
                               retry_rejected=retry_rejected)
    except BlueprintError as exc:
        errors = [d for d in exc.diagnostics if d.severity == "error"]
        for d in exc.diagnostics:
            log.error("%s", d)
        log.error("sync failed: %d blueprint error(s); nothing was pushed. Fix them and save: meshgen syncs again", len(errors))
        raise
    finally:
        bar.close()
    for error in done.errors:
        log.error("%s", error)
    if done.state == "partial":
        log.error("%d blueprint error(s): only the units of the failing blueprints were held back; "
                  "fix them and save: meshgen syncs again", len(done.errors))
    log.info("sync done in %.1fs: pull requests %s", time.perf_counter() - started, pr_summary(done.prs))
    changed = [pr for pr in done.prs if pr.action in ("opened", "updated")]
    for pr in changed[:PRS_LISTED]:
        log.info("  PR #%s %s %s (%s)", pr.number, pr.action, pr.branch, pr.env)
    if len(changed) > PRS_LISTED:
        log.info("  ... and %d more (meshgen pr list)", len(changed) - PRS_LISTED)
    for warning in done.warnings[:20]:
        log.warning("%s", warning)
    return done


def run(root: Path, settings: Settings, *, open_browser: bool = False) -> None:
    """Sync ROOT now, then serve the API and status page and sync again on every change."""
    import uvicorn

    from meshgen.api.app import create_app
    from meshgen.canary import controller
    from meshgen.gitops.jobs import SyncRequest
    from meshgen.gitops.sync import new_job_id
    from meshgen.records import JobRecord

    controller.install()  # every sync renders canaries at their step and reconciles them
    records, where = connect_records(settings)
    log.info("blueprints: %s; records: %s", root.resolve(), where)
    retry_ids: set[str] = set()  # jobs asked for with retry_rejected (POST /api/v1/syncs)
    runner = JobRunner(lambda trigger, job: _sync_once(root, settings, records, trigger, job,
                                                       retry_rejected=job is not None and job.id in retry_ids))

    def enqueue(request: SyncRequest) -> JobRecord:
        job = JobRecord(id=new_job_id(), trigger=request.trigger, state="queued",
                        blueprint_commit=request.blueprint_commit, blueprint_author=request.blueprint_author)
        if request.retry_rejected:
            retry_ids.add(job.id)
        records.save_job(job)
        runner.submit(request.trigger, job)
        return job

    # The first sync runs before the server starts, so the status page opens on real data.
    try:
        _sync_once(root, settings, records, "up", None)
    except BlueprintError:
        pass  # printed as diagnostics by _sync_once; the server still starts
    except Exception as exc:  # noqa: BLE001 - repository errors are logged; the server still starts
        log.error("first sync did not complete: %s", exc)
    runner.start()
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(root, lambda: runner.submit("change"), stop), daemon=True)
    watcher.start()
    # The canary controller's timer: a sync pass every MESHGEN_CANARY_TICK seconds (it writes nothing
    # unless a canary moves; requests that pile up while a sync runs coalesce into one).
    ticker = threading.Thread(target=canary_timer, args=(runner, settings.canary_tick, stop), daemon=True)
    ticker.start()
    app = create_app(settings, records=records, enqueue=enqueue)
    url = f"http://{settings.host}:{settings.port}/"
    log.info("status page: %s   API: %sapi/v1/rollouts", url, url)
    local = _env_repo_hint(root)
    if local is not None:
        log.info("pull requests: meshgen pr --repo %s list", local)
        log.info("edit a blueprint and save: meshgen syncs it; `meshgen pr merge N` merges a pull request")
    else:  # `meshgen pr` reads the local forge only; a real forge shows its pull requests itself
        log.info("edit a blueprint and save: meshgen syncs it; the pull requests open on the forge")
    if open_browser:
        import webbrowser

        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        stop.set()
        runner.stop()


def _env_repo_hint(root: Path) -> str | None:
    """The local environment repository for `meshgen pr --repo`; None when it is a remote."""
    from meshgen.blueprint.loading import load_config
    from meshgen.giturls import local_path

    config, _ = load_config(root)
    path = local_path(config.env_repo.url, root)
    return os.path.relpath(path) if path is not None else None


__all__ = ["JobRunner", "canary_timer", "connect_records", "fingerprint", "run", "watch"]
