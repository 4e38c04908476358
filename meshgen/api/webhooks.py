"""Webhooks from the blueprints repository's forge: a push to the configured branch queues a sync.

Mounted by the API app under /api/v1/webhooks/{kind}, one route for every forge registered with
webhooks (meshgen.forges.registry; an unknown kind is a 404 problem). Each forge's registration
says how it signs (WebhookSpec.verify), names its events and deliveries, and shapes its payloads.
Order of checks, so that nothing unauthenticated can queue work or poison the replay memory:

1. signature / token against the raw body, in constant time → 401 problem+json when missing or wrong;
2. event type (anything but a push is acknowledged and ignored; ping events answer pong; pull
   requests of the blueprints repository are planned: meshgen.api.planhooks);
3. delivery id remembered in Redis (SET NX + TTL) → a replay answers 202 "duplicate";
4. repository and branch must be the configured ones → else 202 "ignored";
5. enqueue → 202 with the job id.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meshgen.api.deps import Enqueue, get_enqueue, get_records, get_settings
from meshgen.api.security import problem_responses
from meshgen.forges.base import Push, WebhookSpec
from meshgen.forges.registry import FORGES
from meshgen.records import Records
from meshgen.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

_ZERO_SHA = "0" * 40


def problem(status: int, title: str, detail: str) -> JSONResponse:
    """An RFC 9457 problem response."""
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json")


def _accepted(status: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": status, **extra}, status_code=202)


def secret_env(kind: str) -> str:
    return f"MESHGEN_WEBHOOK_SECRET_{kind.upper()}"


async def verified(kind: str, request: Request, settings: Settings) -> tuple[WebhookSpec, bytes] | JSONResponse:
    """The webhook spec and the raw body of a delivery whose signature checks out, or the problem to
    answer: 404 for a kind without webhooks, 401 when webhooks of the kind are off or the signature
    is missing or wrong. Shared by the push and the environment repository's pull-request routes."""
    spec = FORGES.get(kind)
    if spec is None or spec.webhook is None:
        kinds = ", ".join(k for k, s in FORGES.items() if s.webhook is not None)
        return problem(404, "Not Found",
                       f"no webhooks for forge kind {kind[:40]!r}; forges with webhooks: {kinds}")
    hook = spec.webhook
    secret = settings.webhook_secret(kind)
    if secret is None:
        return problem(401, "Unauthorized", f"{kind} webhooks are not enabled: set {secret_env(kind)} "
                       "to the secret configured in the forge's webhook settings")
    # Without a signature there is nothing to check the body against: refuse it unread.
    # (Its size is bounded before this: meshgen.api.limits.)
    body = await request.body() if request.headers.get(hook.signature_header) else b""
    if not body or not hook.verify(secret.get_secret_value(), body, request.headers):
        return problem(401, "Unauthorized", f"missing or wrong {kind} webhook signature; check that the "
                       f"webhook's secret equals {secret_env(kind)}")
    return hook, body


def delivery_id(hook: WebhookSpec, request: Request) -> str | None:
    return next((request.headers[h] for h in hook.delivery_headers if request.headers.get(h)), None)


async def _handle(kind: str, request: Request, settings: Settings, records: Records,
                  enqueue: Enqueue) -> JSONResponse:
    checked = await verified(kind, request, settings)
    if isinstance(checked, JSONResponse):
        return checked
    hook, body = checked
    event = request.headers.get(hook.event_header, "")
    if event in hook.ping_events:
        return JSONResponse({"status": "pong"})
    if event in hook.pr_events:  # blueprints pull requests: planned (meshgen.api.planhooks)
        return _plan(kind, body, settings)
    if event not in hook.push_events:
        return _accepted("ignored", reason=f"event {event!r} is not a push")
    try:
        push = _checked(hook.parse_push(json.loads(body)))
    except (ValueError, AttributeError, TypeError, RecursionError):
        return problem(400, "Bad Request", "the push payload is not the JSON object the forge documents "
                       "(repository, ref and a commit id as text)")
    delivery = delivery_id(hook, request)
    if delivery is not None:
        first = await run_in_threadpool(_remember, records, kind, delivery, settings.webhook_dedupe_ttl)
        if not first:
            return _accepted("duplicate", delivery=delivery)
    reason = _not_for_us(push, settings)
    if reason:
        return _accepted("ignored", reason=reason)
    try:
        job = await run_in_threadpool(enqueue, _request(kind, push))
    except Exception:
        if delivery is not None:  # let the forge's redelivery count instead of being taken for a replay
            await run_in_threadpool(_forget, records, kind, delivery)
        log.exception("could not queue a sync for %s push %s", kind, push.commit[:12])
        return problem(503, "Service Unavailable", "could not queue the sync (is Redis reachable?); "
                       "the forge retries the delivery, or redeliver it from the webhook settings")
    return _accepted("queued", job=job.id, commit=push.commit)


