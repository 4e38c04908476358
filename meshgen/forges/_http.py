"""Shared plumbing for the HTTP forges (GitHub, Gitea/Forgejo, GitLab): token loading, one JSON call
with retries, and error messages that say what to do next.

Private to meshgen.forges. Two rules hold everywhere in this module:

* The token lives only in `_Secret` and in the Authorization header handed to httpx. It is never
  formatted into a log line or an exception message, and any text that came back from a server
  is scrubbed of it before it is shown (a misbehaving proxy may echo request headers).
* Only failures that can heal by themselves are retried: 5xx answers, rate limits and network
  errors. Any other 4xx is the caller's problem and fails at once, so a wrong token or repository
  name costs one request, not a minute of backoff.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Self, TypeVar
from urllib.parse import quote

from .base import ForgeError, GitCredential, read_secret_file

if TYPE_CHECKING:
    # Imported where used (a client is built, a request sent): the forge registry imports the
    # providers, and meshgen.yaml's validation imports the registry, so `meshgen render` would
    # otherwise pay for an HTTP stack it never uses.
    import httpx
    from tenacity import RetryCallState

_log = logging.getLogger("meshgen.forges")

T = TypeVar("T")

# Methods that are safe to send twice after a network error that may have happened *after* the
# forge acted on the request. Our PATCH/PUT bodies carry absolute values (title, state, full label
# set), so repeating them is harmless. POST is not: a repeated "create" or "comment" duplicates.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})

# How much of a server's error text goes into a ForgeError: enough to read "Bad credentials" or a
# validation message, not a whole HTML error page.
_MAX_DETAIL = 300


class _Secret:
    """A token. Its repr and str are constant so it cannot leak through formatting or tracebacks."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "the token") -> None:
        self._value = value
        self.source = source  # where it came from ("environment variable X"), for error messages

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """`text` with every occurrence of the token replaced."""
        return text.replace(self._value, "<redacted>") if self._value else text

    def rejected(self) -> None:
        """The forge answered 401 to this token. A fixed token can do nothing about it; a rotating
        one (GitHub App installation token) drops it so the next call gets a fresh one."""

    def __repr__(self) -> str:
        return "<token redacted>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:  # pickling would write the token to disk or a queue
        raise TypeError("a forge token cannot be pickled")


def _resolve_token(
    forge: str, *, token: str | None, token_env: str | None, token_file: str | os.PathLike[str] | None
) -> _Secret:
    """Exactly one of the three sources; the value is stripped of surrounding whitespace."""
    given = [name for name, value in (("token", token), ("token_env", token_env), ("token_file", token_file))
             if value is not None]
    if len(given) != 1:
        raise ForgeError(
            f"{forge}: give exactly one of token, token_env or token_file (got {', '.join(given) or 'none'}); "
            "prefer token_env or token_file so the token stays out of configuration files"
        )
    if token is not None:
        value = token.strip()
        source = "the token argument"
    elif token_env is not None:
        raw = os.environ.get(token_env)
        if raw is None:
            raise ForgeError(f"{forge}: environment variable {token_env} is not set; export it with an API token")
        value = raw.strip()
        source = f"environment variable {token_env}"
    else:
        path = Path(token_file)  # type: ignore[arg-type]  # narrowed by the count above
        try:
            value = read_secret_file(path).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            # The strerror only, never the content: the file is the secret.
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ForgeError(f"{forge}: cannot read token file {path}: {reason}; check the path and "
                             "its permissions") from None
        source = f"token file {path}"
    if not value:
        raise ForgeError(f"{forge}: {source} is empty; put an API token there")
    if any(ch in value for ch in "\r\n\0"):
        # Would corrupt the Authorization header (header injection); also catches a pasted file.
        raise ForgeError(f"{forge}: {source} holds more than one line; it must contain only the token")
    return _Secret(value, source)


