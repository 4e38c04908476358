"""`meshgen sync` (the whole flow in-process); `meshgen worker` is worker/cli.py.

Register with `main.add_command(sync)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from meshgen.settings import Settings

#: Exit status when the environment repository or the forge failed (blueprint errors exit 1).
EXIT_SYNC_FAILED = 3


def _records_if_reachable(settings: Settings) -> object | None:
    """Records when Redis answers within a second, else None (`meshgen sync` works without Redis)."""
    import redis

    from meshgen.records import Records

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, ValueError):
        return None
    return Records(client, settings.redis_prefix)


@click.command("sync")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path), default=".", required=False)
@click.option("--env", "env", metavar="ENV", help="Only this environment (a name from meshgen.yaml).")
@click.option("--commit", "commit", metavar="SHA",
              help="Blueprint commit to note in PRs and records (CI: $GITHUB_SHA). With MESHGEN_BLUEPRINTS_URL it "
                   "must be on MESHGEN_BLUEPRINTS_BRANCH, whose fetched tip is rendered.")
@click.option("--no-records", is_flag=True, help="Do not write job/unit records to Redis even if it is reachable.")
@click.option("--json", "as_json", is_flag=True, help="Print the job record as JSON.")
@click.option("--retry-rejected", is_flag=True,
              help="Open pull requests again for renderings a reviewer rejected (closed without merging).")
def sync(root: Path, env: str | None, commit: str | None, no_records: bool, as_json: bool,
         retry_rejected: bool) -> None:
    """Render ROOT and open or update the pull requests of the environment repository, in-process.

    With MESHGEN_BLUEPRINTS_URL set, the blueprints repository is fetched and the tip of
    MESHGEN_BLUEPRINTS_BRANCH is rendered instead of ROOT's blueprints/ (ROOT keeps the state).
    """
    from meshgen.canary import controller
    from meshgen.diagnostics import BlueprintError
    from meshgen.forges.base import ForgeError
    from meshgen.gitops.blueprints import BlueprintsSourceError
    from meshgen.gitops.coordination import LockBusy, WriterLock
    from meshgen.gitops.envrepo import EnvRepoError
    from meshgen.gitops.jobs import writer_lock_resource
    from meshgen.gitops.sync import format_report, sync_repository
    from meshgen.records import Records

    controller.install()
    settings = Settings(root=root)
    records = None if no_records else _records_if_reachable(settings)
    if records is None and not no_records:
        click.echo("meshgen: Redis not reachable; syncing without job records", err=True)
    try:
        if isinstance(records, Records):
            # Share the worker's writer lock, so CI and a running worker never push at once.
            with WriterLock(records.client, records.prefix, writer_lock_resource(root), ttl=settings.lock_ttl,
                            wait=settings.lock_wait) as lock:
                job = sync_repository(root, settings, env=env, blueprint_commit=commit, records=records,
                                      fence=lock.check, retry_rejected=retry_rejected)
        else:
            job = sync_repository(root, settings, env=env, blueprint_commit=commit, retry_rejected=retry_rejected)
    except BlueprintError as exc:
        for d in exc.diagnostics:
            click.echo(str(d), err=True)
        errors = sum(1 for d in exc.diagnostics if d.severity == "error")
        click.echo(f"meshgen: {errors} error(s); nothing was pushed", err=True)
        sys.exit(1)
    except (EnvRepoError, ForgeError, LockBusy, BlueprintsSourceError) as exc:
        click.echo(f"meshgen: sync failed: {exc}", err=True)
        sys.exit(EXIT_SYNC_FAILED)
    for warning in job.warnings:
        click.echo(warning, err=True)
    if as_json:
        click.echo(json.dumps(job.model_dump(mode="json"), indent=2))
    else:
        for line in format_report(job):
            click.echo(line)
    if job.state == "partial":
        # The healthy units were delivered; the broken blueprints blocked only their own units.
        for error in job.errors:
            click.echo(error, err=True)
        click.echo(f"meshgen: {len(job.errors)} error(s); only the units of the failing blueprints were held back",
                   err=True)
        sys.exit(1)
