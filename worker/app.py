"""The Celery app: configuration from MESHGEN_* settings (Redis broker and result backend).

`celery -A worker.app beat` runs the schedule built here: the Argo CD poll (task
meshgen.argocd.poll) every argocd.pollInterval when ROOT/meshgen.yaml has an `argocd` section.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import beat_init  # type: ignore[import-untyped]

from meshgen.argocd.poller import beat_schedule
from meshgen.gitops.jobs import make_celery
from meshgen.settings import Settings

log = logging.getLogger(__name__)

settings = Settings()
app = make_celery(settings, include=["worker.tasks"])
schedule, schedule_note = beat_schedule(settings)
app.conf.beat_schedule = schedule
log.info("%s", schedule_note)


@beat_init.connect  # type: ignore[untyped-decorator]  # Celery ships no type hints
def _announce_schedule(sender: Any = None, **_: Any) -> None:
    # Logging is configured by the time beat starts (not yet when this module is imported).
    log.info("%s", schedule_note)
