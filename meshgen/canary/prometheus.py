"""A small client for Prometheus's HTTP query API, as canary gates need it: one instant query, one number.

Prometheus is outside meshgen's trust boundary like any server: its answer is read with a size
limit, checked for the documented shape (`{"status": "success", "data": {"resultType": ...}}`,
https://prometheus.io/docs/prometheus/latest/querying/api/) and turned into a float or "no data".
Anything else is a PrometheusError whose message names the server (never the token) and what to do.
A gate never passes on an error: the caller waits and says why.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from meshgen.blueprint.config import PrometheusSettings

#: The most of an answer that is read. A gate query returns one sample; an answer this large is a
#: query that selects thousands of series, which is a mistake to report, not to parse.
MAX_ANSWER_BYTES = 1 << 20
_MAX_DETAIL = 200
#: A bearer token is a few hundred bytes; a larger token file is the wrong file.
MAX_TOKEN_BYTES = 16384


class PrometheusError(RuntimeError):
    """A query could not be answered (unreachable, refused, bad query, unexpected answer)."""


@dataclass(frozen=True)
class Prometheus:
    """Where gates are measured: the server's base URL and an optional bearer token."""

    url: str
    token: str | None = None
    timeout: float = 10.0

    def __repr__(self) -> str:  # the token never prints
        return f"Prometheus(url={self.url!r}, token={'<set>' if self.token else None})"

    @classmethod
    def from_settings(cls, settings: PrometheusSettings, root: Path, *, timeout: float = 10.0) -> Prometheus:
        """The client meshgen.yaml's `prometheus` (top-level or an environment's) describes, with its token
        read now from `tokenEnv` or `tokenFile` (relative to the blueprints root), so a rotated Secret is
        picked up. A token that is configured but missing is a PrometheusError naming the setting."""
        token: str | None = None
        if settings.token_env:
            raw = os.environ.get(settings.token_env)
            if not raw or not raw.strip():
                raise PrometheusError(f"prometheus.tokenEnv names {settings.token_env}, which is not set or empty; "
                                      "export the token there or remove tokenEnv")
            token = raw.strip()
        elif settings.token_file:
            path = Path(settings.token_file)
            path = path if path.is_absolute() else root / path
            try:
                with path.open("rb") as handle:
                    data = handle.read(MAX_TOKEN_BYTES + 1)
            except OSError as exc:  # the reason only, never content: the file is the secret
                raise PrometheusError(f"prometheus.tokenFile {path} cannot be read ({exc.strerror}); "
                                      "mount the token there or fix the path") from None
            if len(data) > MAX_TOKEN_BYTES or not data.strip():
                raise PrometheusError(f"prometheus.tokenFile {path} is {'empty' if not data.strip() else 'too large'} "
                                      "for a bearer token; point it at the file holding only the token")
            token = data.decode("utf-8", "replace").strip()
        return cls(settings.url, token, timeout)

    def query(self, promql: str, *, at: float | None = None) -> float | None:
        """The value of an instant query: a number, or None when the query selects no data (or NaN).

        A query must reduce to one number (a scalar, or a vector of at most one sample): gate
        queries aggregate with sum()/histogram_quantile(). More than one series is an error that
        names the query, because picking one would measure the wrong thing.
        """
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        endpoint = self.url.rstrip("/") + "/api/v1/query"
        try:
            with _client().stream("GET", endpoint, params=params, headers=headers, timeout=self.timeout) as response:
                body = _read_limited(response)
        except httpx.HTTPError as exc:
            raise PrometheusError(
                f"Prometheus at {self.url} is unreachable ({type(exc).__name__}); "
                "check prometheus.url in meshgen.yaml and that the server answers from here"
            ) from None
        return _parse_answer(self.url, promql, response.status_code, body, self.token)


_shared: httpx.Client | None = None
_shared_lock = threading.Lock()


def _client() -> httpx.Client:
    """One client for every query of the process: its connections are reused, and its TLS context (tens
    of milliseconds to load the CA bundle) is built once, not per query. A pass over 200 canaries makes
    600 queries. httpx.Client is safe to share between threads."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = httpx.Client(follow_redirects=False)  # redirects off: the token must not follow one
        return _shared


def _forget_client() -> None:
    global _shared
    _shared = None  # a forked worker (Celery prefork) must not share its parent's sockets


os.register_at_fork(after_in_child=_forget_client)


def _read_limited(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise PrometheusError(f"Prometheus answered {declared} bytes; more than {MAX_ANSWER_BYTES} is not read")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise PrometheusError(f"Prometheus answered more than {MAX_ANSWER_BYTES} bytes; a gate query must "
                                  "reduce to one number (aggregate with sum() or histogram_quantile())")
        chunks.append(chunk)
    return b"".join(chunks)


def _scrub(text: str, token: str | None) -> str:
    text = text if not token else text.replace(token, "<redacted>")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"


def _parse_answer(url: str, promql: str, status: int, body: bytes, token: str | None) -> float | None:
    if status in (401, 403):
        raise PrometheusError(
            f"Prometheus at {url} refused the query ({status}); set prometheus.tokenEnv or "
            "prometheus.tokenFile in meshgen.yaml to a token it accepts")
    try:
        answer: Any = json.loads(body)
    except ValueError:
        raise PrometheusError(f"Prometheus at {url} answered {status} with a body that is not JSON; "
                              "is prometheus.url the server's base URL (http://host:9090)?") from None
    if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
        raise PrometheusError(f"Prometheus at {url} answered {status} without a query API status; "
                              "is prometheus.url the server's base URL?")
    if answer["status"] == "error":
        detail = _scrub(str(answer.get("error", "")), token)
        error_type = _scrub(str(answer.get("errorType", "error")), token)
        raise PrometheusError(f"Prometheus rejected the query ({error_type}: {detail}); query: {_scrub(promql, None)}")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise PrometheusError(f"Prometheus at {url} answered success without data")
    kind: Any = data.get("resultType")
    result: Any = data.get("result")
    if kind == "scalar":
        return _number(result, url)
    if kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(
                f"the query selects {len(result)} series; a gate query must reduce to one number "
                f"(aggregate with sum() or max()): {_scrub(promql, None)}")
        sample = result[0]
        if not isinstance(sample, dict):
            raise PrometheusError(f"Prometheus at {url} answered a malformed sample")
        return _number(sample.get("value"), url)
    raise PrometheusError(f"the query gives a {kind!s:.20} result; a gate query must give one number: "
                          f"{_scrub(promql, None)}")


def _number(pair: Any, url: str) -> float | None:
    """A sample is [unix time, "value"]; the value is a string so NaN and ±Inf survive JSON."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise PrometheusError(f"Prometheus at {url} answered a malformed sample")
    try:
        value = float(pair[1])
    except ValueError:
        raise PrometheusError(f"Prometheus at {url} answered a sample that is not a number") from None
    return None if math.isnan(value) else value
