"""Plans on pull requests of the *blueprints* repository (issue 10, item 7, the service side).

The push webhook endpoints (meshgen.api.webhooks) hand verified pull-request events here, parsed
by the forge's registration (e.g. GitHub / Gitea `pull_request` opened, synchronize(d), reopened;
GitLab `Merge Request Hook` open, update, reopen: the actions opened, updated, reopened). The answer is 202 at once; then, in the background, the blueprints
repository (MESHGEN_BLUEPRINTS_URL) is fetched, the pull request's head is planned against its
merge base with the target branch (meshgen.plan), and on the forge (MESHGEN_BLUEPRINTS_FORGE_URL,
MESHGEN_BLUEPRINTS_FORGE_TOKEN):

* one comment on the pull request holds the plan, edited in place on every push (never a second);
* the commit status `meshgen/plan` on the head commit says success, or failure with the first error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from meshgen.api.webhooks import _COMMIT_ID
from meshgen.forges.base import PlanReporter
from meshgen.forges.registry import FORGES
from meshgen.settings import Settings

log = logging.getLogger(__name__)

MARKER = "<!-- meshgen:plan -->"
CONTEXT = "meshgen/plan"
#: the pull-request actions that ask for a plan
_ACTIONS = ("opened", "updated", "reopened")


@dataclass(frozen=True)
class PlanRequest:
    forge: str
    repository: str  # owner/name, GitLab group/project
    number: int
    head_sha: str
    base_ref: str
    base_sha: str | None


def parse(forge: str, payload: Any) -> PlanRequest | None:
    """The plan a pull-request event asks for, or None (another action). Raises KeyError/TypeError/ValueError."""
    hook = FORGES[forge].webhook
    if hook is None or hook.pr_action is None or hook.parse_pr is None:
        raise ValueError(f"{forge} has no pull-request webhooks")
    if hook.pr_action(payload) not in _ACTIONS:
        return None
    event = hook.parse_pr(payload)
    return _checked(PlanRequest(forge, event.repository, event.pull_request.number, event.pull_request.head_sha,
                                event.pull_request.base, event.base_sha))


def _checked(request: PlanRequest) -> PlanRequest:
    """A signed payload is still the forge's data. The head commit goes into the forge's status URL
    and the number into its comment URL, so a head that is not a commit id (`..`, a path) or a
    number that is not a pull request's is a malformed payload (400), never a request to another
    forge endpoint with meshgen's token."""
    if not request.repository:
        raise ValueError("the event names no repository")
    if not _COMMIT_ID.match(request.head_sha):
        raise ValueError("the head is not a commit id")
    if request.base_sha is not None and not (isinstance(request.base_sha, str) and _COMMIT_ID.match(request.base_sha)):
        raise ValueError("the base is not a commit id")
    if request.number < 1:
        raise ValueError("a pull request number is a positive whole number")
    return request


def accept(forge: str, body: bytes, settings: Settings) -> JSONResponse:
    """Answer a verified pull-request event of the blueprints repository; the plan runs after the answer."""
    if not settings.blueprints_url or not settings.blueprints_forge_url:  # planning is off: nothing to parse
        return JSONResponse({"status": "ignored", "reason": "set MESHGEN_BLUEPRINTS_URL and "
                             "MESHGEN_BLUEPRINTS_FORGE_URL (and MESHGEN_BLUEPRINTS_FORGE_TOKEN) to plan pull "
                             "requests"}, status_code=202)
    try:
        request = parse(forge, json.loads(body))
    # RecursionError: deep JSON; OverflowError: a number such as 1e400 given as the pull request's number
    except (ValueError, KeyError, AttributeError, TypeError, OverflowError, RecursionError):
        return JSONResponse({"type": "about:blank", "title": "Bad Request", "status": 400,
                             "detail": f"the {forge} pull-request payload is not the JSON object the forge documents"},
                            status_code=400, media_type="application/problem+json")
    if request is None:
        return JSONResponse({"status": "ignored", "reason": "only opened, updated or reopened pull requests "
                                                            "are planned"}, status_code=202)
    if settings.blueprints_repo and request.repository.lower() != settings.blueprints_repo.lower():
        return JSONResponse({"status": "ignored", "reason": f"repository {request.repository!r} is not the "
                             f"blueprints repository {settings.blueprints_repo!r}"}, status_code=202)
    return JSONResponse({"status": "planning", "number": request.number, "head": request.head_sha},
                        status_code=202, background=BackgroundTask(run_safely, settings, request))


