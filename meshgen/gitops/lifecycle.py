"""The pull-request lifecycle: from the rendered units of one environment to open, updated,
closed or merged pull requests.

Invariants this module keeps, also under retries and concurrent runs:

* One branch per group (service, team or environment); its single commit is "base branch +
  the group's units", rebuilt from scratch on every run. A moved base is therefore not a
  rebase but a rebuild, and there is never anything to resolve.
* One open pull request per branch. A new change updates it in place (force-push with
  lease, refreshed description); a run that finds the branch already holding exactly this
  tree on this base pushes nothing and reports `unchanged`.
* Nothing to change → no pull request; an open one whose change has gone is closed with a
  comment saying why. Open meshgen pull requests no group claims any more are closed as
  superseded.
* No churn: an open pull request's branch is rewritten only when the group's rendering changes
  or its head no longer merges cleanly into the base (`_head_still_fits`).
* Reviewer decisions stick: a pull request a person closed without merging rejects that
  rendering (the content hash in its description marker); the group is reported `rejected`
  and nothing is pushed or opened for it until its rendering changes (or `retry_rejected`).
  Pull requests meshgen closes itself carry `closed-by=meshgen` in the marker and reject nothing.

`units` must be the complete rendering of the environment: an owned folder without a unit
is a deleted blueprint and is removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import pygit2

from meshgen.forges.base import Forge, ForgeError, PullRequest
from meshgen.gitops.envrepo import (
    EnvRepo,
    EnvRepoError,
    LeaseError,
    folder_differs,
    lookup_tree,
    managed_files,
    stale_folders,
    write_tree,
)
from meshgen.units import MESH_SERVICE, Unit, content_hash

Grouping = Literal["service", "team", "env"]
Action = Literal["opened", "updated", "unchanged", "closed", "merged", "rejected"]
#: (old files, new files), each {repo-relative path: YAML bytes} -> reviewer lines.
Describe = Callable[[Mapping[str, bytes], Mapping[str, bytes]], list[str]]
Progress = Callable[[str, int, int], None]  # (environment, groups done, groups in all)

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "pr"
_NO_TEAM = "unowned"


@dataclass(frozen=True)
class SyncResult:
    branch: str
    action: Action
    number: int | None
    url: str | None
    head_sha: str | None = None  # the pull request's head as the forge reported it
    merge_sha: str | None = None  # set when `action` is merged (auto-merge)


@dataclass(frozen=True)
class SyncReport:
    env: str
    base: str
    results: tuple[SyncResult, ...] = field(default=())

    def actions(self) -> dict[str, Action]:
        """branch -> action, handy for tests and summaries."""
        return {r.branch: r.action for r in self.results}


# ---- grouping -----------------------------------------------------------------------


def _team_slug(team: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", team.lower()).strip("-.")
    return slug or _NO_TEAM


def branch_for(unit: Unit, grouping: Grouping) -> str:
    """The head branch that carries `unit` under `grouping`."""
    if grouping == "service":
        return f"meshgen/{unit.env}/{unit.display_name}"
    if grouping == "team":
        # Deleted blueprints have no team any more; their removals travel together.
        return (
            f"meshgen/{unit.env}/team-{_team_slug(unit.team)}"
            if unit.team
            else f"meshgen/{unit.env}/{_NO_TEAM}"
        )
    if grouping == "env":
        return f"meshgen/{unit.env}/all"
    raise ValueError(f"grouping must be 'service', 'team' or 'env', not {grouping!r}")


def _grouping_of(branch: str) -> Grouping:
    last = branch.rsplit("/", 1)[-1]
    if branch.count("/") == 2:
        if last == "all":
            return "env"
        if last.startswith("team-") or last == _NO_TEAM:
            return "team"
    return "service"


# ---- templates ----------------------------------------------------------------------


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _md_code(value: object) -> str:
    """An inline code span that no content can break out of (fence longer than any backtick run)."""
    text = _one_line(value)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]()#|~!<>@])")


def _md_text(value: object) -> str:
    """Plain text on one line with markdown/HTML punctuation escaped (no links, no HTML, no mentions)."""
    return _MD_SPECIAL.sub(r"\\\1", _one_line(value))


def _md_url(value: object) -> str:
    """A link target inside `<...>`: only http(s) URLs, and no character that could end the target."""
    text = _one_line(value)
    if not re.match(r"https?://", text):
        return "#"
    return re.sub(r"[<>\s`]", lambda m: f"%{ord(m.group()):02X}", text)


def _md_fence(lines: Sequence[object], info: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside it."""
    body = "\n".join(str(line).replace("\r", "") for line in lines)
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


