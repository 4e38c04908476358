"""Celery beat's schedule has the canary controller's timer exactly when meshgen.yaml has a Prometheus."""

from __future__ import annotations

from pathlib import Path

from meshgen.argocd.poller import beat_schedule
from meshgen.gitops.jobs import CANARY_SCHEDULE_ENTRY, CANARY_TASK_NAME, POLL_SCHEDULE_ENTRY
from meshgen.settings import Settings


def _schedule(tmp_path: Path, config: str, **settings: float) -> tuple[dict[str, dict[str, object]], str]:
    envs = "" if config.startswith("environments:") else "environments:\n  staging: {}\n"
    (tmp_path / "meshgen.yaml").write_text(envs + config)
    return beat_schedule(Settings(root=tmp_path, queue="q", **settings))  # type: ignore[arg-type]


def test_the_canary_timer_follows_the_prometheus_setting(tmp_path: Path) -> None:
    schedule, note = _schedule(tmp_path, "prometheus: {url: 'http://prometheus:9090'}\n", canary_tick=7.0)
    assert schedule[CANARY_SCHEDULE_ENTRY] == {"task": CANARY_TASK_NAME, "schedule": 7.0,
                                               "options": {"queue": "q", "expires": 7.0}}
    assert POLL_SCHEDULE_ENTRY not in schedule and "canary controller every 7s" in note
    per_env, _ = _schedule(tmp_path, "environments:\n  staging: {prometheus: {url: 'http://p:9090'}}\n")
    assert CANARY_SCHEDULE_ENTRY in per_env
    none, note = _schedule(tmp_path, "")
    assert none == {} and "no Argo CD poll scheduled" in note
