"""The API and the webhooks under attack: authentication before anything is parsed, body limits
before anything is read, malformed signed payloads refused with 400, and the signature and token
cases that held (kept so they keep holding).

A real uvicorn server on a loopback port takes the raw-socket cases (a 1 GB Content-Length
never sent, a chunked body that does not stop); the rest goes through Starlette's TestClient.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_support import REDIS_DB_URL, redis_namespace

from meshgen.api.app import create_app
from meshgen.api.limits import MAX_API_BODY, MAX_WEBHOOK_BODY
from meshgen.records import JobRecord
from meshgen.settings import Settings

READ, WRITE, SECRET = "read-token-0123456789", "write-token-0123456789", "whsec_0123456789abcdef"
SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
CONFIG = "environments:\n  staging: {}\n  production-eu: {}\n"


class Queue:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> JobRecord:
        self.requests.append(request)
        return JobRecord(id=f"job-{len(self.requests)}", trigger=request.trigger)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FastAPI, Queue]]:
    (tmp_path / "meshgen.yaml").write_text(CONFIG)
    with redis_namespace("security-api") as ns:
        settings = Settings(root=tmp_path, redis_url=REDIS_DB_URL,
                            redis_prefix=ns.prefix, api_read_tokens=READ, api_write_tokens=WRITE,
                            webhook_secret_github=SECRET, webhook_secret_gitlab=SECRET, webhook_secret_gitea=SECRET)
        queue = Queue()
        yield create_app(settings, records=ns.records, enqueue=queue), queue


@pytest.fixture
def client(api: tuple[FastAPI, Queue]) -> Iterator[TestClient]:
    with TestClient(api[0]) as http:
        yield http


@pytest.fixture
def server(api: tuple[FastAPI, Queue]) -> Iterator[int]:
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(api[0], host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield port
    srv.should_exit = True
    thread.join(10)


def raw(port: int, head: str, body_chunks: Iterator[bytes] = iter(())) -> tuple[int, bytes]:
    """Send a request head (and chunks while the server still listens); the status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what a limit looks like from here
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


# ---- 8. authenticate before parsing -----------------------------------------------------------

@pytest.mark.parametrize("body", [b'{"env": "nope"}', b"{not json", b'{"env": ' * 5000, b"[]", b'{"x": 1}'])
def test_anonymous_sync_request_is_401_whatever_the_body(client: TestClient, api: tuple[FastAPI, Queue],
                                                         body: bytes) -> None:
    r = client.post("/api/v1/syncs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401, r.text
    assert "staging" not in r.text and "production-eu" not in r.text  # nothing about meshgen.yaml
    assert api[1].requests == []


def test_read_token_cannot_queue_and_learns_nothing(client: TestClient, api: tuple[FastAPI, Queue]) -> None:
    r = client.post("/api/v1/syncs", json={"env": "nope"}, headers={"Authorization": f"Bearer {READ}"})
    assert r.status_code == 403 and "production-eu" not in r.text and api[1].requests == []


def test_write_token_gets_validation_and_a_job(client: TestClient, api: tuple[FastAPI, Queue]) -> None:
    auth = {"Authorization": f"Bearer {WRITE}"}
    bad = client.post("/api/v1/syncs", json={"env": "nope"}, headers=auth)
    assert bad.status_code == 422 and "production-eu" in bad.text
    assert client.post("/api/v1/syncs", content=b"{not json", headers=auth).status_code == 422
    ok = client.post("/api/v1/syncs", json={"env": "staging"}, headers=auth)
    assert ok.status_code == 202 and ok.headers["Location"] == "/api/v1/jobs/job-1"
    assert client.post("/api/v1/syncs", headers=auth).status_code == 202  # no body: every environment
    assert [r.env for r in api[1].requests] == ["staging", None]


# ---- API auth cases that held ---------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {READ}", f"bearer{READ}",
                                    f"Bearer {READ[:-1]}", f"Bearer {READ}x", f"Bearer {READ.upper()}",
                                    "Bearer " + "a" * 8000, f"Bearer {SECRET}", "Bearer \x00"])