_COMMIT_ID = re.compile(r"[0-9a-fA-F]{40}([0-9a-fA-F]{24})?\Z")  # SHA-1, or SHA-256 repositories


def _checked(push: Push) -> Push:
    """A signed payload is still the forge's data: fields of the wrong type or a commit id that is
    not one are a malformed payload (400), not an error deeper in (where it would be a 500)."""
    if not all(isinstance(v, str) for v in (push.repository, push.ref, push.commit)):
        raise TypeError("repository, ref and commit must be text")
    if push.commit and not _COMMIT_ID.match(push.commit):
        raise ValueError("the commit is not a commit id")
    author = push.author if isinstance(push.author, str) else None
    return Push(push.repository, push.ref, push.commit, author[:200] if author else None)


def _plan(forge: str, body: bytes, settings: Settings) -> JSONResponse:
    from meshgen.api.planhooks import accept

    return accept(forge, body, settings)


def _not_for_us(push: Push, settings: Settings) -> str | None:
    if settings.blueprints_repo and push.repository.lower() != settings.blueprints_repo.lower():
        return f"repository {push.repository!r} is not the blueprints repository {settings.blueprints_repo!r}"
    if push.ref != f"refs/heads/{settings.blueprints_branch}":
        return f"{push.ref!r} is not the blueprints branch refs/heads/{settings.blueprints_branch}"
    if not push.commit or push.commit == _ZERO_SHA:
        return "the branch was deleted"
    return None


def _request(forge: str, push: Push) -> Any:
    from meshgen.gitops.jobs import SyncRequest

    return SyncRequest(trigger=f"webhook:{forge}", blueprint_commit=push.commit, blueprint_author=push.author)


def _remember(records: Records, forge: str, delivery: str, ttl: int) -> bool:
    from meshgen.gitops.coordination import remember_delivery

    return remember_delivery(records.client, records.prefix, forge, delivery, ttl)


def _forget(records: Records, forge: str, delivery: str) -> None:
    from meshgen.gitops.coordination import forget_delivery

    try:
        forget_delivery(records.client, records.prefix, forge, delivery)
    except Exception:  # noqa: BLE001 - best effort; the TTL bounds the damage
        log.warning("could not forget %s delivery after a failed enqueue", forge)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RecordsDep = Annotated[Records, Depends(get_records)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]


def _kind_help() -> str:
    return "; ".join(f"{k}: {s.title}, signed with {s.webhook.signature_header}, events {s.webhook.event_header}"
                     for k, s in FORGES.items() if s.webhook is not None)


#: The path parameter, documented with the kinds registered when the app is built.
KindPath = Annotated[str, Path(description="The forge kind: " + _kind_help(), json_schema_extra={
    "enum": [k for k, s in FORGES.items() if s.webhook is not None]})]
RESPONSES = problem_responses(400, 401, 404, 413, 503)
RESPONSES[401] = {**RESPONSES[401],
                  "description": "Webhooks of this kind are off, or the signature is missing or wrong"}
RESPONSES[404] = {**RESPONSES[404], "description": "No forge of this kind sends webhooks"}


@router.post("/{kind}", status_code=202, responses=RESPONSES,
             summary="Push webhook of the blueprints repository's forge",
             description="A push to the blueprints branch queues a sync; a pull request of the blueprints repository "
                         "is planned (MESHGEN_BLUEPRINTS_FORGE_URL). Verified against MESHGEN_WEBHOOK_SECRET_<KIND> "
                         "before anything is read.")
async def webhook(kind: KindPath, request: Request, settings: SettingsDep, records: RecordsDep,
                  enqueue: EnqueueDep) -> JSONResponse:
    return await _handle(kind, request, settings, records, enqueue)
