"""Retries, rate limits and give-up behaviour, counted on the server side."""

from __future__ import annotations

import socket
import time

import pytest

from meshgen.forges.base import ForgeError

from .conftest import ForgeEnv

BRANCH = "meshgen/dev/api"

# Per kind: (template of "get one pull request", template of "create").
GET = {"github": "/repos/{owner}/{repo}/pulls/{pull_number}", "gitea": "/repos/{owner}/{repo}/pulls/{index}",
       "gitlab": "/projects/{id}/merge_requests/{iid}"}
CREATE = {"github": "/repos/{owner}/{repo}/pulls", "gitea": "/repos/{owner}/{repo}/pulls",
          "gitlab": "/projects/{id}/merge_requests"}


def _open_one(env: ForgeEnv) -> int:
    env.push(BRANCH)
    return env.make().create(branch=BRANCH, base="main", title="t", body="", labels=()).number


def test_5xx_twice_then_success_is_retried(forge_env: ForgeEnv) -> None:
    number = _open_one(forge_env)
    forge_env.fake.inject("GET", GET[forge_env.kind], 500, times=1)
    forge_env.fake.inject("GET", GET[forge_env.kind], 502, times=1)
    assert forge_env.make().get(number).number == number
    assert forge_env.fake.count("GET", GET[forge_env.kind]) == 3


def test_5xx_on_create_is_retried_once_and_creates_one(forge_env: ForgeEnv) -> None:
    forge_env.push(BRANCH)
    forge_env.fake.inject("POST", CREATE[forge_env.kind], 503, times=1)
    pr = forge_env.make().create(branch=BRANCH, base="main", title="t", body="", labels=())
    assert forge_env.fake.count("POST", CREATE[forge_env.kind]) == 2
    assert list(forge_env.fake.prs) == [pr.number]


def test_429_with_retry_after_waits_and_retries(forge_env: ForgeEnv) -> None:
    number = _open_one(forge_env)
    forge_env.fake.inject("GET", GET[forge_env.kind], 429, times=1, headers=lambda: {"Retry-After": "1"})
    started = time.monotonic()
    assert forge_env.make().get(number).number == number
    assert time.monotonic() - started >= 0.95  # honoured the server's wait, not the 10 ms backoff
    assert forge_env.fake.count("GET", GET[forge_env.kind]) == 2


def test_github_403_primary_rate_limit_waits_for_reset(github_env: ForgeEnv) -> None:
    number = _open_one(github_env)
    template = GET["github"]
    github_env.fake.inject(
        "GET", template, 403, times=1,
        headers=lambda: {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 1),
                         "X-RateLimit-Limit": "5000"},
        body={"message": "API rate limit exceeded for user ID 1."},
    )
    started = time.monotonic()
    assert github_env.make().get(number).number == number
    assert time.monotonic() - started >= 0.95
    assert github_env.fake.count("GET", template) == 2


def test_github_403_secondary_rate_limit_with_retry_after(github_env: ForgeEnv) -> None:
    number = _open_one(github_env)
    github_env.fake.inject("GET", GET["github"], 403, times=1, headers=lambda: {"Retry-After": "0"},
                           body={"message": "You have exceeded a secondary rate limit."})
    assert github_env.make().get(number).number == number
    assert github_env.fake.count("GET", GET["github"]) == 2


def test_plain_403_is_a_permission_error_not_retried(github_env: ForgeEnv) -> None:
    number = _open_one(github_env)
    github_env.fake.inject("GET", GET["github"], 403, times=None,
                           body={"message": "Resource not accessible by integration"})
    with pytest.raises(ForgeError, match="HTTP 403.*Resource not accessible.*lacks permission"):
        github_env.make().get(number)
    assert github_env.fake.count("GET", GET["github"]) == 1


def test_persistent_5xx_gives_up_with_a_clear_message(forge_env: ForgeEnv) -> None:
    number = _open_one(forge_env)
    forge_env.fake.inject("GET", GET[forge_env.kind], 500, times=None, body={"message": "database is down"})
    with pytest.raises(ForgeError) as err:
        forge_env.make().get(number)
    message = str(err.value)
    assert f"get {'merge' if forge_env.kind == 'gitlab' else 'pull'} request" in message  # the operation
    assert "HTTP 500" in message and "database is down" in message  # the status and the forge's words
    assert "gave up after 3 attempts" in message
    assert "run again later" in message  # what to do next
    assert forge_env.fake.count("GET", GET[forge_env.kind]) == 3  # max_attempts, then stop


def test_404_and_401_are_not_retried(forge_env: ForgeEnv) -> None:
    with pytest.raises(ForgeError, match="HTTP 404"):
        forge_env.make().get(99)
    with pytest.raises(ForgeError, match="HTTP 401.*token was rejected"):
        forge_env.make(token="not-the-right-token").get(99)
    assert forge_env.fake.count("GET", GET[forge_env.kind]) == 2


def test_rate_limit_longer_than_budget_fails_fast(forge_env: ForgeEnv) -> None:
    number = _open_one(forge_env)
    forge_env.fake.inject("GET", GET[forge_env.kind], 429, times=None, headers=lambda: {"Retry-After": "3600"})
    started = time.monotonic()
    with pytest.raises(ForgeError, match=r"rate limit: the forge asks to wait 3600 s.*max_wait=5 s.*raise max_wait"):
        forge_env.make().get(number)
    assert time.monotonic() - started < 1
    assert forge_env.fake.count("GET", GET[forge_env.kind]) == 1


def test_rate_limit_that_persists_gives_up_after_max_attempts(forge_env: ForgeEnv) -> None:
    number = _open_one(forge_env)
    forge_env.fake.inject("GET", GET[forge_env.kind], 429, times=None, headers=lambda: {"Retry-After": "0"})
    with pytest.raises(ForgeError, match="HTTP 429, API rate limit: still limited after 3 attempts"):
        forge_env.make().get(number)


def test_connection_refused_is_retried_then_reported(forge_env: ForgeEnv) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    forge = forge_env.make(base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(ForgeError, match=r"network error.*ConnectError.*gave up after 3 attempts.*reachable"):
        forge.get(1)


def test_retries_are_logged(forge_env: ForgeEnv, caplog: pytest.LogCaptureFixture) -> None:
    number = _open_one(forge_env)
    forge_env.fake.inject("GET", GET[forge_env.kind], 503, times=1)
    with caplog.at_level("WARNING", logger="meshgen.forges"):
        forge_env.make().get(number)
    assert any("HTTP 503" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)


def test_read_timeout_on_get_is_retried(forge_env: ForgeEnv) -> None:
    number = _open_one(forge_env)
    forge_env.fake.inject("GET", GET[forge_env.kind], 0, times=1, delay=0.5)
    assert forge_env.make(timeout=0.2).get(number).number == number
    assert forge_env.fake.count("GET", GET[forge_env.kind]) == 2


def test_read_timeout_on_create_is_not_repeated(forge_env: ForgeEnv) -> None:
    """The forge may have created the pull request already; a blind retry would make a second one."""
    forge_env.push(BRANCH)
    forge_env.fake.inject("POST", CREATE[forge_env.kind], 0, times=1, delay=0.5)
    with pytest.raises(ForgeError, match="may or may not have been applied.*check the pull request"):
        forge_env.make(timeout=0.2).create(branch=BRANCH, base="main", title="t", body="", labels=())
    assert forge_env.fake.count("POST", CREATE[forge_env.kind]) == 1