@pytest.mark.parametrize("path", ["/api/v1/rollouts", "/api/v1/jobs/j1", "/metrics", "/"])
def test_read_endpoints_refuse_missing_or_wrong_tokens(client: TestClient, header: str | None, path: str) -> None:
    r = client.get(path, headers={} if header is None else {"Authorization": header})
    assert r.status_code == 401, (path, header, r.status_code)
    assert r.headers["content-type"] == "application/problem+json" and READ not in r.text


@given(token=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_no_other_token_reads(client: TestClient, token: str) -> None:
    if token.strip() in (READ, WRITE):
        return
    header = f"Bearer {token}".encode()  # any bytes a client can send in a header
    r = client.get("/api/v1/rollouts", headers={"Authorization": header})
    assert r.status_code == 401


# ---- 9. body limits before reading ---------------------------------------------------------------

def test_a_1gb_content_length_is_refused_before_the_body_is_sent(server: int) -> None:
    for path in ("/api/v1/webhooks/github", "/api/v1/syncs"):
        status, body = raw(server, f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                   f"Content-Length: {1 << 30}\n")  # and not one byte of it
        assert status == 413, body
        assert json.loads(body)["status"] == 413


def test_an_unsigned_webhook_is_refused_before_its_body_is_read(server: int) -> None:
    # 10 MB announced (under the limit) and never sent: an answer at all proves nothing waited for it.
    for forge, event in (("github", "X-GitHub-Event: push"), ("gitea", "X-Gitea-Event: push"),
                         ("gitlab", "X-Gitlab-Event: Push Hook"), ("github/env-repo", "X-GitHub-Event: pull_request"),
                         ("gitea/env-repo", "X-Gitea-Event: pull_request"),
                         ("gitlab/env-repo", "X-Gitlab-Event: Merge Request Hook")):
        status, body = raw(server, f"POST /api/v1/webhooks/{forge} HTTP/1.1\nHost: x\n{event}\n"
                                   "Content-Type: application/json\nContent-Length: 10000000\n")
        assert status == 401, (forge, body)


def _chunked(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield f"{n:x}\r\n".encode() + b"a" * n + b"\r\n"
        sent += n
    yield b"0\r\n\r\n"


def test_a_chunked_webhook_body_over_25mb_is_refused(server: int) -> None:
    status, body = raw(server, "POST /api/v1/webhooks/github HTTP/1.1\nHost: x\nX-GitHub-Event: push\n"
                               "X-Hub-Signature-256: sha256=00\nTransfer-Encoding: chunked\n",
                       _chunked(MAX_WEBHOOK_BODY + (1 << 20)))
    assert status == 413, body


def test_a_chunked_api_body_over_the_limit_is_refused(server: int, api: tuple[FastAPI, Queue]) -> None:
    status, body = raw(server, f"POST /api/v1/syncs HTTP/1.1\nHost: x\nAuthorization: Bearer {WRITE}\n"
                               "Content-Type: application/json\nTransfer-Encoding: chunked\n",
                       _chunked(MAX_API_BODY + 1, 4096))
    assert status == 413, body
    assert api[1].requests == []


def test_a_body_under_the_limit_still_works(client: TestClient) -> None:
    body = json.dumps({"env": "staging", "blueprint_commit": None}).encode() + b" " * (MAX_API_BODY - 100)
    r = client.post("/api/v1/syncs", content=body, headers={"Authorization": f"Bearer {WRITE}",
                                                            "Content-Type": "application/json"})
    assert r.status_code == 202, r.text


# ---- webhooks: signatures, then payloads ---------------------------------------------------------

def _github_sig(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _push(**changes: Any) -> dict[str, Any]:
    payload = {"ref": "refs/heads/main", "after": SHA, "repository": {"full_name": "acme/blueprints"},
               "head_commit": {"id": SHA, "author": {"name": "Ada"}}, "pusher": {"name": "ada"}}
    payload.update(changes)
    return payload


def _post_github(client: TestClient, body: bytes, signature: str | None, event: str = "push") -> Any:
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(time.monotonic_ns())}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return client.post("/api/v1/webhooks/github", content=body, headers=headers)


BODY = json.dumps(_push()).encode()


@pytest.mark.parametrize("signature", [
    None, "", "sha256=", "sha256=" + "0" * 64, _github_sig(BODY, "wrong-secret"), _github_sig(BODY + b" "),
    _github_sig(BODY)[:-2], _github_sig(BODY).replace("sha256=", "sha1="), _github_sig(BODY).replace("sha256=", ""),
    " " + _github_sig(BODY) + "x", "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest(),
])
def test_github_signature_cases_are_401_and_queue_nothing(client: TestClient, api: tuple[FastAPI, Queue],
                                                          signature: str | None) -> None:
    r = _post_github(client, BODY, signature)
    assert r.status_code == 401 and SECRET not in r.text
    assert api[1].requests == []


@pytest.mark.parametrize(("forge", "headers"), [
    ("gitlab", {}), ("gitlab", {"X-Gitlab-Token": ""}), ("gitlab", {"X-Gitlab-Token": SECRET[:-1]}),
    ("gitlab", {"X-Gitlab-Token": SECRET + " "}),
    ("gitea", {}), ("gitea", {"X-Gitea-Signature": "0" * 64}),
    ("gitea", {"X-Gitea-Signature": hmac.new(b"x", BODY, hashlib.sha256).hexdigest()}),
])
def test_gitlab_and_gitea_signature_cases_are_401(client: TestClient, api: tuple[FastAPI, Queue], forge: str,
                                                  headers: dict[str, str]) -> None:
    event = {"gitlab": ("X-Gitlab-Event", "Push Hook"), "gitea": ("X-Gitea-Event", "push")}[forge]
    r = client.post(f"/api/v1/webhooks/{forge}", content=BODY, headers={event[0]: event[1], **headers})
    assert r.status_code == 401 and api[1].requests == []


def test_the_signed_push_is_queued(client: TestClient, api: tuple[FastAPI, Queue]) -> None:
    r = _post_github(client, BODY, _github_sig(BODY))
    assert r.status_code == 202, r.text
    assert [q.blueprint_commit for q in api[1].requests] == [SHA]


@pytest.mark.parametrize("payload", [
    _push(after=12345), _push(after={"sha": SHA}), _push(after=[SHA]), _push(after="not-a-commit"),
    _push(after=SHA + "\n/tmp/x"), _push(ref=["refs/heads/main"]), _push(repository={"full_name": 5}),
    _push(repository="acme/blueprints"), _push(head_commit="x"), [1, 2, 3], "push", None, 7,
])
def test_malformed_signed_payloads_are_400(client: TestClient, api: tuple[FastAPI, Queue], payload: Any) -> None:
    body = json.dumps(payload).encode()
    r = _post_github(client, body, _github_sig(body))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json" and api[1].requests == []


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"after": ' + b"9" * 5000 + b"}",
                                  b"\xff\xfe not utf-8", b""])
