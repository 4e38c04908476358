"""The `meshgen` command line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import click

from meshgen import __version__
from meshgen.diagnostics import BlueprintError, Diagnostic, escape_line

ROOT_ARG = click.argument("root", type=click.Path(file_okay=False, path_type=Path), default=".", required=False)
ENV_OPT = click.option("--env", "env", metavar="ENV", help="Only this environment (a name from meshgen.yaml).")


class _MeshChoice(click.Choice[str]):
    """The registered meshes (meshgen.render.registry), read when --mesh is used or shown: importing
    the renderers takes longer than `meshgen --help` and the commands without --mesh need."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        from meshgen.render.registry import mesh_names

        return mesh_names()

    @choices.setter
    def choices(self, value: object) -> None:
        pass  # click.Choice.__init__ stores its (empty) choices


MESH_OPT = click.option("--mesh", type=_MeshChoice(), help="Render every service for this mesh.")


WARNINGS_SHOWN = 50


def _report(diagnostics: list[Diagnostic], *, all_warnings: bool = True) -> None:
    """Print errors, then warnings; a long run of warnings is summarised by field."""
    errors = [d for d in diagnostics if d.severity == "error"]
    warnings = [d for d in diagnostics if d.severity != "error"]
    for d in errors:
        click.echo(str(d), err=True)
    shown = warnings if all_warnings or len(warnings) <= WARNINGS_SHOWN else warnings[:WARNINGS_SHOWN]
    for d in shown:
        click.echo(str(d), err=True)
    if len(shown) < len(warnings):
        by_path = Counter(d.path for d in warnings[len(shown):])  # tens of thousands, few distinct
        by_field: Counter[str] = Counter()
        for path, n in by_path.items():
            by_field[re.sub(r"\[\d+\]", "[]", path) or "(file)"] += n
        summary = ", ".join(f"{path} {n}" for path, n in by_field.most_common(10))
        click.echo(f"... and {len(warnings) - len(shown)} more warnings ({summary}); "
                   "`meshgen validate --all-warnings` lists every one", err=True)


def _fail(exc: BlueprintError) -> None:
    _report(exc.diagnostics)
    errors = sum(1 for d in exc.diagnostics if d.severity == "error")
    click.echo(f"meshgen: {errors} error(s); nothing was written", err=True)
    sys.exit(1)


#: An unexpected exception (a bug): sysexits.h's EX_SOFTWARE.
EXIT_INTERNAL_ERROR = 70
#: The reader of stdout closed the pipe: what a shell reports for a process SIGPIPE ended.
EXIT_BROKEN_PIPE = 141