def _segment(value: str | int) -> str:
    """One URL path segment: branch names and GitLab project paths contain '/', which must be escaped."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class _RetryPolicy:
    """How hard to try before giving up.

    max_attempts counts requests, not retries. max_wait caps the *total* time spent sleeping
    between attempts for one operation (server-requested waits included), so a forge that is down
    or rate limited for an hour fails in bounded time with a message instead of hanging a run.
    backoff is the first exponential delay (doubling, with jitter) when the server gives no hint.
    """

    max_attempts: int = 5
    max_wait: float = 60.0
    backoff: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_wait < 0 or self.backoff < 0:
            raise ValueError("max_wait and backoff must not be negative")


class _OffOrigin(Exception):
    """A redirect leading away from the forge's origin (raised before the request is sent)."""


class _Transient(Exception):
    """A failure worth another attempt. Carries only scrubbed text."""

    def __init__(self, summary: str, *, status: int | None, wait_hint: float | None, rate_limited: bool) -> None:
        super().__init__(summary)
        self.summary = summary
        self.status = status
        self.wait_hint = wait_hint
        self.rate_limited = rate_limited


def _parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _rate_limit_wait(response: httpx.Response, now: float) -> tuple[bool, float | None]:
    """(is this a rate limit?, seconds the server asks us to wait).

    GitHub signals its primary limit with 403/429 + X-RateLimit-Remaining: 0 + X-RateLimit-Reset
    (epoch seconds) and its secondary limits with 403/429 + Retry-After. GitLab and Gitea use 429
    (GitLab adds RateLimit-Reset). A 403 without those headers is a permission problem and is not
    retried.
    """
    headers = response.headers
    retry_after = _parse_retry_after(headers.get("retry-after"), now)
    exhausted = headers.get("x-ratelimit-remaining", headers.get("ratelimit-remaining")) == "0"
    reset = headers.get("x-ratelimit-reset", headers.get("ratelimit-reset"))
    if response.status_code == 429 or (response.status_code == 403 and (retry_after is not None or exhausted)):
        if retry_after is not None:
            return True, retry_after
        if reset and reset.strip().isdigit():
            # +1: the reset time has whole-second resolution, so arriving on the boundary can still
            # hit the exhausted window.
            return True, max(0.0, int(reset) - now) + 1.0
        return True, None
    return False, None