def test_hostile_signed_bodies_are_400_or_401(client: TestClient, api: tuple[FastAPI, Queue], body: bytes) -> None:
    r = _post_github(client, body, _github_sig(body))
    assert r.status_code in (400, 401), r.text  # an empty body has nothing signed: 401
    assert api[1].requests == []


@given(after=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=80),
                       st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                                                                   max_size=3)))
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_any_signed_after_value_is_queued_only_when_it_is_a_commit(client: TestClient, api: tuple[FastAPI, Queue],
                                                                   after: Any) -> None:
    before = len(api[1].requests)
    body = json.dumps(_push(after=after)).encode()
    r = _post_github(client, body, _github_sig(body))
    assert r.status_code in (202, 400), r.text
    if r.status_code == 202 and r.json()["status"] == "queued":
        assert isinstance(after, str) and len(after) == 40 and int(after, 16) >= 0
    else:
        assert len(api[1].requests) == before


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"action": "opened", "number": "x"}',
                                  b'{"action": "opened", "pull_request": []}', b"7"])
def test_malformed_signed_pull_request_events_are_400(tmp_path: Path, body: bytes) -> None:
    (tmp_path / "meshgen.yaml").write_text(CONFIG)
    with redis_namespace("security-plan") as ns:
        settings = Settings(root=tmp_path, redis_url=REDIS_DB_URL, redis_prefix=ns.prefix,
                            webhook_secret_github=SECRET, blueprints_url=str(tmp_path / "bp.git"),
                            blueprints_forge_url="http://127.0.0.1:9")
        with TestClient(create_app(settings, records=ns.records, enqueue=Queue())) as http:
            r = _post_github(http, body, _github_sig(body), event="pull_request")
    assert r.status_code == 400, r.text
