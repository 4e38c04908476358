"""The Argo CD poll on Celery: beat's schedule comes from meshgen.yaml, and a real worker process
runs the poll task against the fake Argo CD (tests/api/argo_fakes.py) into Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
from api_support import TOKENS
from argo_fakes import ArgoCDServer, application
from sync_support import REPO_TOP, Fleet, make_root, running_worker, wait_for

from meshgen.argocd.poller import ArgoKeys
from meshgen.argocd.poller import beat_schedule
from meshgen.gitops.jobs import POLL_SCHEDULE_ENTRY, POLL_TASK_NAME, make_celery
from meshgen.settings import Settings

_SHOW_SCHEDULE = (
    "import json, logging; logging.basicConfig(level=logging.INFO)\n"
    "from worker.app import app\n"
    "print(json.dumps({k: {'task': v['task'], 'schedule': v['schedule'], 'queue': v['options']['queue']}"
    " for k, v in app.conf.beat_schedule.items()}))\n"
    "import worker.tasks; print(json.dumps(sorted(t for t in app.tasks if t.startswith('meshgen.'))))\n"
)


def _argocd_config(url: str, interval: str = "45s") -> str:
    return f"argocd: {{mode: rest, url: '{url}', pollInterval: {interval}}}\n"


def _worker_app_schedule(root: Path) -> tuple[dict[str, dict[str, object]], list[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHGEN_")}
    env.update(MESHGEN_ROOT=str(root), MESHGEN_QUEUE="q-beat")
    out = subprocess.run([sys.executable, "-c", _SHOW_SCHEDULE], env=env, cwd=str(REPO_TOP), capture_output=True,
                         text=True, timeout=60, check=True)
    schedule, tasks = out.stdout.strip().splitlines()[-2:]
    return json.loads(schedule), json.loads(tasks), out.stderr


def test_beat_schedule_comes_from_meshgen_yaml(tmp_path: Path) -> None:
    with_argo = make_root(tmp_path / "with", ["cart"], extra_config=_argocd_config("https://argocd.example.com"))
    without = make_root(tmp_path / "without", ["cart"])
    schedule, note = beat_schedule(Settings(root=with_argo, queue="q1"))
    assert schedule == {POLL_SCHEDULE_ENTRY: {"task": POLL_TASK_NAME, "schedule": 45.0,
                                              "options": {"queue": "q1", "expires": 45.0}}}
    assert "every 45s" in note
    assert beat_schedule(Settings(root=without))[0] == {}
    assert beat_schedule(Settings(root=tmp_path / "missing"))[0] == {}  # unreadable: no entry, no crash
    # What `celery -A worker.app beat` loads: the module's configured app.
    schedule_of_app, tasks, _ = _worker_app_schedule(with_argo)
    assert schedule_of_app == {POLL_SCHEDULE_ENTRY: {"task": POLL_TASK_NAME, "schedule": 45.0, "queue": "q-beat"}}
    assert tasks == [POLL_TASK_NAME, "meshgen.canary.tick", "meshgen.sync"]
    empty, _, log = _worker_app_schedule(without)
    assert empty == {} and "no Argo CD poll scheduled" in log and "no `argocd` section" in log


@pytest.mark.slow
def test_a_worker_process_runs_the_poll_task(fleet: Fleet, argo: ArgoCDServer) -> None:
    config = fleet.root / "meshgen.yaml"
    config.write_text(config.read_text() + _argocd_config(argo.url, "1m"))
    with running_worker(fleet.env(MESHGEN_ARGOCD_TOKEN=TOKENS["argocd"]), fleet.log("worker")):
        assert fleet.finished(fleet.enqueue().id).state == "succeeded"  # units to look applications up for
        tip = str(pygit2.Repository(str(fleet.root / ".meshgen" / "env-repo")).references["refs/heads/main"].target)
        argo.put(application("cart-production", revision=tip, repo_url=str(fleet.root / ".meshgen" / "env-repo")))
        settings = fleet.settings()
        app = make_celery(settings)
        try:
            app.send_task(POLL_TASK_NAME, queue=settings.queue)
        finally:
            app.close()
        keys = ArgoKeys(fleet.prefix)
        raw = wait_for(lambda: fleet.client.get(keys.app("cart-production")), 30, "the poll to cache the application")
    cached = json.loads(raw)  # type: ignore[arg-type]
    assert cached["status"]["sync"]["revision"] == tip and cached["status"]["health"]["status"] == "Healthy"
    assert fleet.client.smembers(keys.apps) == {b"cart-production"}
    assert fleet.client.get(keys.polled) is not None and int(fleet.client.get(keys.version) or 0) == 1
    assert "/api/v1/applications/cart-production" in argo.requests  # asked by name (few units)
    assert "/api/v1/applications/checkout-production" in argo.requests
