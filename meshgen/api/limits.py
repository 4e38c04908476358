"""Request body limits, enforced before a body is read: what an unauthenticated caller can make
the API hold in memory is bounded.

An ASGI middleware, outside every route: a declared Content-Length over the limit is answered
413 at once, without reading anything; a body sent without one (chunked) is counted as it
arrives and refused with 413 at the first byte over the limit.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshgen.api.security import problem_response

WEBHOOK_PREFIX = "/api/v1/webhooks/"
MAX_WEBHOOK_BODY = 25 * 1024 * 1024
"""GitHub caps webhook payloads at 25 MB (larger events are not delivered); GitLab and Gitea push
payloads are far smaller."""
MAX_API_BODY = 64 * 1024
"""Every other request body is a small JSON object (POST /api/v1/syncs: two short fields)."""


def body_limit(path: str) -> int:
    return MAX_WEBHOOK_BODY if path.startswith(WEBHOOK_PREFIX) else MAX_API_BODY


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body without Content-Length grows over the limit; an
    HTTPException, so FastAPI passes it through its body parsing and the app answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit))


def _too_large(limit: int) -> str:
    return (f"the request body is over the {limit:,}-byte limit of this endpoint; nothing was read or queued "
            "(webhooks: send push events only; API: the body is a small JSON object)")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        declared = _content_length(scope)
        if declared == -1:
            await _answer(send, 400, "Bad Request", "Content-Length is not a number; send the body's size in bytes")
            return
        if declared is not None and declared > limit:
            await _answer(send, 413, "Content Too Large", _too_large(limit))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except BodyTooLarge:
            if started:
                raise
            await _answer(send, 413, "Content Too Large", _too_large(limit))


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when absent, -1 when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else -1
    return None


async def _answer(send: Send, status: int, title: str, detail: str) -> None:
    response: Any = problem_response(status, title, detail, headers={"Connection": "close"})
    await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
