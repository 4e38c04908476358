"""Unit checks of the retry decisions in meshgen.forges._http (no server needed)."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from meshgen.forges._http import _parse_retry_after, _rate_limit_wait, _RetryPolicy

NOW = 1_800_000_000.0


def _response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_retry_after_seconds_and_http_date() -> None:
    assert _parse_retry_after("7", NOW) == 7.0
    assert _parse_retry_after(email.utils.formatdate(NOW + 30, usegmt=True), NOW) == pytest.approx(30.0)
    assert _parse_retry_after(email.utils.formatdate(NOW - 30, usegmt=True), NOW) == 0.0
    assert _parse_retry_after("soon", NOW) is None
    assert _parse_retry_after(None, NOW) is None


@pytest.mark.parametrize(("response", "expected"), [
    (_response(429), (True, None)),
    (_response(429, Retry_After="3"), (True, 3.0)),
    (_response(403, X_RateLimit_Remaining="0", X_RateLimit_Reset=str(int(NOW) + 10)), (True, 11.0)),
    (_response(403, Retry_After="60"), (True, 60.0)),
    (_response(429, RateLimit_Reset=str(int(NOW) + 5)), (True, 6.0)),  # GitLab's header name
    (_response(403), (False, None)),  # a permission problem
    (_response(403, X_RateLimit_Remaining="4999"), (False, None)),
    (_response(500), (False, None)),
])
def test_rate_limit_classification(response: httpx.Response, expected: tuple[bool, float | None]) -> None:
    assert _rate_limit_wait(response, NOW) == expected


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError):
        _RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        _RetryPolicy(max_wait=-1)
