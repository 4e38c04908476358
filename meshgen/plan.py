"""`meshgen plan`: what a blueprints change will do to each environment, before it merges.

The blueprints repository is rendered at two revisions (the base, and the head: a revision or
the working tree) and compared per environment and unit: the semantic changes a reviewer reads
in the pull request later, the analysis findings and the capability warnings, and the errors
(file:line) of the head.

Only the blueprint files that differ between the two sides are rendered in full. The fleet
checks (one service claimed twice, a route to a version that does not exist, ...) need the facts
of every file; those of unchanged files come from a small cache under ROOT/.meshgen/cache/plan/,
keyed by content hash, so a one-file change in a large repository costs two renders of one file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2

from meshgen import __version__
from meshgen.blueprint.analysis import Facts, check_fleet
from meshgen.blueprint.config import Config
from meshgen.blueprint.loading import BLUEPRINTS_DIR, CONFIG_FILE, SUFFIXES, load_config, scan
from meshgen.diagnostics import BlueprintError, Diagnostic, from_rows, to_rows
from meshgen.diff import semantic_diff
from meshgen.pipeline import Blob, FileOutcome, check_selection, render_blobs
from meshgen.units import MESH_SERVICE, NAMESPACE_SERVICE, Unit

_CACHE = Path(".meshgen") / "cache" / "plan"
_FORMAT = 2  # 2: Facts carry ports, mesh and edge route ports
MAX_BLUEPRINT_BYTES = 256 * 1024  # the loader refuses bigger files; no need to read more from git
_OVERSIZED = b"#" * (MAX_BLUEPRINT_BYTES + 1)  # what the plan loads for a blob over the limit
_FILE_MODES = (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE)


class PlanError(RuntimeError):
    """The revisions or the repository cannot be planned (not a git repository, unknown revision)."""


@dataclass
class UnitPlan:
    env: str
    namespace: str
    service: str
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"env": self.env, "namespace": self.namespace, "service": self.service, "changes": self.changes,
                "warnings": self.warnings, "errors": self.errors}


@dataclass
class Plan:
    base: str  # resolved commit sha
    head: str  # commit sha, or "working tree"
    units: list[UnitPlan]
    errors: list[Diagnostic]  # every error of the head, file:line

    @property
    def ok(self) -> bool:
        return not self.errors


# ---- the two sides --------------------------------------------------------------------------


def _repo_and_prefix(root: Path) -> tuple[pygit2.Repository, str]:
    found = pygit2.discover_repository(str(root))
    if not found:
        raise PlanError(f"{root} is not inside a git repository; meshgen plan compares git revisions")
    repo = pygit2.Repository(found)
    top = Path(repo.workdir or repo.path).resolve()
    try:
        rel = root.resolve().relative_to(top).as_posix()
    except ValueError as exc:
        raise PlanError(f"{root} is not inside the work tree of {top}") from exc
    return repo, "" if rel == "." else rel + "/"


def _commit(repo: pygit2.Repository, rev: str) -> pygit2.Commit:
    try:
        return repo.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise PlanError(f"revision {rev!r} is not in {repo.workdir or repo.path}; fetch it, or name a branch, "
                        "tag or commit sha") from exc


def _files_at(repo: pygit2.Repository, commit: pygit2.Commit, prefix: str) -> dict[str, bytes]:
    """meshgen.yaml and every blueprint file (same rules as the loader's scan) at `commit`."""
    out: dict[str, bytes] = {}
    tree = commit.tree
    try:
        top = tree[prefix.rstrip("/")] if prefix else tree
    except KeyError:
        return out
    if not isinstance(top, pygit2.Tree):
        return out
    config_blob = top[CONFIG_FILE] if CONFIG_FILE in top else None  # noqa: SIM401 - a Tree has no .get
    if isinstance(config_blob, pygit2.Blob):
        out[CONFIG_FILE] = config_blob.data

    def walk(node: pygit2.Tree, rel: str) -> None:
        for entry in node:
            name = entry.name or ""
            if name.startswith("."):
                continue
            if entry.filemode == pygit2.GIT_FILEMODE_TREE:
                walk(repo[entry.id].peel(pygit2.Tree), f"{rel}{name}/")
            elif entry.filemode in _FILE_MODES and name.endswith(SUFFIXES):
                # The size first: an oversized blob is never read (a pull request's head is
                # untrusted); the loader reports it as too big, as it does on disk.
                _, size = repo.odb.read_header(entry.id)
                out[f"{rel}{name}"] = repo[entry.id].peel(pygit2.Blob).data if size <= MAX_BLUEPRINT_BYTES else _OVERSIZED
            # Symlinks (could point anywhere) and submodules (no objects here) are skipped, as the
            # sync's checkout of the blueprints repository skips them (meshgen.gitops.blueprints).

    blueprints = top[BLUEPRINTS_DIR] if BLUEPRINTS_DIR in top else None  # noqa: SIM401 - a Tree has no .get
    if isinstance(blueprints, pygit2.Tree):
        walk(blueprints, f"{BLUEPRINTS_DIR}/")
    return out


def _working_files(root: Path) -> dict[str, bytes]:
    out = {rel: (root / rel).read_bytes() for rel in scan(root)}
    if (root / CONFIG_FILE).is_file():
        out[CONFIG_FILE] = (root / CONFIG_FILE).read_bytes()
    return out


def _config(data: bytes | None) -> tuple[Config, str]:
    """A meshgen.yaml from its bytes, validated like one on disk."""
    with tempfile.TemporaryDirectory(prefix="meshgen-plan-") as tmp:
        if data is not None:
            (Path(tmp) / CONFIG_FILE).write_bytes(data)
        return load_config(Path(tmp))


# ---- per-file results, cached by content ----------------------------------------------------

_Row = tuple[str, tuple[tuple[Any, ...], ...], tuple[tuple[Any, ...], ...]]  # digest, facts, diagnostics


class _FactsCache:
    """Facts and diagnostics of blueprint files by path and content hash, for one config and selection."""

    def __init__(self, folder: Path, stamp: str) -> None:
        self.path = folder / (hashlib.sha256(stamp.encode()).hexdigest()[:24] + ".pickle")
        self.stamp = stamp
        self.rows: dict[str, _Row] = {}
        self.dirty = False
        try:
            # Our own cache file under ROOT/.meshgen (never a file from a repository being planned).
            stamp_read, rows = pickle.loads(self.path.read_bytes())
            if stamp_read == stamp and isinstance(rows, dict):
                self.rows = rows
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError):
            self.rows = {}

    def get(self, rel: str, digest: str) -> _Row | None:
        row = self.rows.get(rel)
        return row if row is not None and row[0] == digest else None

    def put(self, rel: str, row: _Row) -> None:
        self.rows[rel] = row
        self.dirty = True

    def save(self, keep: Iterable[str]) -> None:
        if not self.dirty:
            return
        wanted = set(keep)
        rows = {rel: row for rel, row in self.rows.items() if rel in wanted}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps((self.stamp, rows), protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only checkout plans just as well, only slower next time


@dataclass
class _Side:
    outcomes: dict[str, FileOutcome]  # fully rendered files (those that differ between the sides)
    facts: list[Facts]
    diagnostics: list[Diagnostic]


def _side(root: Path, files: Mapping[str, bytes], config: Config, full: set[str], cache: _FactsCache | None,
          env: str | None) -> _Side:
    """Render the files in `full`; of the others only facts and diagnostics are needed, from the
    cache when it has them (the head fills it before the base is read, so an unchanged file is
    loaded once per plan, and not at all once cached)."""
    rels = sorted(r for r in files if r != CONFIG_FILE)
    rows: dict[str, _Row] = {}
    todo: list[Blob] = []
    for rel in rels:
        row = cache.get(rel, hashlib.sha256(files[rel]).hexdigest()) if cache is not None and rel not in full else None
        if row is None:
            todo.append(Blob(rel, files[rel], rel in full))
        else:
            rows[rel] = row
    outcomes: dict[str, FileOutcome] = {}
    for outcome in render_blobs(root, todo, config, env=env):
        row = rows[outcome.path] = (outcome.digest, tuple(map(tuple, outcome.facts)),
                                    tuple(to_rows(outcome.diagnostics)))
        if cache is not None:
            cache.put(outcome.path, row)
        if outcome.path in full:
            outcomes[outcome.path] = outcome
    facts: list[Facts] = []
    diagnostics: list[Diagnostic] = []
    for rel in rels:
        facts.extend(Facts(*f) for f in rows[rel][1])
        diagnostics.extend(from_rows(rows[rel][2]))
    diagnostics.extend(check_fleet(facts))
    return _Side(outcomes, facts, diagnostics)


def _key(f: Facts) -> tuple[str, str, str]:
    if f.kind == "Namespace":
        return f.env, f.namespace, NAMESPACE_SERVICE
    if f.kind == "Mesh":
        return f.env, "", MESH_SERVICE
    return f.env, f.namespace, f.service


def _unit_files(unit: Unit) -> dict[str, bytes]:
    return {f"{unit.folder}/{name}": data for name, data in unit.files.items()}


# ---- the plan ---------------------------------------------------------------------------------


def make_plan(root: Path, base: str, head: str | None = None, *, env: str | None = None) -> Plan:
    """Plan ROOT from `base` to `head` (None: the working tree). Raises PlanError, BlueprintError (meshgen.yaml)."""
    root = Path(root)
    repo, prefix = _repo_and_prefix(root)
    base_commit = _commit(repo, base)
    base_files = _files_at(repo, base_commit, prefix)
    if head is None:
        head_files, head_name = _working_files(root), "working tree"
    else:
        head_commit = _commit(repo, head)
        head_files, head_name = _files_at(repo, head_commit, prefix), str(head_commit.id)
    return _plan_files(root, root / _CACHE, base_files, str(base_commit.id), head_files, head_name, env)


def plan_commits(repo: pygit2.Repository, base: str, head: str, cache_dir: Path, *, env: str | None = None,
                 config_override: bytes | None = None) -> Plan:
    """Plan between two commits of any repository (a bare blueprints mirror): the pull-request service side.

    `config_override`: a meshgen.yaml that shadows both commits' (the chart's ConfigMap)."""
    base_commit, head_commit = _commit(repo, base), _commit(repo, head)
    base_files, head_files = _files_at(repo, base_commit, ""), _files_at(repo, head_commit, "")
    if config_override is not None:
        base_files[CONFIG_FILE] = head_files[CONFIG_FILE] = config_override
    return _plan_files(cache_dir, cache_dir, base_files, str(base_commit.id), head_files, str(head_commit.id), env)


def _plan_files(root: Path, cache_dir: Path, base_files: dict[str, bytes], base_name: str,
                head_files: dict[str, bytes], head_name: str, env: str | None) -> Plan:
    head_config, head_digest = _config(head_files.get(CONFIG_FILE))
    check_selection(head_config, env, None)
    try:
        base_config, base_digest = _config(base_files.get(CONFIG_FILE))
    except BlueprintError:
        base_config, base_digest = head_config, ""  # a base without a valid meshgen.yaml renders as nothing
        base_files = {}
    same_config = base_digest == head_digest
    rels = (base_files.keys() | head_files.keys()) - {CONFIG_FILE}
    # Files whose bytes differ render in full on both sides; with another meshgen.yaml, every file does.
    full = {r for r in rels if base_files.get(r) != head_files.get(r)} if same_config else set(rels)
    head_cache = _FactsCache(cache_dir, f"{_FORMAT}|{__version__}|{head_digest}|{env}")
    base_cache = head_cache if same_config else None
    new = _side(root, head_files, head_config, full, head_cache, env)
    old = _side(root, base_files, base_config, full, base_cache, env)
    head_cache.save(r for r in head_files if r != CONFIG_FILE)

    errors = sorted(d for d in new.diagnostics if d.severity == "error")
    failed = {d.file for d in errors}
    plans: dict[tuple[str, str, str], UnitPlan] = {}

    def plan_for(key: tuple[str, str, str]) -> UnitPlan:
        return plans.setdefault(key, UnitPlan(*key))

    before: dict[tuple[str, str, str], Unit] = {
        (u.env, u.namespace, u.service): u for o in old.outcomes.values() for u in o.units}
    after: dict[tuple[str, str, str], Unit] = {
        (u.env, u.namespace, u.service): u for rel, o in new.outcomes.items() if rel not in failed for u in o.units}
    warnings_by_file: dict[str, list[str]] = {}
    for d in new.diagnostics:
        if d.severity == "warning":
            warnings_by_file.setdefault(d.file, []).append(str(d))
    blocked = {_key(f) for f in new.facts if f.file in failed}
    blocked |= {_key(f) for f in old.facts if f.file in failed}
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        changes = semantic_diff(_unit_files(a) if a else {}, _unit_files(b) if b else {})
        if changes and key not in blocked:  # a unit its failing blueprint blocks has no plan, only errors
            plan_for(key).changes = changes
        if b is not None and (changes or b.warnings):
            plan_for(key).warnings = sorted({*warnings_by_file.get(b.blueprint_path, ()), *b.warnings})
    # A file that fails to load names no unit on the head: its units are the ones it rendered at the base.
    keys_by_file: dict[str, set[tuple[str, str, str]]] = {}
    for f in new.facts or ():
        keys_by_file.setdefault(f.file, set()).add(_key(f))
    for f in old.facts:
        if f.file not in keys_by_file or not keys_by_file[f.file]:
            keys_by_file.setdefault(f"base:{f.file}", set()).add(_key(f))
    for file in sorted(failed):
        keys = keys_by_file.get(file) or keys_by_file.get(f"base:{file}") or {("", "", "")}
        for key in keys:
            plan_for(key).errors = sorted({*plan_for(key).errors, *(str(d) for d in errors if d.file == file)})
    # Environments in meshgen.yaml order (as `meshgen diff` and the status page list them).
    order = {name: i for i, name in enumerate(head_config.environments)}
    ordered = sorted(plans, key=lambda k: (order.get(k[0], len(order)), k))
    return Plan(base_name, head_name, [plans[k] for k in ordered], errors)


def format_markdown(plan: Plan) -> str:
    """The plan as a reviewer reads it (what the pull-request comment shows)."""
    head = plan.head if plan.head == "working tree" else f"`{plan.head[:12]}`"
    lines = [f"**meshgen plan**: `{plan.base[:12]}` → {head}", ""]
    if not plan.units and not plan.errors:
        lines.append("No environment changes.")
    envs: dict[str, list[UnitPlan]] = {}
    for unit in plan.units:
        if unit.env:  # errors of files that name no unit are listed at the end
            envs.setdefault(unit.env, []).append(unit)
    for env, units in envs.items():
        lines += [f"### {env}", ""]
        for u in units:
            name = f"{u.namespace}/{u.service}" if u.namespace else u.service
            lines.append(f"#### {name}")
            # A unit its failing blueprint blocks is not planned: say so rather than "no changes".
            block = [*u.changes] or ["(not planned: its blueprint has errors, below)" if u.errors else "(no changes)"]
            fence = "`" * max(3, 1 + max((len(r) for line in block for r in line.split("`") if not r), default=0))
            lines += [f"{fence}text", *block, fence]
            lines += [f"- warning: {w}" for w in u.warnings]
            lines += [f"- **error**: {e}" for e in u.errors]
            lines.append("")
    unplaced = [str(d) for d in plan.errors if not any(str(d) in u.errors for u in plan.units if u.env)]
    if unplaced:
        lines += ["### errors", "", *(f"- {e}" for e in unplaced), ""]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["Plan", "PlanError", "UnitPlan", "format_markdown", "make_plan", "plan_commits"]


# ---- the command ------------------------------------------------------------------------------

import click  # kept beside the command; the library part above needs no click


@click.command("plan")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path), default=".", required=False)
@click.option("--base", "base", required=True, metavar="REV", help="The revision the change starts from (e.g. main).")
@click.option("--head", "head", default=None, metavar="REV", help="The revision to plan (default: the working tree).")
@click.option("--env", "env", default=None, metavar="ENV", help="Only this environment.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
def plan(root: Path, base: str, head: str | None, env: str | None, fmt: str) -> None:
    """Show what a blueprints change does to each environment: changes, findings, warnings, errors."""
    import json
    import sys

    try:
        result = make_plan(root, base, head, env=env)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from exc
    except BlueprintError as exc:
        for d in exc.diagnostics:
            click.echo(str(d), err=True)
        sys.exit(1)
    if fmt == "json":
        click.echo(json.dumps([u.as_json() for u in result.units], indent=2, ensure_ascii=False))
    else:
        click.echo(format_markdown(result), nl=False)
    for d in result.errors:
        click.echo(str(d), err=True)
    if result.errors:
        click.echo(f"meshgen: {len(result.errors)} error(s) in {result.head}", err=True)
        sys.exit(1)
