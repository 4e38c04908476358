"""Bearer-token auth with read and write scopes, and RFC 9457 problem responses.

Tokens come from Settings (MESHGEN_API_READ_TOKENS / MESHGEN_API_WRITE_TOKENS, comma-separated,
or *_FILE). A write token also reads. Every configured token is compared, in constant time,
so neither the position of a match nor a prefix match shows in the response time.
"""

from __future__ import annotations

import hmac
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from meshgen.settings import Settings

Scope = Literal["read", "write"]
PROBLEM_TYPE = "application/problem+json"
_TYPE_BASE = "https://meshgen.dev/problems/"


class Problem(Exception):
    """Raise to answer with an application/problem+json body."""

    def __init__(self, status: int, title: str, detail: str, *, slug: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = _TYPE_BASE + slug if slug else "about:blank"
        self.headers = headers


def problem_response(status: int, title: str, detail: str, *, type_: str = "about:blank",
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


class TokenAuth:
    """Decides whether a request's Authorization header grants a scope."""

    def __init__(self, settings: Settings) -> None:
        self._write = [t.encode() for t in settings.tokens("write")]
        self._read = [t.encode() for t in settings.tokens("read")] + self._write
        self.public_reads = settings.api_public_reads

    @staticmethod
    def _matches(given: bytes, tokens: list[bytes]) -> bool:
        found = False
        for token in tokens:  # no early exit: the time taken does not depend on which token matched
            found |= hmac.compare_digest(given, token)
        return found

    def check(self, authorization: str | None, scope: Scope) -> None:
        """Return when allowed; raise Problem (401/403) saying what to send instead."""
        if scope == "read" and self.public_reads:
            return
        tokens = self._write if scope == "write" else self._read
        challenge = {"WWW-Authenticate": f'Bearer realm="meshgen", scope="{scope}"'}
        if not tokens:
            raise Problem(401, "Unauthorized",
                          f"this server has no {scope} tokens configured; set MESHGEN_API_{scope.upper()}_TOKENS"
                          + (" (or MESHGEN_API_PUBLIC_READS=true)" if scope == "read" else ""),
                          slug="no-tokens", headers=challenge)
        if not authorization:
            raise Problem(401, "Unauthorized",
                          f"send an `Authorization: Bearer <token>` header with a {scope}-scope token",
                          slug="missing-token", headers=challenge)
        kind, _, given = authorization.partition(" ")
        if kind.lower() != "bearer" or not given.strip():
            raise Problem(401, "Unauthorized", "the Authorization header must be `Bearer <token>`",
                          slug="malformed-token", headers=challenge)
        given_b = given.strip().encode()
        if self._matches(given_b, tokens):
            return
        if scope == "write" and self._matches(given_b, self._read):
            raise Problem(403, "Forbidden", "this token has read scope only; this endpoint needs a write-scope "
                          "token (MESHGEN_API_WRITE_TOKENS)", slug="insufficient-scope")
        raise Problem(401, "Unauthorized", "the bearer token is not valid here; check for a typo or a rotated token",
                      slug="invalid-token", headers=challenge)


def install_problem_handlers(app: FastAPI) -> None:
    """Every error leaves the app as problem+json, including FastAPI's own 404/405/422."""

    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc.status, exc.title, exc.detail, type_=exc.type, headers=exc.headers)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        titles = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large"}
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint; the API is described at /openapi.json and /docs"
        return problem_response(exc.status_code, titles.get(exc.status_code, "Error"), detail,
                                headers=getattr(exc, "headers", None))

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return problem_response(422, "Unprocessable Content", "; ".join(parts) + "; see /openapi.json",
                                type_=_TYPE_BASE + "invalid-request")

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


#: `openapi_extra` of an operation that needs a token: the bearerAuth scheme (described in the
#: document by meshgen.api.app) applies to it. The check itself is the ReadAccess/WriteAccess
#: dependency of meshgen.api.state.
BEARER_AUTH: dict[str, Any] = {"security": [{"bearerAuth": []}]}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem+json errors (fixed up in the app's openapi())."""
    from meshgen.api.models import Problem as ProblemModel

    text = {400: "Bad request", 401: "Missing or invalid bearer token",
            403: "The token lacks the required scope", 404: "Not found",
            409: "The request conflicts with the current state", 413: "The request body is too large",
            422: "Invalid parameters or body",
            503: "A dependency (Redis, Celery broker) is unavailable"}
    return {code: {"model": ProblemModel, "description": text.get(code, "Error")} for code in codes}
