"""Pull-request webhooks from the *environment* repository's forge: a merge or close recorded at once.

Mounted beside the push webhooks, at /api/v1/webhooks/{kind}/env-repo, and verified exactly like
them (same secrets, same constant-time checks, same replay memory). Each forge's registration
parses its pull-request events (WebhookSpec.pr_action / parse_pr), e.g.:

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
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meshgen.api.deps import get_records, get_settings
from meshgen.api.webhooks import (
    RESPONSES,
    KindPath,
    _accepted,
    _forget,
    _remember,
    delivery_id,
    problem,
    verified,
)
from meshgen.forges.base import PullRequest
from meshgen.forges.registry import FORGES
from meshgen.records import Records
from meshgen.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])


def _env_repository(settings: Settings, forge: str) -> str | None:
    """owner/repo (GitLab: project path) of the environment repository, if meshgen.yaml names it on `forge`."""
    from meshgen.blueprint.loading import load_config

    config, _ = load_config(Path(settings.root))
    fs = config.env_repo.forge
    name = FORGES[forge].repository
    if fs.kind != forge or name is None:
        return None
    return name(fs.fields())


def _record(records: Records, pr: PullRequest) -> int:
    from meshgen.gitops.sync import record_pr_state

    return record_pr_state(records, pr)


async def _handle_env_pr(name: str, request: Request, settings: Settings, records: Records) -> JSONResponse:
    checked = await verified(name, request, settings)
    if isinstance(checked, JSONResponse):
        return checked
    hook, body = checked
    event = request.headers.get(hook.event_header, "")
    if event in hook.ping_events:
        return JSONResponse({"status": "pong"})
    if event not in hook.pr_events or hook.pr_action is None or hook.parse_pr is None:
        return _accepted("ignored", reason=f"event {event!r} is not a pull-request event")
    try:
        payload = json.loads(body)
        parsed = hook.parse_pr(payload) if hook.pr_action(payload) in ("merged", "closed") else None
    # OverflowError: a number such as 1e400 (JSON allows it; int() of infinity does not);
    # RecursionError: JSON nested thousands deep. Both are malformed payloads, not a 500.
    except (ValueError, KeyError, AttributeError, TypeError, OverflowError, RecursionError):
        return problem(400, "Bad Request", f"the {name} pull-request payload is not the JSON object the forge "
                       "documents (pull_request.number, head.ref, base.ref, ...)")
    if parsed is None:
        return _accepted("ignored", reason="only merged or closed pull requests change a rollout")
    repository, pr = parsed.repository, parsed.pull_request
    expected = await run_in_threadpool(_env_repository, settings, name)
    if expected is None or repository.lower() != expected.lower():
        return _accepted("ignored", reason=f"repository {repository!r} is not the environment repository "
                         f"(envRepo.forge in meshgen.yaml: {expected or 'not on ' + name})")
    if not pr.branch.startswith("meshgen/"):
        return _accepted("ignored", reason=f"branch {pr.branch!r} is not a meshgen branch")
    delivery = delivery_id(hook, request)
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


@router.post("/{kind}/env-repo", status_code=202, responses=RESPONSES,
             summary="Pull-request webhook of the environment repository's forge",
             description="A merged or closed meshgen pull request is recorded at once (GitHub and Gitea "
                         "pull_request, GitLab Merge Request Hook); verified like the push webhook.")
async def env_repo_webhook(kind: KindPath, request: Request, settings: SettingsDep,
                           records: RecordsDep) -> JSONResponse:
    return await _handle_env_pr(kind, request, settings, records)