def _templates(template_dir: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        if not Path(template_dir).is_dir():
            raise EnvRepoError(
                f"template directory {template_dir} does not exist; fix the path or drop the override"
            )
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.FileSystemLoader(str(DEFAULT_TEMPLATES)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=False,  # markdown, not HTML: safety comes from the filters below
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(code=_md_code, text=_md_text, fence=_md_fence, urlsafe=_md_url)
    return env


def _render(templates: jinja2.Environment, name: str, **context: Any) -> str:
    try:
        return templates.get_template(name).render(**context).strip() + "\n"
    except jinja2.TemplateError as exc:
        raise EnvRepoError(
            f"PR template {name} failed: {exc}; fix the override in the template directory"
        ) from exc


# ---- the sync -----------------------------------------------------------------------


@dataclass
class _Ctx:
    repo: EnvRepo
    forge: Forge
    env: str
    env_path: str
    base: str
    grouping: Grouping
    describe: Describe | None
    blueprint_commit: str | None
    blueprint_author: str | None
    blueprint_subject: str | None
    blueprint_url: str | None  # web address of the blueprints repository, for commit links
    validation: Mapping[str, Sequence[str]]
    auto_merge: bool
    templates: jinja2.Environment
    max_attempts: int
    retry_rejected: bool = False
    closed_prs: list[PullRequest] | None = None  # this env's closed PRs, listed on first need
    canary: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # branch -> canary note
    refresh: Collection[str] = ()  # branches rebuilt on the current base even when their head still fits


def sync_env(
    repo: EnvRepo,
    forge: Forge,
    units: Sequence[Unit],
    *,
    env: str,
    env_path: str,
    base: str = "main",
    grouping: Grouping = "service",
    describe: Describe | None = None,
    blueprint_commit: str | None = None,
    blueprint_author: str | None = None,
    blueprint_subject: str | None = None,
    blueprint_url: str | None = None,
    validation: Mapping[str, Sequence[str]] | None = None,
    auto_merge: bool = False,
    template_dir: Path | None = None,
    max_attempts: int = 5,
    progress: Progress | None = None,
    retry_rejected: bool = False,
    blocked: Collection[tuple[str, str]] = (),
    failed_files: Collection[str] = (),
    canary: Mapping[str, Mapping[str, Any]] | None = None,
    refresh: Collection[str] = (),
) -> SyncReport:
    """Bring the pull requests of environment `env` in line with `units` (its complete rendering).

    `canary` maps a branch to the note of the canary step or rollback it carries (built by
    meshgen.canary.controller): the `canary` of the title and description templates, a
    `Meshgen-Canary-Note` trailer on the branch's commit (so a later sync reads the same note back and
    edits no text) and a `meshgen-canary` marker in the description (what rebuilds a canary's history
    from the forge, squash merges included).

    `describe` turns old/new files into reviewer lines (meshgen.diff.semantic_diff);
    without it the description lists changed files. `validation` maps a unit folder to
    validation result lines shown in the description.

    Blast radius: `blocked` (namespace, service) units and the folders rendered from `failed_files`
    (blueprints that did not render this time) are frozen: their folders are neither removed nor
    changed, and an open pull request keeps carrying what it carried (`_frozen_unit`).

    `refresh` names branches whose open pull request is rebuilt on the current base even though its head
    still fits (no-churn would keep it): a base branch that merges only up-to-date heads refuses it.
    """
    ctx = _Ctx(
        repo=repo,
        forge=forge,
        env=env,
        env_path="/".join(p for p in env_path.split("/") if p not in ("", ".")),
        base=base,
        grouping=grouping,
        describe=describe,
        blueprint_commit=blueprint_commit,
        blueprint_author=blueprint_author,
        blueprint_subject=blueprint_subject,
        blueprint_url=blueprint_url.rstrip("/").removesuffix(".git") if blueprint_url else None,
        validation=validation or {},
        auto_merge=auto_merge,
        templates=_templates(template_dir),
        max_attempts=max_attempts,
        retry_rejected=retry_rejected,
        canary=dict(canary or {}),
        refresh=frozenset(refresh),
    )
    for unit in units:
        _check_unit(ctx, unit)

    repo.fetch()
    base_tree = _base_commit(ctx).tree
    frozen = sorted({_folder_of(ctx, ns, svc) for ns, svc in blocked} - {u.folder for u in units})
    stale = stale_folders(repo.repo, base_tree, ctx.env_path, [*(u.folder for u in units), *frozen])
    failed = set(failed_files)
    if failed:
        # A blueprint that failed to load names no service: its folders are found by their annotation.
        mine = [f for f in stale if _blueprint_of(repo.repo, base_tree, f) in failed]
        stale = [f for f in stale if f not in mine]
        frozen = sorted({*frozen, *mine})
    removals = [_removal(ctx, folder) for folder in stale]
    # One listing instead of a find_open per group: with per-service grouping a fleet has
    # thousands of groups, and on a remote forge each lookup is an API call.
    prefix = f"meshgen/{env}/"
    open_prs = {
        pr.branch: pr for pr in forge.list("open") if pr.branch.startswith(prefix) and pr.base == base
    }
    if failed_files:
        # ... and so are the folders their open pull requests change (not in the base yet).
        claimed = {branch_for(u, grouping) for u in units}
        for branch in sorted(open_prs.keys() - claimed):
            tip = repo.tip(branch)
            if tip is None:
                continue
            head_tree = repo.repo[tip].peel(pygit2.Commit).tree
            for folder in _pr_folders(ctx, branch):
                if folder not in frozen and _blueprint_of(repo.repo, head_tree, folder) in failed:
                    frozen.append(folder)
                    removals = [r for r in removals if r.folder != folder]
    held = [_frozen_unit(ctx, folder, base_tree, open_prs) for folder in sorted(frozen)]
    groups: dict[str, list[Unit]] = {}
    for unit in [*units, *held, *removals]:
        groups.setdefault(branch_for(unit, grouping), []).append(unit)

    results: list[SyncResult] = []
    for done, branch in enumerate(sorted(groups), start=1):
        result = _sync_group(ctx, branch, groups[branch], open_prs.get(branch))
        if progress is not None:
            progress(env, done, len(groups))
        if result is not None:
            results.append(result)
            if result.action == "merged":
                repo.fetch()  # the base moved: build the next groups on top of it

    leftovers = [pr for b, pr in sorted(open_prs.items()) if b not in groups]
    results.extend(_close_superseded(ctx, leftovers, groups, results))
    return SyncReport(env=env, base=base, results=tuple(results))


def _check_unit(ctx: _Ctx, unit: Unit) -> None:
    prefix = f"{ctx.env_path}/" if ctx.env_path else ""
    if unit.env != ctx.env:
        raise EnvRepoError(f"unit {unit.folder!r} belongs to environment {unit.env!r}, not {ctx.env!r}")
    if unit.service == MESH_SERVICE:
        expected = f"{prefix}{MESH_SERVICE}"
        ok = unit.namespace == ""
    else:
        expected = f"{prefix}{unit.namespace}/{unit.service}"
        ok = bool(unit.namespace) and "/" not in unit.namespace and "/" not in unit.service
    if not ok or unit.folder.strip("/") != expected:
        raise EnvRepoError(
            f"unit {unit.display_name} of {ctx.env!r} renders into {unit.folder!r}; meshgen owns exactly "
            f"{expected!r} for it (<env path>/<namespace>/<service>, <env path>/<namespace>/_namespace "
            "or <env path>/_mesh)"
        )
    if not pygit2.reference_is_valid_name(f"refs/heads/{branch_for(unit, ctx.grouping)}"):
        raise EnvRepoError(
            f"unit {unit.display_name}: {branch_for(unit, ctx.grouping)!r} is not a valid branch name"
        )


def _removal(ctx: _Ctx, folder: str) -> Unit:
    """A deleted blueprint, as a unit with no files (writing it drops the owned files)."""
    rel = folder[len(ctx.env_path) + 1 :] if ctx.env_path else folder
    namespace, _, service = rel.rpartition("/")
    return Unit(env=ctx.env, namespace=namespace, service=service, team=None, folder=folder, files={})


def _folder_of(ctx: _Ctx, namespace: str, service: str) -> str:
    prefix = f"{ctx.env_path}/" if ctx.env_path else ""
    return f"{prefix}{MESH_SERVICE}" if service == MESH_SERVICE else f"{prefix}{namespace}/{service}"


_SOURCE_RE = re.compile(rb"""meshgen\.dev/blueprint["']?:[ \t]*["']?([^"'\s]+)""")
_TEAM_RE = re.compile(rb"""meshgen\.dev/team["']?:[ \t]*["']?([^"'\s]+)""")


def _annotation(
    repo: pygit2.Repository, tree: pygit2.Tree | None, folder: str, pattern: re.Pattern[bytes]
) -> str | None:
    for data in managed_files(repo, tree, folder).values():
        found = pattern.search(data)
        if found:
            return found.group(1).decode("utf-8", "replace")
    return None


def _blueprint_of(repo: pygit2.Repository, tree: pygit2.Tree | None, folder: str) -> str | None:
    """The blueprint file an owned folder was rendered from (its meshgen.dev/blueprint annotation)."""
    return _annotation(repo, tree, folder, _SOURCE_RE)


def _frozen_unit(ctx: _Ctx, folder: str, base_tree: pygit2.Tree, open_prs: Mapping[str, PullRequest]) -> Unit:
    """A unit whose blueprint did not render this time, held as it is.

    As its open pull request carries it, else as the base has it."""
    rel = folder[len(ctx.env_path) + 1 :] if ctx.env_path else folder
    namespace, _, service = rel.rpartition("/")
    repo = ctx.repo.repo
    team = _annotation(repo, base_tree, folder, _TEAM_RE)
    tree: pygit2.Tree | None = base_tree
    stub = Unit(env=ctx.env, namespace=namespace, service=service, team=team, folder=folder, files={})
    branch = branch_for(stub, ctx.grouping)
    tip = ctx.repo.tip(branch) if branch in open_prs else None
    if tip is not None:
        tree = repo[tip].peel(pygit2.Commit).tree
        team = team or _annotation(repo, tree, folder, _TEAM_RE)
    files = managed_files(repo, tree, folder)
    return Unit(env=ctx.env, namespace=namespace, service=service, team=team, folder=folder, files=files,
                blueprint_path=_blueprint_of(repo, tree, folder) or "")


def _base_commit(ctx: _Ctx) -> pygit2.Commit:
    commit = ctx.repo.commit_at(ctx.base)
    if commit is None:
        raise EnvRepoError(
            f"base branch {ctx.base!r} does not exist in {ctx.repo.remote}; push an initial commit to it "
            "or configure the right base branch"
        )
    return commit


def _sync_group(ctx: _Ctx, branch: str, units: list[Unit], listed: PullRequest | None) -> SyncResult | None:
    for attempt in range(ctx.max_attempts):
        base_commit = _base_commit(ctx)
        base_tree = base_commit.tree
        changed = [u for u in units if folder_differs(ctx.repo.repo, base_tree, u)]
        # After a lost race the listing is stale: ask again.
        existing = listed if attempt == 0 else ctx.forge.find_open(branch)
        if not changed:
            if existing is None:
                return None
            comment = _render(
                ctx.templates, "closed.md.j2", **_close_context(ctx, branch, "no-diff", base_commit)
            )
            closed = _close_as_meshgen(ctx, existing, comment)
            return SyncResult(branch, "closed", closed.number, closed.url, closed.head_sha or None)

        if existing is None and not ctx.retry_rejected:
            rejected = _rejected_by(ctx, branch, content_hash(units))
            if rejected is not None:
                return SyncResult(branch, "rejected", rejected.number, rejected.url, rejected.head_sha or None)
        tip = ctx.repo.tip(branch)
        head = ctx.repo.repo[tip].peel(pygit2.Commit) if tip is not None else None
        pushed = False
        # No churn: an open PR whose head already carries exactly this rendering and still merges
        # cleanly into the base keeps its head commit (a push reruns CI and can dismiss reviews).
        # `refresh`: the caller needs the head on the base tip (an up-to-date-only base refused it).
        keep = (branch not in ctx.refresh and existing is not None and head is not None
                and _head_still_fits(ctx, branch, head, base_commit, units))
        # Idempotence: the branch is a pure function of (base commit, units), so "same tree on
        # the same parent" means a previous run (or a concurrent one) already did this work.
        tree = None if keep else write_tree(ctx.repo.repo, base_tree, changed)
        since: list[dict[str, Any]] = []
        if not keep and (head is None or head.tree_id != tree or head.parent_ids != [base_commit.id]):
            assert tree is not None
            if existing is not None and head is not None:
                since = _since(ctx, head, changed)
            message = _commit_message(ctx, branch, units, changed, since)
            new = ctx.repo.commit(tree, [base_commit.id], message)
            try:
                ctx.repo.push(branch, new, expected=tip)
            except LeaseError:
                ctx.repo.fetch()  # someone else pushed: look again from the new state
                continue
            pushed = True

        # The description follows the branch's head commit: a head kept as it is keeps its provenance
        # and its "changed since the last push" section, so an unrelated sync edits no text.
        described = ctx.repo.tip(branch)
        provenance = _head_facts(ctx.repo.repo[described].peel(pygit2.Commit)) if described is not None else {}
        title, body, labels = _describe_pr(ctx, branch, units, changed, base_tree, provenance)
        pr: PullRequest | None = None
        action: Action
        if existing is None:
            try:
                pr = ctx.forge.create(branch=branch, base=ctx.base, title=title, body=body, labels=labels)
                action = "opened"
            except ForgeError:
                # A concurrent run opened it between our find_open and create: use theirs. It
                # was opened after our push, so only its text can be out of date.
                existing = ctx.forge.find_open(branch)
                if existing is None:
                    raise
                pushed = False
        if pr is None:
            assert existing is not None
            same_text = (existing.title, existing.body, sorted(existing.labels)) == (
                title,
                body,
                sorted(labels),
            )
            if pushed or not same_text:
                pr = ctx.forge.update(existing.number, title=title, body=body, labels=labels)
                action = "updated"
            else:
                pr, action = existing, "unchanged"
        if ctx.auto_merge:
            pr = ctx.forge.merge(pr.number)
            action = "merged"
        return SyncResult(branch, action, pr.number, pr.url, pr.head_sha or None, pr.merge_sha)
    raise EnvRepoError(
        f"branch {branch!r} kept moving during {ctx.max_attempts} attempts (another process pushes to it); "
        "stop the other writer or retry later"
    )


_MARKER = re.compile(r"<!-- meshgen: branch=(?P<branch>\S+) content=(?P<content>sha256:[0-9a-f]{64})"
                     r"(?P<closed> closed-by=meshgen)? -->")


def marker(branch: str, content: str) -> str:
    """The hidden line every description ends with: which rendering the pull request carries."""
    return f"<!-- meshgen: branch={branch} content={content} -->"


def carried_content(body: str) -> tuple[str | None, bool]:
    """(content hash a description's marker names, whether meshgen itself closed the PR)."""
    found = None
    for found in _MARKER.finditer(body):
        pass  # the last marker wins: a template could quote an earlier one
    if found is None:
        return None, False
    return found["content"], bool(found["closed"])


def _close_as_meshgen(ctx: _Ctx, pr: PullRequest, comment: str) -> PullRequest:
    """Close with a comment, first marking the description so the close never counts as a rejection."""
    content, _ = carried_content(pr.body)
    if content is not None:
        body = pr.body.replace(marker(pr.branch, content), marker(pr.branch, content)[:-4] + " closed-by=meshgen -->")
        if body != pr.body:
            ctx.forge.update(pr.number, title=pr.title, body=body, labels=pr.labels)
    return ctx.forge.close(pr.number, comment=comment)


def _rejected_by(ctx: _Ctx, branch: str, content: str) -> PullRequest | None:
    """The newest pull request a person closed without merging that carried exactly `content`."""
    if ctx.closed_prs is None:
        ctx.closed_prs = [p for p in ctx.forge.list("closed") if p.branch.startswith(f"meshgen/{ctx.env}/")]
    for pr in ctx.closed_prs:  # newest first
        if pr.branch != branch or pr.state != "closed":
            continue
        carried, by_meshgen = carried_content(pr.body)
        if carried == content and not by_meshgen:
            return pr
    return None


def _head_still_fits(
    ctx: _Ctx, branch: str, head: pygit2.Commit, base_commit: pygit2.Commit, units: Sequence[Unit]
) -> bool:
    """Whether `head` (the open PR's branch) may stay as it is against `base_commit`.

    True when it is one meshgen commit on a past (or the current) base, changes no owned folder
    outside this group, holds exactly the group's rendering, and merging it into the base is clean
    and leaves every folder of the group as rendered. Anything else means a rebuild.
    """
    repo = ctx.repo.repo
    if len(head.parent_ids) != 1:
        return False
    parent = head.parent_ids[0]
    if parent != base_commit.id and not repo.descendant_of(base_commit.id, parent):
        return False
    if any(folder_differs(repo, head.tree, u) for u in units):
        return False
    if not set(_pr_folders(ctx, branch)) <= {u.folder for u in units}:
        return False
    if parent == base_commit.id:
        return True
    merged = repo.merge_commits(base_commit, head)
    if merged.conflicts is not None:
        return False
    merged_tree = repo[merged.write_tree(repo)].peel(pygit2.Tree)
    return not any(folder_differs(repo, merged_tree, u) for u in units)


_SINCE_HEADER = "Changed since the last push:"
_CANARY_TRAILER = "Meshgen-Canary-Note: "


def canary_note_json(note: Mapping[str, Any]) -> str:
    """A canary note as one deterministic line (a commit trailer and a description marker)."""
    return json.dumps(note, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def head_canary_note(head: pygit2.Commit) -> dict[str, Any] | None:
    """The canary note a meshgen head commit carries (None: not a canary step)."""
    for line in head.message.splitlines():
        if line.startswith(_CANARY_TRAILER):
            try:
                found = json.loads(line[len(_CANARY_TRAILER):])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def _since(ctx: _Ctx, head: pygit2.Commit, changed: Sequence[Unit]) -> list[dict[str, Any]]:
    """Per unit, the reviewer lines between the PR's previous head and what is pushed now."""
    out = []
    for unit in sorted(changed, key=lambda u: u.folder):
        old = {f"{unit.folder}/{n}": d for n, d in managed_files(ctx.repo.repo, head.tree, unit.folder).items()}
        new = {f"{unit.folder}/{n}": d for n, d in unit.files.items()}
        if old == new:
            continue
        lines = list(ctx.describe(old, new)) if ctx.describe is not None else _file_summary(old, new)
        out.append({"name": unit.display_name, "diff": [_one_line(line) for line in lines]})
    return out


def _head_facts(head: pygit2.Commit) -> dict[str, Any]:
    """What a meshgen head commit says about itself: blueprint trailers and the since-last-push lines."""
    facts: dict[str, Any] = {"since": []}
    entries: dict[str, list[str]] = {}
    in_since = False
    for line in head.message.splitlines():
        if line == _SINCE_HEADER:
            in_since = True
            continue
        if in_since and line.startswith("  ") and ": " in line:
            name, text = line[2:].split(": ", 1)
            entries.setdefault(name, []).append(text)
            continue
        in_since = False
        for key, field_ in (("Blueprint-Commit: ", "commit"), ("Blueprint-Author: ", "author"),
                            ("Blueprint-Subject: ", "subject")):
            if line.startswith(key):
                facts[field_] = line[len(key):]
    facts["since"] = [{"name": n, "diff": d} for n, d in entries.items()]
    return facts


def _verb(unit: Unit, base_tree: pygit2.Tree | None) -> str:
    return {"added": "add", "removed": "remove"}.get(_status(base_tree, unit), "update") if base_tree is not None \
        else ("remove" if not unit.files else "update")


def _commit_message(
    ctx: _Ctx, branch: str, units: list[Unit], changed: list[Unit], since: Sequence[Mapping[str, Any]] = ()
) -> str:
    """Deterministic: no timestamps, sorted lists; trailers let a retry recognise its own work."""
    base_tree = _base_commit(ctx).tree
    if len(changed) == 1:
        unit = changed[0]
        subject = f"meshgen({ctx.env}): {_verb(unit, base_tree)} {unit.display_name}"
    else:
        subject = f"meshgen({ctx.env}): update {len(changed)} folders"
    lines = [subject, ""]
    for unit in sorted(changed, key=lambda u: u.folder):
        lines.append(f"- {unit.folder}{' (removed)' if not unit.files else ''}")
    lines.append("")
    if since:
        lines.append(_SINCE_HEADER)
        lines.extend(f"  {entry['name']}: {line}" for entry in since for line in entry["diff"])
        lines.append("")
    if ctx.blueprint_commit:
        lines.append(f"Blueprint-Commit: {ctx.blueprint_commit}")
    if ctx.blueprint_author:
        lines.append(f"Blueprint-Author: {_one_line(ctx.blueprint_author)}")
    if ctx.blueprint_subject:
        lines.append(f"Blueprint-Subject: {_one_line(ctx.blueprint_subject)}")
    note = ctx.canary.get(branch)
    if note is not None:
        lines.append(f"{_CANARY_TRAILER}{canary_note_json(note)}")
    lines.append(f"Meshgen-Branch: {branch}")
    lines.append(f"Meshgen-Content: {content_hash(units)}")
    return "\n".join(lines) + "\n"


def _status(base_tree: pygit2.Tree, unit: Unit) -> str:
    if not unit.files:
        return "removed"
    return "changed" if lookup_tree(base_tree, unit.folder) is not None else "added"


def _describe_pr(
    ctx: _Ctx,
    branch: str,
    units: list[Unit],
    changed: list[Unit],
    base_tree: pygit2.Tree,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[str, str, tuple[str, ...]]:
    repo = ctx.repo.repo
    entries = []
    for unit in sorted(changed, key=lambda u: u.folder):
        old = {f"{unit.folder}/{n}": d for n, d in managed_files(repo, base_tree, unit.folder).items()}
        new = {f"{unit.folder}/{n}": d for n, d in unit.files.items()}
        diff = list(ctx.describe(old, new)) if ctx.describe is not None else _file_summary(old, new)
        entries.append(
            {
                "name": unit.display_name,
                "namespace": unit.namespace,
                "service": unit.service,
                "team": unit.team,
                "folder": unit.folder,
                "blueprint_path": unit.blueprint_path,
                "status": _status(base_tree, unit),
                "verb": _verb(unit, base_tree),
                "diff": diff,
                "warnings": list(unit.warnings),
                "validation": list(ctx.validation.get(unit.folder, ())),
            }
        )
    teams = sorted({u.team for u in units if u.team})
    labels = ("meshgen", f"env/{ctx.env}", *(f"team/{t}" for t in teams))
    context: dict[str, Any] = {
        "env": ctx.env,
        "base": ctx.base,
        "branch": branch,
        "grouping": ctx.grouping,
        "units": entries,
        "teams": teams,
        "labels": labels,
        "content_hash": content_hash(units),
    }
    facts = provenance or {}
    commit = facts.get("commit") if provenance else ctx.blueprint_commit
    context.update({
        "blueprint_commit": commit,
        "blueprint_author": facts.get("author") if provenance else ctx.blueprint_author,
        "blueprint_subject": facts.get("subject") if provenance else ctx.blueprint_subject,
        "blueprint_commit_url": f"{ctx.blueprint_url}/commit/{commit}" if ctx.blueprint_url and commit else None,
        "since_last_push": list(facts.get("since") or []),
        "canary": ctx.canary.get(branch),
    })
    title = _one_line(_render(ctx.templates, "title.txt.j2", **context))
    # The marker is added here, not by the template, so an override cannot lose it.
    body = _render(ctx.templates, "body.md.j2", **context)
    if context["canary"] is not None:  # what rebuilds a canary's history from the forge (squash merges too)
        note = canary_note_json(context["canary"]).replace(">", "\\u003e")  # nothing can end the comment
        body += f"<!-- meshgen-canary: {note} -->\n"
    body += marker(branch, content_hash(units)) + "\n"
    return title, body, labels


def _file_summary(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> list[str]:
    lines = [f"added {p}" for p in sorted(new.keys() - old.keys())]
    lines += [f"changed {p}" for p in sorted(p for p in new.keys() & old.keys() if new[p] != old[p])]
    lines += [f"removed {p}" for p in sorted(old.keys() - new.keys())]
    return lines


def _close_context(
    ctx: _Ctx,
    branch: str,
    reason: str,
    base_commit: pygit2.Commit | None = None,
    replaced_by: Sequence[SyncResult] = (),
) -> dict[str, Any]:
    return {
        "reason": reason,  # no-diff | superseded | not-rendered
        "env": ctx.env,
        "base": ctx.base,
        "base_sha": str(base_commit.id) if base_commit is not None else None,
        "branch": branch,
        "grouping": ctx.grouping,
        "replaced_by": [{"branch": r.branch, "number": r.number, "url": r.url} for r in replaced_by],
    }


def _close_superseded(
    ctx: _Ctx, leftovers: Sequence[PullRequest], groups: Mapping[str, list[Unit]], done: Sequence[SyncResult]
) -> list[SyncResult]:
    """Close the open meshgen PRs of this environment that no current group claims."""
    by_folder = {u.folder: b for b, us in groups.items() for u in us}
    live = {r.branch: r for r in done if r.action != "closed" and r.number is not None}
    out = []
    for pr in leftovers:
        folders = _pr_folders(ctx, pr.branch)
        replaced = sorted(
            {live[by_folder[f]] for f in folders if by_folder.get(f) in live}, key=lambda r: r.branch
        )
        reason = "superseded" if replaced or _grouping_of(pr.branch) != ctx.grouping else "not-rendered"
        comment = _render(
            ctx.templates, "closed.md.j2", **_close_context(ctx, pr.branch, reason, replaced_by=replaced)
        )
        closed = _close_as_meshgen(ctx, pr, comment)
        out.append(SyncResult(pr.branch, "closed", closed.number, closed.url, closed.head_sha or None))
    return out


def _pr_folders(ctx: _Ctx, branch: str) -> list[str]:
    """Owned folders a meshgen branch changes against its parent.

    Compares OIDs level by level and descends only where they differ.
    """
    tip = ctx.repo.tip(branch)
    if tip is None:
        return []
    head = ctx.repo.repo[tip].peel(pygit2.Commit)
    if not head.parents:
        return []
    old = lookup_tree(head.parents[0].tree, ctx.env_path)
    new = lookup_tree(head.tree, ctx.env_path)
    prefix = f"{ctx.env_path}/" if ctx.env_path else ""
    found: list[str] = []

    def entries(tree: pygit2.Tree | None) -> dict[str, pygit2.Object]:
        return {e.name or "": e for e in tree if e.type_str == "tree"} if tree is not None else {}

    def subtree(entry: pygit2.Object | None) -> pygit2.Tree | None:
        return ctx.repo.repo[entry.id].peel(pygit2.Tree) if entry is not None else None

    old_ns, new_ns = entries(old), entries(new)
    for ns in sorted(old_ns.keys() | new_ns.keys()):
        a, b = old_ns.get(ns), new_ns.get(ns)
        if a is not None and b is not None and a.id == b.id:
            continue
        if ns == MESH_SERVICE:
            found.append(f"{prefix}{ns}")
            continue
        a_sub, b_sub = entries(subtree(a)), entries(subtree(b))
        for svc in sorted(a_sub.keys() | b_sub.keys()):
            x, y = a_sub.get(svc), b_sub.get(svc)
            if x is None or y is None or x.id != y.id:
                found.append(f"{prefix}{ns}/{svc}")
    return found