class LazyGroup(click.Group):
    """Subcommands that live with their area of the code, imported only when run.

    Click's documented lazy-loading pattern: `meshgen render` should not pay for pygit2,
    Celery or FastAPI (a re-render's budget is 100 ms; those imports alone cost more).
    """

    def __init__(self, *args: object, lazy_subcommands: dict[str, tuple[str, str]] | None = None,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy_subcommands = lazy_subcommands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # `meshgen --help` lists every command; importing the lazy ones for their one-line help
        # would cost half a second, so their lines are kept here (a test keeps them in step).
        # Otherwise as click.Group.format_commands.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            if name in self.lazy_subcommands:
                help_only = click.Command(name, help=self.lazy_subcommands[name][1])  # shortened as click does
                rows.append((name, help_only.get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        # Every expected failure (bad blueprints, a forge or git error, a bad flag) has its own message
        # and exit status; what reaches here is a bug. Say so in one line, not a traceback, and how to
        # get the traceback for a report. Jobs end `failed` on their own (meshgen.gitops.sync).
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`meshgen pr list | head`): not a failure of meshgen's. Stop quietly
            # with the shell's status for it (128 + SIGPIPE); stdout goes to /dev/null so the interpreter's
            # final flush does not fail again.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(EXIT_BROKEN_PIPE)
        except Exception as exc:
            if os.environ.get("MESHGEN_DEBUG"):
                raise
            detail = escape_line(str(exc))[:300]
            click.echo(f"meshgen: internal error: {type(exc).__name__}: {detail}\n"
                       "meshgen: this is a bug in meshgen, not in your input; run again with MESHGEN_DEBUG=1 "
                       "for the traceback and include it in a report", err=True)
            ctx.exit(EXIT_INTERNAL_ERROR)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            module_name, attr = self.lazy_subcommands[cmd_name][0].split(":")
            import importlib

            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


# One line per command living elsewhere: name -> ("module:attribute", its one-line help).
LAZY_COMMANDS = {
    "pr": ("meshgen.gitops.commands:pr", "Pull requests of the local forge: list, show, merge, close."),
    "sync": ("meshgen.synccli:sync",
             "Render ROOT and open or update the pull requests of the environment repository, in-process."),
    "worker": ("worker.cli:worker",
               "Run the Celery sync worker (Redis from MESHGEN_REDIS_URL); extra arguments go to Celery."),
    "bootstrap": ("meshgen.bootstrap:bootstrap", "Objects that connect meshgen to the platform around it (Argo CD)."),
    "doctor": ("meshgen.doctor:doctor",
               "Check every configured remote with its credentials: one ✔/✘ line each, exit 1 if any fails."),
    "plan": ("meshgen.plan:plan",
             "Show what a blueprints change does to each environment: changes, findings, warnings, errors."),
    "serve": ("meshgen.api.serve:serve",
              "Serve the rollout API (/api/v1), the status page (/) and /healthz, /readyz, /metrics."),
}


@click.group(cls=LazyGroup, lazy_subcommands=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshgen")
def main() -> None:
    """Service-mesh intents in, Istio or Linkerd manifests (and reviewed pull requests) out."""


@main.command()
@ROOT_ARG
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write <env path>/<namespace>/<service>/<kind>-<name>.yaml into.")
@ENV_OPT
@MESH_OPT
@click.option("--no-cache", is_flag=True, help="Render everything, ignoring ROOT/.meshgen/cache.")
@click.option("--timings", is_flag=True, help="Print where the time went to stderr.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Processes to render with (default: the CPUs this process may use, at most 8; "
                   "1 renders in this process). Fewer than 500 changed blueprints always render in-process.")
def render(root: Path, out: Path, env: str | None, mesh: str | None, no_cache: bool, timings: bool,
           jobs: int | None) -> None:
    """Render the blueprints under ROOT into manifest files under --out."""
    from meshgen.output import render_to_dir

    started = time.perf_counter()
    try:
        stats = render_to_dir(root, out, env=env, mesh=mesh, use_cache=not no_cache, jobs=jobs)
    except BlueprintError as exc:
        _fail(exc)
        return
    except OSError as exc:  # the output folder, not a blueprint: no traceback, say what to fix
        click.echo(f"meshgen: cannot write {exc.filename or out}: {exc.strerror or exc}", err=True)
        click.echo("meshgen: fix that and render again; every file is written whole, and the next render "
                   "rewrites whatever this one wrote", err=True)
        sys.exit(1)
    _report(stats.warnings, all_warnings=False)
    click.echo(
        f"meshgen: {stats.units} folders, {stats.files} files in {out} "
        f"({stats.written} written, {stats.removed} removed, {stats.rendered} blueprints rendered, "
        f"{stats.reused} unchanged)",
        err=True,
    )
    if timings:
        parts = " ".join(f"{k}={v:.4f}s" for k, v in stats.timings.items())
        click.echo(f"timings: total={time.perf_counter() - started:.4f}s {parts}", err=True)


@main.command()
@ROOT_ARG
@ENV_OPT
@MESH_OPT
@click.option("--strict", is_flag=True, help="Treat warnings (analysis findings) as errors.")
@click.option("--all-warnings", is_flag=True, help=f"List every warning (default: the first {WARNINGS_SHOWN}, then a summary).")
def validate(root: Path, env: str | None, mesh: str | None, strict: bool, all_warnings: bool) -> None:
    """Check every blueprint (schema, cross-blueprint and static analysis) without writing."""
    from meshgen.pipeline import render_repository

    try:
        result = render_repository(root, env=env, mesh=mesh)
    except BlueprintError as exc:
        _fail(exc)
        return
    _report(result.warnings, all_warnings=all_warnings)
    if strict and result.warnings:
        click.echo(f"meshgen: {len(result.warnings)} warning(s), failing because of --strict", err=True)
        sys.exit(1)
    click.echo(f"meshgen: {len(result.units)} folders valid, {len(result.warnings)} warning(s)", err=True)


@main.command()
@ROOT_ARG
@click.option("--against", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder of previously rendered manifests (e.g. a checkout of the environment repo).")
@ENV_OPT
@MESH_OPT
@click.option("--exit-code", is_flag=True, help="Exit 2 when there are differences.")
def diff(root: Path, against: Path, env: str | None, mesh: str | None, exit_code: bool) -> None:
    """Show, per environment and resource, what would change in --against if ROOT were rendered now."""
    from meshgen.diff import env_diff, read_tree
    from meshgen.pipeline import render_repository

    try:
        result = render_repository(root, env=env, mesh=mesh)
    except BlueprintError as exc:
        _fail(exc)
        return
    new = result.files()
    folders = {u.folder for u in result.units}
    env_paths = {e: result.config.env_path(e) for e in result.config.environments if env in (None, e)}
    old = read_tree(against, env_paths=set(env_paths.values()))
    lines = env_diff(old, new, env_paths)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"no changes ({len(folders)} folders)", err=True)
    if exit_code and lines:
        sys.exit(2)


@main.command()
@click.option("--kind", type=click.Choice(["Service", "Namespace", "Mesh", "Ingress", "config"]), default=None,
              help="One kind only (default: any blueprint kind).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write it to this file, creating its folder (e.g. schemas/blueprint.schema.json, committed "
                   "beside blueprints/); default: standard output.")
def schema(kind: str | None, out: Path | None) -> None:
    """Print the JSON Schema of blueprints (for editor completion via yaml-language-server)."""
    from meshgen.blueprint.schema import blueprint_schema

    text = json.dumps(blueprint_schema(kind), indent=2, sort_keys=False) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror}; choose a writable path") from None
    click.echo(f"meshgen: schema written to {out}", err=True)


@main.command()
@ROOT_ARG
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json"]), default="table",
              help="table: wrapped to the terminal; markdown: the README's table; json: for tools.")
@click.option("--width", type=int, default=None, help="Wrap the table at this width (default: the terminal's).")
def capabilities(root: Path, fmt: str, width: int | None) -> None:
    """Print what each mesh flavour can express of every blueprint feature."""
    from meshgen.capabilities import capability_matrix, format_markdown, format_text

    matrix = capability_matrix(root if (root / "meshgen.yaml").exists() else None)
    if fmt == "json":
        click.echo(json.dumps(matrix, indent=2))
    elif fmt == "markdown":
        click.echo(format_markdown(matrix))
    else:
        click.echo(format_text(matrix, width))


@main.command()
@ROOT_ARG
@click.option("--host", default=None, help="Listen address (default: MESHGEN_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: MESHGEN_PORT, 8080).")
@click.option("--open", "open_browser", is_flag=True, help="Open the status page in a browser.")
def up(root: Path, host: str | None, port: int | None, open_browser: bool) -> None:
    """The whole flow on embedded defaults: local environment repository and pull requests,
    in-process jobs, the API and status page on :8080, and a new sync on every blueprint change."""
    import logging

    from meshgen.settings import Settings
    from meshgen.up import run

    overrides: dict[str, object] = {"root": root, "api_public_reads": True}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)-7s %(message)s",
                        datefmt="%H:%M:%S")
    if not (root / "meshgen.yaml").exists():
        raise click.ClickException(f"no meshgen.yaml in {root}; run meshgen up in a blueprints repository "
                                   "(e.g. `meshgen up blueprints` in meshgen's own checkout)")
    run(root, settings, open_browser=open_browser)


if __name__ == "__main__":  # pragma: no cover
    main()
