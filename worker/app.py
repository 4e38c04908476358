"""The Celery app: configuration from MESHGEN_* settings (Redis broker and result backend)."""

from __future__ import annotations

from meshgen.gitops.jobs import make_celery
from meshgen.settings import Settings

settings = Settings()
app = make_celery(settings, include=["worker.tasks"])
