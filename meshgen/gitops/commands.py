"""`meshgen pr ...`: look at and act on the pull requests of the local (embedded) forge.

Register with `cli.add_command(pr)`. The group keeps its state in `ctx.meta` (namespaced key),
so it does not compete with whatever the main group puts in `ctx.obj`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from meshgen.forges.base import ForgeError, PullRequest
from meshgen.forges.local import LocalForge

log = logging.getLogger(__name__)

DEFAULT_REPO = Path(".meshgen") / "env-repo"
_META_KEY = "meshgen.gitops.pr.repo"
#: The JSON fields of one pull request, in this order; a stable interface for scripts.
JSON_FIELDS = (
    "number",
    "title",
    "state",
    "branch",
    "base",
    "head_sha",
    "merge_sha",
    "env",
    "namespace",
    "service",
    "url",
)


def scope_of(branch: str) -> tuple[str | None, str | None, str | None]:
    """(env, namespace, service) encoded in a meshgen branch name; None where the grouping has none.

    `meshgen/<env>/<ns>/<service>` → all three; `meshgen/<env>/_mesh` → ("<env>", "", "_mesh");
    team (`meshgen/<env>/team-<t>`) and environment (`meshgen/<env>/all`) branches → env only.
    """
    parts = branch.split("/")
    if len(parts) < 3 or parts[0] != "meshgen":
        return None, None, None
    if len(parts) == 4:
        return parts[1], parts[2], parts[3]
    if len(parts) == 3 and parts[2] == "_mesh":
        return parts[1], "", "_mesh"
    return parts[1], None, None


def pr_json(pr: PullRequest) -> dict[str, Any]:
    env, namespace, service = scope_of(pr.branch)
    values = {
        "number": pr.number,
        "title": pr.title,
        "state": pr.state,
        "branch": pr.branch,
        "base": pr.base,
        "head_sha": pr.head_sha,
        "merge_sha": pr.merge_sha,
        "env": env,
        "namespace": namespace,
        "service": service,
        "url": pr.url,
    }
    return {key: values[key] for key in JSON_FIELDS}


def _forge(ctx: click.Context) -> LocalForge:
    path: Path = ctx.meta[_META_KEY]
    if not path.exists():
        raise click.ClickException(
            f"no environment repository at {path}; pass --repo PATH, or run meshgen once to create it"
        )
    try:
        return LocalForge(path)
    except ForgeError as exc:
        raise click.ClickException(str(exc)) from exc


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


@click.group("pr")
@click.option(
    "--repo",
    "repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_REPO,
    show_default=True,
    help="The environment repository holding the pull requests (local forge).",
)
@click.pass_context
def pr(ctx: click.Context, repo: Path) -> None:
    """Pull requests of the local forge: list, show, merge, close."""
    ctx.meta[_META_KEY] = repo


@pr.command("list")
@click.option(
    "--state", type=click.Choice(["open", "merged", "closed"]), default=None, help="Only this state."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of objects).")
@click.pass_context
def list_(ctx: click.Context, state: str | None, as_json: bool) -> None:
    """Pull requests opened by meshgen, newest first."""
    try:
        prs = _forge(ctx).list(state)  # type: ignore[arg-type]
    except ForgeError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json([pr_json(p) for p in prs])
        return
    if not prs:
        click.echo("no pull requests" + (f" in state {state}" if state else ""))
        return
    for p in prs:
        click.echo(f"#{p.number:<4} {p.state:<7} {p.branch:<50} {p.title}")


@pr.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--diff", "with_diff", is_flag=True, help="Print the per-file YAML diff of the pull request.")
@click.pass_context
def show(ctx: click.Context, number: int, as_json: bool, with_diff: bool) -> None:
    """One pull request with its description and conversation (--diff: its YAML diff)."""
    forge = _forge(ctx)
    try:
        p = forge.get(number)
        comments = forge.comments(number)
    except ForgeError as exc:
        raise click.ClickException(str(exc)) from exc
    if with_diff:
        from meshgen.gitops.prdiff import pr_diff

        change = pr_diff(forge.repo, p)
        click.echo(change.patch, nl=False)
        if change.truncated:
            click.echo(f"\n(diff cut at {len(change.patch)} bytes)", err=True)
        return
    if as_json:
        _echo_json(pr_json(p))
        return
    click.echo(f"#{p.number} {p.title}")
    click.echo(f"state:  {p.state}")
    click.echo(f"branch: {p.branch} -> {p.base}")
    click.echo(f"head:   {_short(p.head_sha)}    merge: {_short(p.merge_sha)}")
    click.echo(f"labels: {', '.join(p.labels) or '-'}")
    click.echo(f"url:    {p.url}")
    click.echo("")
    click.echo(p.body.rstrip())
    for c in comments:
        when = datetime.fromtimestamp(c["at"], tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        click.echo("")
        click.echo(f"--- {c['author']} commented ({when}):")
        click.echo(c["body"].rstrip())


def _record_merge(p: PullRequest) -> int:
    """Best effort: mark the unit records of `p` merged (or closed) in Redis (MESHGEN_REDIS_URL / _PREFIX).

    Without Redis nothing is lost: the next sync records the merge (and its merge commit) too.
    """
    import redis
    from pydantic import ValidationError

    from meshgen.gitops.sync import record_pr_state
    from meshgen.records import Records
    from meshgen.settings import Settings

    try:
        settings = Settings()
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=1)
    except (ValidationError, ValueError, OSError) as exc:
        log.debug("not updating rollout records: %s", exc)
        return 0
    try:
        updated = record_pr_state(Records(client, settings.redis_prefix), p)
    except redis.RedisError as exc:
        log.debug("not updating rollout records (Redis: %s); the next sync records the merge", exc)
        return 0
    finally:
        client.close()
    return updated


@pr.command("merge")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the merged pull request as JSON.")
@click.option("--records/--no-records", default=True, show_default=True,
              help="Also mark the unit records in Redis (MESHGEN_REDIS_URL) merged right away, when reachable; "
                   "the next sync records the merge either way.")
@click.pass_context
def merge(ctx: click.Context, number: int, as_json: bool, records: bool) -> None:
    """Merge into the base branch (fast-forward when possible, else a merge commit)."""
    try:
        p = _forge(ctx).merge(number)
    except ForgeError as exc:
        raise click.ClickException(str(exc)) from exc
    recorded = _record_merge(p) if records else 0
    if as_json:
        _echo_json(pr_json(p))
    else:
        click.echo(f"merged #{p.number} into {p.base} as {_short(p.merge_sha)}")
        if recorded:
            click.echo(f"recorded the merge on {recorded} rollout(s); Argo CD decides when it is live")


@pr.command("close")
@click.argument("number", type=int)
@click.option("--comment", default=None, help="Why it is closed (kept in the conversation).")
@click.option("--json", "as_json", is_flag=True, help="Print the closed pull request as JSON.")
@click.option("--records/--no-records", default=True, show_default=True,
              help="Also mark the unit records in Redis rejected right away, when reachable.")
@click.pass_context
def close(ctx: click.Context, number: int, comment: str | None, as_json: bool, records: bool) -> None:
    """Close without merging: rejects this rendering (meshgen opens nothing for it until it changes)."""
    try:
        p = _forge(ctx).close(number, comment=comment)
    except ForgeError as exc:
        raise click.ClickException(str(exc)) from exc
    recorded = _record_merge(p) if records else 0
    if as_json:
        _echo_json(pr_json(p))
    else:
        click.echo(f"closed #{p.number} ({p.branch}); meshgen will not open this rendering again "
                   "(`meshgen sync --retry-rejected` does)")
        if recorded:
            click.echo(f"recorded the rejection on {recorded} rollout(s)")
