"""`meshgen worker`: the Celery sync worker, in this process (meshgen.cli loads it by name)."""

from __future__ import annotations

import click


@click.command("worker", context_settings={"ignore_unknown_options": True})
@click.option("--queue", "-Q", default=None, help="Queue to consume (default: MESHGEN_QUEUE, 'meshgen').")
@click.option("--pool", type=click.Choice(["solo", "prefork", "threads"]), default="solo", show_default=True,
              help="solo: one sync at a time in this process (syncs of one repository are serialised anyway).")
@click.option("--concurrency", "-c", type=int, default=1, show_default=True)
@click.option("--loglevel", "-l", default=None, help="Default: MESHGEN_LOG_LEVEL.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queue: str | None, pool: str, concurrency: int, loglevel: str | None, celery_args: tuple[str, ...]) -> None:
    """Run the Celery sync worker (Redis from MESHGEN_REDIS_URL); extra arguments go to Celery."""
    # In-process (app.worker_main), not a `celery` subprocess: one PID, so SIGTERM reaches Celery
    # directly (warm shutdown, also as PID 1 in a container) and no `celery` script must be on PATH.
    from worker.app import app, settings

    argv = ["worker", "--pool", pool, "--concurrency", str(concurrency),
            "--queues", queue or settings.queue, "--loglevel", (loglevel or settings.log_level).upper(),
            *celery_args]
    app.worker_main(argv)
