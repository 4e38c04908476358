"""The meshgen Celery worker: a thin wiring of meshgen.gitops.jobs into a Celery app.

Start it with `meshgen worker` (or `celery -A worker.app worker`).
"""