class _ApiClient:
    """A JSON-over-HTTPS client bound to one forge API base URL and one token."""

    def __init__(
        self,
        forge: str,
        base_url: str,
        secret: _Secret,
        auth_header: Callable[[str], tuple[str, str]],
        *,
        timeout: float,
        retry: _RetryPolicy,
        extra_headers: Mapping[str, str] | None = None,
        hint_not_found: str,
        hint_auth: str,
    ) -> None:
        self.forge = forge
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self._retry = retry
        self._hint_not_found = hint_not_found
        self._hint_auth = hint_auth
        self._auth_header = auth_header
        headers = {"Accept": "application/json", "User-Agent": "meshgen", **(extra_headers or {})}
        # follow_redirects: GitHub answers renamed repositories with 301/307, on the same origin.
        # A redirect to another origin is refused before it is sent (_same_origin): whatever
        # answers there is not the forge, and its answer must not be taken for one.
        # auth: the header is set on every request, not once, because some secrets rotate
        # (a GitHub App's installation token is re-minted before it expires).
        import httpx

        self._origin = httpx.URL(self.base_url).copy_with(path="/", query=None, fragment=None)
        self._http = httpx.Client(
            base_url=self.base_url + "/", headers=headers, timeout=timeout, follow_redirects=True,
            auth=self._authorize, event_hooks={"request": [self._same_origin]},
        )

    def _authorize(self, request: httpx.Request) -> httpx.Request:
        """Sets the Authorization header per request from the current token (httpx function auth)."""
        name, value = self._auth_header(self.token())
        request.headers[name] = value
        return request

    def _same_origin(self, request: httpx.Request) -> None:
        url = request.url
        if (url.scheme, url.host, url.port) != (self._origin.scheme, self._origin.host, self._origin.port):
            raise _OffOrigin(f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else ""))

    def token(self) -> str:
        """The token, read afresh for every request and every git fetch/push: the one place a
        provider's token is read (a refreshing token source only has to change `_secret`)."""
        return self._secret.reveal()

    @property
    def token_source(self) -> str:
        """Where the token comes from, for messages (never the token)."""
        return self._secret.source

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        parse: Callable[[Any], T] = lambda data: data,
    ) -> T:
        """Send one request (retrying transient failures) and return parse(JSON body or None).

        `operation` is a short human phrase ("create pull request") used in logs and errors.
        A response outside `ok` raises ForgeError; so does a body that `parse` cannot read,
        since that means base_url points at something that is not this forge's API.
        """
        response = self._send_with_retries(operation, method, path.lstrip("/"), params, json)
        if response.status_code not in ok:
            self._fail_status(operation, response)
        data: Any = None
        if response.content:
            try:
                data = response.json()
            except ValueError:
                raise ForgeError(
                    f"{self.forge}: {operation}: HTTP {response.status_code} but the body is not JSON; "
                    f"check that base_url ({self.base_url}) is the {self.forge} API URL"
                ) from None
        try:
            return parse(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ForgeError(
                f"{self.forge}: {operation}: unexpected response shape ({type(exc).__name__}: "
                f"{self._secret.scrub(str(exc))[:_MAX_DETAIL]}); check that base_url ({self.base_url}) is the "
                f"{self.forge} API URL and that the server version is supported"
            ) from None

    # -- internals -------------------------------------------------------------------------------

    def _send_with_retries(
        self, operation: str, method: str, path: str, params: Mapping[str, str | int] | None, body: Any
    ) -> httpx.Response:
        from tenacity import Retrying, retry_if_exception_type

        policy = self._retry

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.wait_hint is not None:
                return float(exc.wait_hint)  # the server knows best; stop() refuses it if over budget
            delay: float = policy.backoff * 2.0 ** (state.attempt_number - 1)
            delay *= random.uniform(0.5, 1.0)  # jitter: parallel meshgen runs do not retry in lockstep
            remaining: float = policy.max_wait - state.idle_for
            return min(delay, max(0.0, remaining))

        def stop(state: RetryCallState) -> bool:
            return (state.attempt_number >= policy.max_attempts
                    or state.idle_for + state.upcoming_sleep > policy.max_wait)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            _log.warning("%s: %s: %s; retrying in %.1f s (attempt %d of %d)", self.forge, operation,
                         exc, state.upcoming_sleep, state.attempt_number + 1, policy.max_attempts)

        retrying = Retrying(
            retry=retry_if_exception_type(_Transient), wait=wait, stop=stop,
            before_sleep=before_sleep, reraise=True,
        )
        started = time.monotonic()
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    return self._send_once(operation, method, path, params, body)
        except _Transient as exc:
            self._fail_transient(operation, exc, attempts, time.monotonic() - started)
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    def _send_once(
        self, operation: str, method: str, path: str, params: Mapping[str, str | int] | None, body: Any
    ) -> httpx.Response:
        import httpx

        _log.debug("%s: %s %s/%s", self.forge, method, self.base_url, path)
        try:
            response = self._http.request(method, path, params=params, json=body)
        except _OffOrigin as exc:
            raise ForgeError(
                f"{self.forge}: {operation} failed: the forge redirected the request to another origin "
                f"({exc}); meshgen only talks to {self.base_url}. Check base_url (a moved or renamed "
                "server?) and the forge's proxy settings"
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never reached the forge: always safe to try again.
            raise _Transient(self._describe_network(exc), status=None, wait_hint=None,
                             rate_limited=False) from None
        except httpx.TransportError as exc:
            if method in _IDEMPOTENT:
                raise _Transient(self._describe_network(exc), status=None, wait_hint=None,
                                 rate_limited=False) from None
            raise ForgeError(
                f"{self.forge}: {operation} failed: {self._describe_network(exc)}; the request may or may not "
                "have been applied, so it was not repeated: check the pull request on the forge, then run again"
            ) from None
        now = time.time()
        limited, hint = _rate_limit_wait(response, now)
        if limited:
            raise _Transient(f"rate limited (HTTP {response.status_code})", status=response.status_code,
                             wait_hint=hint, rate_limited=True)
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code} {response.reason_phrase}{self._detail(response)}",
                             status=response.status_code, wait_hint=None, rate_limited=False)
        return response

    def _describe_network(self, exc: httpx.TransportError) -> str:
        # str(exc) of an httpx transport error is the OS/protocol message; it never holds headers,
        # but scrub anyway in case a future httpx version changes that.
        return f"network error talking to {self.base_url} ({type(exc).__name__}: {self._secret.scrub(str(exc))})"

    def _detail(self, response: httpx.Response) -> str:
        """The server's own error text, scrubbed and shortened, prefixed with ': ' (or '')."""
        text = ""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            parts = [str(data[key]) for key in ("message", "error", "errors") if data.get(key)]
            text = "; ".join(parts)
        elif response.text and "html" not in response.headers.get("content-type", ""):
            text = response.text
        text = " ".join(self._secret.scrub(text).split())[:_MAX_DETAIL]
        return f": {text}" if text else ""

    def _fail_status(self, operation: str, response: httpx.Response) -> NoReturn:
        status = response.status_code
        if status == 401:
            self._secret.rejected()
            hint = f"the token was rejected; {self._hint_auth}"
        elif status == 403:
            hint = f"the token lacks permission for this; {self._hint_auth}"
        elif status == 404:
            hint = self._hint_not_found
        elif status in (405, 406, 409, 422):
            hint = ("the forge refused the change in the pull request's current state (conflict, "
                    "protection rule, failing check, or it already exists / is already closed); "
                    "look at it on the forge, fix the cause, then run again")
        else:
            hint = "see the forge's message above"
        raise ForgeError(f"{self.forge}: {operation} failed: HTTP {status} {response.reason_phrase}"
                         f"{self._detail(response)}. {hint}")

    def _fail_transient(self, operation: str, exc: _Transient, attempts: int, elapsed: float) -> NoReturn:
        tried = f"{attempts} attempt{'s' if attempts != 1 else ''} over {elapsed:.1f} s"
        if exc.rate_limited:
            if exc.wait_hint is not None and exc.wait_hint > self._retry.max_wait:
                wait = (f"the forge asks to wait {exc.wait_hint:.0f} s, more than the retry budget "
                        f"(max_wait={self._retry.max_wait:g} s)")
            else:
                wait = f"still limited after {tried}"
            raise ForgeError(f"{self.forge}: {operation} failed: HTTP {exc.status}, API rate limit: {wait}. "
                             "Run again later, use a token with a higher limit, or raise max_wait")
        if exc.status is not None:
            raise ForgeError(f"{self.forge}: {operation} failed: {exc.summary} (gave up after {tried}). "
                             "The forge is failing on its side; check its status page and run again later, "
                             "or raise max_attempts/max_wait")
        raise ForgeError(f"{self.forge}: {operation} failed: {exc.summary} (gave up after {tried}). "
                         "Check base_url, DNS, proxy settings and that the forge is reachable from here")


class _HTTPForge:
    """Connection lifecycle shared by the HTTP forges; `close` is the protocol's close-a-PR."""

    _api: _ApiClient
    #: The HTTPS git username that goes with this forge's token (its documented convention).
    git_username: ClassVar[str] = "meshgen"

    def git_credential(self) -> GitCredential:
        """The API token as git credentials (Forge protocol); asked per fetch/push, like the API's."""
        return GitCredential(self.git_username, self._api.token,
                             f"the {self._api.forge} forge token ({self._api.token_source})")

    def close_connections(self) -> None:
        """Release pooled HTTP connections (the forge object is unusable afterwards)."""
        self._api.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_connections()
