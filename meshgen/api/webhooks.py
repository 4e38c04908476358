"""Webhooks from the blueprints repository's forge: a push to the configured branch queues a sync.

Mounted by the API app under /api/v1/webhooks/{github,gitlab,gitea}. Order of checks, so
that nothing unauthenticated can queue work or poison the replay memory:

1. signature / token against the raw body, in constant time → 401 problem+json when missing or wrong;
2. event type (anything but a push is acknowledged and ignored; GitHub's `ping` answers pong);
3. delivery id remembered in Redis (SET NX + TTL) → a replay answers 202 "duplicate";
4. repository and branch must be the configured ones → else 202 "ignored";
5. enqueue → 202 with the job id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meshgen.api.deps import Enqueue, get_enqueue, get_records, get_settings
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


# ---- verification (constant time; secrets never logged) ------------------------------------


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _verify_github(secret: str, body: bytes, headers: Any) -> bool:
    given = headers.get("x-hub-signature-256", "")
    return hmac.compare_digest(given.encode(), f"sha256={_hmac_hex(secret, body)}".encode())


def _verify_gitea(secret: str, body: bytes, headers: Any) -> bool:
    given = headers.get("x-gitea-signature", "")
    return hmac.compare_digest(given.lower().encode(), _hmac_hex(secret, body).encode())


def _verify_gitlab(secret: str, body: bytes, headers: Any) -> bool:
    return hmac.compare_digest(headers.get("x-gitlab-token", "").encode(), secret.encode())


# ---- the push, per forge -------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    repository: str  # owner/name, GitLab group/project
    ref: str
    commit: str
    author: str | None


def _github_push(p: dict[str, Any]) -> Push:
    head = p.get("head_commit") or {}
    author = (head.get("author") or {}).get("name") or (p.get("pusher") or {}).get("name")
    return Push((p.get("repository") or {}).get("full_name", ""), p.get("ref", ""), p.get("after", ""), author)


def _gitea_push(p: dict[str, Any]) -> Push:
    head = p.get("head_commit") or {}
    author = (head.get("author") or {}).get("name") or (p.get("pusher") or {}).get("login")
    return Push((p.get("repository") or {}).get("full_name", ""), p.get("ref", ""), p.get("after", ""), author)


def _gitlab_push(p: dict[str, Any]) -> Push:
    commit = p.get("checkout_sha") or p.get("after") or ""
    commits = p.get("commits") or []
    last = next((c for c in commits if c.get("id") == commit), commits[-1] if commits else {})
    author = (last.get("author") or {}).get("name") or p.get("user_name")
    return Push((p.get("project") or {}).get("path_with_namespace", ""), p.get("ref", ""), commit, author)


@dataclass(frozen=True)
class _Forge:
    name: str
    secret: Callable[[Settings], Any]
    secret_env: str
    verify: Callable[[str, bytes, Any], bool]
    event_header: str
    push_events: tuple[str, ...]
    delivery_headers: tuple[str, ...]
    parse: Callable[[dict[str, Any]], Push]


_FORGES = {
    "github": _Forge("github", lambda s: s.webhook_secret_github, "MESHGEN_WEBHOOK_SECRET_GITHUB", _verify_github,
                     "x-github-event", ("push",), ("x-github-delivery",), _github_push),
    # Idempotency-Key (GitLab 17.4+) is stable across retries of one event; the UUIDs are older fallbacks.
    "gitlab": _Forge("gitlab", lambda s: s.webhook_secret_gitlab, "MESHGEN_WEBHOOK_SECRET_GITLAB", _verify_gitlab,
                     "x-gitlab-event", ("Push Hook",),
                     ("idempotency-key", "x-gitlab-webhook-uuid", "x-gitlab-event-uuid"), _gitlab_push),
    "gitea": _Forge("gitea", lambda s: s.webhook_secret_gitea, "MESHGEN_WEBHOOK_SECRET_GITEA", _verify_gitea,
                    "x-gitea-event", ("push",), ("x-gitea-delivery",), _gitea_push),
}


async def _handle(forge: _Forge, request: Request, settings: Settings, records: Records,
                  enqueue: Enqueue) -> JSONResponse:
    secret = forge.secret(settings)
    if secret is None:
        return problem(401, "Unauthorized", f"{forge.name} webhooks are not enabled: set {forge.secret_env} "
                       "to the secret configured in the forge's webhook settings")
    # Without a signature there is nothing to check the body against: refuse it unread.
    # (Its size is bounded before this: meshgen.api.limits.)
    body = await request.body() if request.headers.get(_SIGNATURE_HEADER[forge.name]) else b""
    if not body or not forge.verify(secret.get_secret_value(), body, request.headers):
        return problem(401, "Unauthorized", f"missing or wrong {forge.name} webhook signature; check that the "
                       f"webhook's secret equals {forge.secret_env}")
    event = request.headers.get(forge.event_header, "")
    if forge.name == "github" and event == "ping":
        return JSONResponse({"status": "pong"})
    if event in _plan_events(forge.name):  # blueprints pull requests: planned (meshgen.api.planhooks)
        return _plan(forge.name, body, settings)
    if event not in forge.push_events:
        return _accepted("ignored", reason=f"event {event!r} is not a push")
    try:
        push = _checked(forge.parse(json.loads(body)))
    except (ValueError, AttributeError, TypeError, RecursionError):
        return problem(400, "Bad Request", "the push payload is not the JSON object the forge documents "
                       "(repository, ref and a commit id as text)")
    delivery = next((request.headers[h] for h in forge.delivery_headers if request.headers.get(h)), None)
    if delivery is not None:
        first = await run_in_threadpool(_remember, records, forge.name, delivery, settings.webhook_dedupe_ttl)
        if not first:
            return _accepted("duplicate", delivery=delivery)
    reason = _not_for_us(push, settings)
    if reason:
        return _accepted("ignored", reason=reason)
    try:
        job = await run_in_threadpool(enqueue, _request(forge.name, push))
    except Exception:
        if delivery is not None:  # let the forge's redelivery count instead of being taken for a replay
            await run_in_threadpool(_forget, records, forge.name, delivery)
        log.exception("could not queue a sync for %s push %s", forge.name, push.commit[:12])
        return problem(503, "Service Unavailable", "could not queue the sync (is Redis reachable?); "
                       "the forge retries the delivery, or redeliver it from the webhook settings")
    return _accepted("queued", job=job.id, commit=push.commit)


_SIGNATURE_HEADER = {"github": "x-hub-signature-256", "gitlab": "x-gitlab-token", "gitea": "x-gitea-signature"}
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


def _plan_events(forge: str) -> tuple[str, ...]:
    from meshgen.api.planhooks import EVENTS

    return EVENTS.get(forge, ())


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


@router.post("/github", status_code=202, summary="GitHub push webhook (X-Hub-Signature-256)")
async def github(request: Request, settings: SettingsDep, records: RecordsDep, enqueue: EnqueueDep) -> JSONResponse:
    return await _handle(_FORGES["github"], request, settings, records, enqueue)


@router.post("/gitlab", status_code=202, summary="GitLab push webhook (X-Gitlab-Token)")
async def gitlab(request: Request, settings: SettingsDep, records: RecordsDep, enqueue: EnqueueDep) -> JSONResponse:
    return await _handle(_FORGES["gitlab"], request, settings, records, enqueue)


@router.post("/gitea", status_code=202, summary="Gitea push webhook (X-Gitea-Signature)")
async def gitea(request: Request, settings: SettingsDep, records: RecordsDep, enqueue: EnqueueDep) -> JSONResponse:
    return await _handle(_FORGES["gitea"], request, settings, records, enqueue)