def run_safely(settings: Settings, request: PlanRequest) -> None:
    """Plan; whatever is raised, the head commit ends with a terminal `meshgen/plan` status (error),
    so a required check never waits forever on a plan that died. The status names the exception
    type only (its message may hold URLs or forge answers); the log has the rest."""
    try:
        run(settings, request)
    except Exception as exc:  # a background task has nobody to answer: log it, the next push plans again
        log.exception("planning %s pull request #%s failed", request.forge, request.number)
        try:
            reporter(settings, request).set_status(
                request.head_sha, "error", f"meshgen could not plan this pull request ({type(exc).__name__}); "
                "see the meshgen API log, then push again or re-deliver the webhook", CONTEXT)
        except Exception:  # the forge itself is what failed: nothing more to tell it
            log.exception("could not set %s on %s pull request #%s", CONTEXT, request.forge, request.number)


def reporter(settings: Settings, request: PlanRequest) -> PlanReporter:
    build = FORGES[request.forge].reporter
    if build is None:
        raise ValueError(f"{request.forge} cannot comment on pull requests or set commit statuses")
    assert settings.blueprints_forge_url is not None  # accept() only plans with it set
    token = settings.blueprints_forge_token.get_secret_value() if settings.blueprints_forge_token else None
    return build(request.repository, settings.blueprints_forge_url, token)


def run(settings: Settings, request: PlanRequest) -> None:
    """Fetch, plan, comment, set the status. Raises on forge or repository failures."""
    from meshgen.gitops.blueprints import _BlueprintsMirror, blueprints_remote
    from meshgen.plan import PlanError, format_markdown, plan_commits

    assert settings.blueprints_url is not None
    root = Path(settings.root)
    mirror = _BlueprintsMirror(blueprints_remote(settings.blueprints_url, root), cache_dir=settings.state_path,
                               prefix="blueprints-")
    mirror.fetch()
    repo = mirror.repo
    head_ref = (hook := FORGES[request.forge].webhook) and hook.pr_head_ref
    if _missing(repo, request.head_sha) and head_ref:  # a fork's head: fetch the forge's pull-request ref
        ref = head_ref.format(n=request.number)
        repo.remotes["origin"].fetch([f"+{ref}:refs/meshgen/pulls/{request.number}"])
    base = mirror.commit_at(request.base_ref)
    if base is None and request.base_sha and not _missing(repo, request.base_sha):
        base = repo[request.base_sha].peel(pygit2.Commit)
    forge = reporter(settings, request)
    if base is None or _missing(repo, request.head_sha):
        forge.set_status(request.head_sha, "error", f"cannot fetch the head or base {request.base_ref}", CONTEXT)
        return
    merge_base = repo.merge_base(base.id, pygit2.Oid(hex=request.head_sha)) or base.id
    config = root / "meshgen.yaml"
    try:
        plan = plan_commits(repo, str(merge_base), request.head_sha, settings.state_path / "cache" / "plan",
                            config_override=config.read_bytes() if config.is_file() else None)
    except PlanError as exc:
        forge.set_status(request.head_sha, "error", str(exc), CONTEXT)
        return
    except Exception as exc:  # meshgen.yaml itself does not load
        from meshgen.diagnostics import BlueprintError

        if not isinstance(exc, BlueprintError):
            raise
        first = str(exc.diagnostics[0]) if exc.diagnostics else str(exc)
        forge.upsert_comment(request.number, MARKER, f"{MARKER}\n**meshgen plan** failed:\n\n- {first}\n")
        forge.set_status(request.head_sha, "failure", first, CONTEXT)
        return
    forge.upsert_comment(request.number, MARKER, f"{MARKER}\n{format_markdown(plan)}")
    if plan.errors:
        forge.set_status(request.head_sha, "failure", str(plan.errors[0]), CONTEXT)
    else:
        changed = sum(1 for u in plan.units if u.changes)
        forge.set_status(request.head_sha, "success", f"{changed} unit(s) change, no errors", CONTEXT)


def _missing(repo: pygit2.Repository, sha: str) -> bool:
    try:
        repo[sha]
    except (KeyError, ValueError):
        return True
    return False
