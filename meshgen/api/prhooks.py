"""Pull-request webhooks from the *environment* repository's forge: a merge or close recorded at once.

Mounted beside the push webhooks, at /api/v1/webhooks/{github,gitlab,gitea}/env-repo, and
verified exactly like them (same secrets, same constant-time checks, same replay memory):

* GitHub `pull_request` (action closed; `merged` tells merge from close),
* GitLab `Merge Request Hook` (object_attributes.action merge or close),
* Gitea / Forgejo `pull_request` (action closed; `merged`).

Only pull requests of meshgen branches (`meshgen/...`) of the configured environment repository
(envRepo.forge in meshgen.yaml) count; anything else is acknowledged and ignored. The unit
records carrying that pull request are updated right away (merged with its merge commit, or
closed: rejected), so the rollout API answers awaiting-sync / rejected without waiting for a sync.
Polling during syncs stays the fallback for missed deliveries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meshgen.api.deps import get_records, get_settings
from meshgen.api.webhooks import _FORGES, _SIGNATURE_HEADER, _accepted, _forget, _remember, problem
from meshgen.gitops.forges.base import PRState, PullRequest
from meshgen.records import Records
from meshgen.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

#: forge -> the event header value of its pull-request events
PR_EVENTS = {"github": "pull_request", "gitlab": "Merge Request Hook", "gitea": "pull_request"}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _github_like(p: dict[str, Any]) -> tuple[str, PullRequest] | None:
    """GitHub and Gitea share the payload shape of a pull_request event."""
    if p.get("action") != "closed":
        return None
    pr = p["pull_request"]
    merged = pr.get("merged") is True
    state: PRState = "merged" if merged else "closed"
    return _str((p.get("repository") or {}).get("full_name")), PullRequest(
        number=int(pr["number"]), title=_str(pr.get("title")), body=_str(pr.get("body")), state=state,
        branch=_str(pr["head"]["ref"]), base=_str(pr["base"]["ref"]), head_sha=_str(pr["head"].get("sha")),
        merge_sha=_str(pr.get("merge_commit_sha")) or None if merged else None, url=_str(pr.get("html_url")))


def _gitlab(p: dict[str, Any]) -> tuple[str, PullRequest] | None:
    attrs = p["object_attributes"]
    action = attrs.get("action")
    if action not in ("merge", "close"):
        return None
    state: PRState = "merged" if action == "merge" else "closed"
    return _str((p.get("project") or {}).get("path_with_namespace")), PullRequest(
        number=int(attrs["iid"]), title=_str(attrs.get("title")), body=_str(attrs.get("description")), state=state,
        branch=_str(attrs["source_branch"]), base=_str(attrs["target_branch"]),
        head_sha=_str((attrs.get("last_commit") or {}).get("id")),
        merge_sha=_str(attrs.get("merge_commit_sha")) or None if state == "merged" else None,
        url=_str(attrs.get("url")))


_PARSE: dict[str, Callable[[dict[str, Any]], tuple[str, PullRequest] | None]] = {
    "github": _github_like, "gitlab": _gitlab, "gitea": _github_like}


def _env_repository(settings: Settings, forge: str) -> str | None:
    """owner/repo (GitLab: project path) of the environment repository, if meshgen.yaml names it on `forge`."""
    from meshgen.blueprint.loading import load_config

    config, _ = load_config(Path(settings.root))
    fs = config.env_repo.forge
    if fs.kind != forge:
        return None
    return str(fs.project) if forge == "gitlab" else f"{fs.owner}/{fs.repo}"


def _record(records: Records, pr: PullRequest) -> int:
    from meshgen.gitops.sync import record_pr_state

    return record_pr_state(records, pr)


async def _handle_env_pr(name: str, request: Request, settings: Settings, records: Records) -> JSONResponse:
    forge = _FORGES[name]
    secret = forge.secret(settings)
    if secret is None:
        return problem(401, "Unauthorized", f"{name} webhooks are not enabled: set {forge.secret_env} "
                       "to the secret configured in the forge's webhook settings")
    # As for pushes: without a signature there is nothing to check the body against, so it is never read.
    body = await request.body() if request.headers.get(_SIGNATURE_HEADER[name]) else b""
    if not body or not forge.verify(secret.get_secret_value(), body, request.headers):
        return problem(401, "Unauthorized", f"missing or wrong {name} webhook signature; check that the "
                       f"webhook's secret equals {forge.secret_env}")
    event = request.headers.get(forge.event_header, "")
    if name == "github" and event == "ping":
        return JSONResponse({"status": "pong"})
    if event != PR_EVENTS[name]:
        return _accepted("ignored", reason=f"event {event!r} is not a pull-request event")
    try:
        parsed = _PARSE[name](json.loads(body))
    # OverflowError: a number such as 1e400 (JSON allows it; int() of infinity does not);
    # RecursionError: JSON nested thousands deep. Both are malformed payloads, not a 500.
    except (ValueError, KeyError, AttributeError, TypeError, OverflowError, RecursionError):
        return problem(400, "Bad Request", f"the {name} pull-request payload is not the JSON object the forge "
                       "documents (pull_request.number, head.ref, base.ref, ...)")
    if parsed is None:
        return _accepted("ignored", reason="only merged or closed pull requests change a rollout")
    repository, pr = parsed
    expected = await run_in_threadpool(_env_repository, settings, name)
    if expected is None or repository.lower() != expected.lower():
        return _accepted("ignored", reason=f"repository {repository!r} is not the environment repository "
                         f"(envRepo.forge in meshgen.yaml: {expected or 'not on ' + name})")
    if not pr.branch.startswith("meshgen/"):
        return _accepted("ignored", reason=f"branch {pr.branch!r} is not a meshgen branch")
    delivery = next((request.headers[h] for h in forge.delivery_headers if request.headers.get(h)), None)
    if delivery is not None and not await run_in_threadpool(
            _remember, records, f"{name}-env", delivery, settings.webhook_dedupe_ttl):
        return _accepted("duplicate", delivery=delivery)
    try:
        updated = await run_in_threadpool(_record, records, pr)
    except Exception:
        if delivery is not None:
            await run_in_threadpool(_forget, records, f"{name}-env", delivery)
        log.exception("could not record %s pull request #%s", name, pr.number)
        return problem(503, "Service Unavailable", "could not record the pull request (is Redis reachable?); "
                       "the forge retries the delivery, and the next sync records it too")
    state = getattr(request.app.state, "meshgen", None)
    if updated and state is not None:
        # This replica answers with the new state now; others notice the version bump within check_interval.
        await run_in_threadpool(lambda: state.view.refresh(force=True))
    return _accepted("recorded", number=pr.number, state=pr.state, units=updated)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RecordsDep = Annotated[Records, Depends(get_records)]


@router.post("/github/env-repo", status_code=202, summary="GitHub pull_request webhook of the environment repository")
async def github_env(request: Request, settings: SettingsDep, records: RecordsDep) -> JSONResponse:
    return await _handle_env_pr("github", request, settings, records)


@router.post("/gitlab/env-repo", status_code=202, summary="GitLab Merge Request Hook of the environment repository")
async def gitlab_env(request: Request, settings: SettingsDep, records: RecordsDep) -> JSONResponse:
    return await _handle_env_pr("gitlab", request, settings, records)


@router.post("/gitea/env-repo", status_code=202, summary="Gitea pull_request webhook of the environment repository")
async def gitea_env(request: Request, settings: SettingsDep, records: RecordsDep) -> JSONResponse:
    return await _handle_env_pr("gitea", request, settings, records)
