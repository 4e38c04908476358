"""The webhook router: signatures, replays, branch filter, payload shapes, one job per push."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from forges._schemas import ApiSpec
from sync_support import REDIS_DB_URL, RedisNS

from meshgen.api import deps
from meshgen.api.webhooks import router
from meshgen.records import JobRecord
from meshgen.settings import Settings

SECRET = "whsec_3f9a8b7c6d5e4f3a2b1c"
SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
GITHUB = ApiSpec("github-webhooks.json", "urn:meshgen-test:github-webhooks", openapi3=True)


def github_push(ref: str = "refs/heads/main", after: str = SHA) -> dict[str, Any]:
    schema = GITHUB.schema("webhook-push")
    payload = GITHUB.skeleton(schema)
    head = copy.deepcopy(schema["properties"]["head_commit"])
    head["type"] = "object"
    commit = GITHUB.skeleton(head)
    commit.update(id=after, message="tune cart split", author={"name": "Ada Lovelace", "email": "ada@example.com"})
    payload.update(ref=ref, after=after, head_commit=commit, commits=[commit])
    payload["repository"]["full_name"] = "acme/blueprints"
    payload["pusher"] = {"name": "ada", "email": "ada@example.com"}
    errors = GITHUB.errors(schema, payload)
    assert not errors, errors  # the payload is exactly what GitHub documents
    return payload


def gitlab_push(ref: str = "refs/heads/main") -> dict[str, Any]:
    return {"object_kind": "push", "event_name": "push", "ref": ref, "before": "0" * 40, "after": SHA,
            "checkout_sha": SHA, "user_name": "Ada", "project": {"path_with_namespace": "acme/blueprints"},
            "commits": [{"id": SHA, "message": "m", "author": {"name": "Ada Lovelace", "email": "a@x"}}]}


def gitea_push(ref: str = "refs/heads/main") -> dict[str, Any]:
    return {"ref": ref, "before": "0" * 40, "after": SHA, "repository": {"full_name": "acme/blueprints"},
            "pusher": {"login": "ada"}, "head_commit": {"id": SHA, "author": {"name": "Ada Lovelace"}},
            "commits": []}


def sign_github(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def sign_gitea(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Gitea-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def sign_gitlab(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Gitlab-Token": secret}


FORGES: dict[str, tuple[Any, Any, str, str, str]] = {
    # name: (payload, sign, event header, push event, delivery header)
    "github": (github_push, sign_github, "X-GitHub-Event", "push", "X-GitHub-Delivery"),
    "gitlab": (gitlab_push, sign_gitlab, "X-Gitlab-Event", "Push Hook", "X-Gitlab-Event-UUID"),
    "gitea": (gitea_push, sign_gitea, "X-Gitea-Event", "push", "X-Gitea-Delivery"),
}


class Client:
    def __init__(self, http: TestClient, queued: list[Any]) -> None:
        self.http = http
        self.queued = queued

    def post(self, forge: str, payload: dict[str, Any] | None = None, *, delivery: str | None = None,
             signed: bool = True, secret: str = SECRET, event: str | None = None) -> Any:
        make, sign, event_header, push_event, delivery_header = FORGES[forge]
        body = json.dumps(payload if payload is not None else make()).encode()
        headers = {"Content-Type": "application/json", event_header: event or push_event,
                   delivery_header: delivery or str(uuid.uuid4())}
        if signed:
            headers.update(sign(body, secret))
        return self.http.post(f"/api/v1/webhooks/{forge}", content=body, headers=headers)


@pytest.fixture
def client(rns: RedisNS) -> Iterator[Client]:
    settings = Settings(redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, webhook_secret_github=SECRET,
                        webhook_secret_gitlab=SECRET, webhook_secret_gitea=SECRET,
                        blueprints_repo="acme/blueprints")
    queued: list[Any] = []

    def enqueue(request: Any) -> JobRecord:
        queued.append(request)
        return JobRecord(id=f"job-{len(queued)}", trigger=request.trigger)

    app = FastAPI()
    app.include_router(router, prefix="/api/v1/webhooks")
    app.dependency_overrides[deps.get_settings] = lambda: settings
    app.dependency_overrides[deps.get_redis] = lambda: rns.client
    app.dependency_overrides[deps.get_enqueue] = lambda: enqueue
    with TestClient(app) as http:
        yield Client(http, queued)


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_valid_signature_enqueues_exactly_one_job(client: Client, forge: str) -> None:
    r = client.post(forge)
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "queued", "job": "job-1", "commit": SHA}
    assert len(client.queued) == 1
    request = client.queued[0]
    assert request.trigger == f"webhook:{forge}" and request.blueprint_commit == SHA
    assert request.blueprint_author == "Ada Lovelace"


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_missing_or_wrong_signature_is_401_and_enqueues_nothing(client: Client, forge: str) -> None:
    for response in (client.post(forge, signed=False), client.post(forge, secret="not-the-secret")):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 401 and "signature" in problem["detail"] and SECRET not in response.text
    assert client.queued == []


def test_body_tampered_after_signing_is_401(client: Client) -> None:
    body = json.dumps(github_push()).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d", **sign_github(body)}
    r = client.http.post("/api/v1/webhooks/github", content=body.replace(b"main", b"mainx"), headers=headers)
    assert r.status_code == 401 and client.queued == []


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_replayed_delivery_is_ignored(client: Client, forge: str) -> None:
    first = client.post(forge, delivery="delivery-42")
    replay = client.post(forge, delivery="delivery-42")
    assert first.json()["status"] == "queued"
    assert replay.status_code == 202 and replay.json()["status"] == "duplicate"
    assert len(client.queued) == 1


def test_gitlab_prefers_the_retry_stable_idempotency_key(client: Client) -> None:
    body = json.dumps(gitlab_push()).encode()
    for uuid_header in ("u-1", "u-2"):  # GitLab 17.4+: a retry has a new UUID but the same key
        headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET, "Idempotency-Key": "key-1",
                   "X-Gitlab-Webhook-UUID": uuid_header}
        client.http.post("/api/v1/webhooks/gitlab", content=body, headers=headers)
    assert len(client.queued) == 1


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_only_the_configured_branch_triggers(client: Client, forge: str) -> None:
    r = client.post(forge, FORGES[forge][0](ref="refs/heads/feature"))
    assert r.status_code == 202 and r.json()["status"] == "ignored" and "blueprints branch" in r.json()["reason"]
    assert client.queued == []


def test_other_repository_and_deleted_branch_are_ignored(client: Client) -> None:
    other = github_push()
    other["repository"]["full_name"] = "mallory/blueprints"
    assert client.post("github", other).json()["status"] == "ignored"
    assert client.post("github", github_push(after="0" * 40)).json()["status"] == "ignored"
    assert client.queued == []


def test_non_push_events_and_ping(client: Client) -> None:
    assert client.post("github", {"zen": "hi"}, event="ping").json() == {"status": "pong"}
    assert client.post("github", event="issues").json()["status"] == "ignored"
    assert client.post("gitlab", event="Merge Request Hook").json()["status"] == "ignored"
    assert client.queued == []


def test_unconfigured_secret_refuses(rns: RedisNS) -> None:
    app = FastAPI()
    app.include_router(router, prefix="/api/v1/webhooks")
    app.dependency_overrides[deps.get_settings] = lambda: Settings(redis_url=REDIS_DB_URL, redis_prefix=rns.prefix)
    app.dependency_overrides[deps.get_redis] = lambda: rns.client
    app.dependency_overrides[deps.get_enqueue] = lambda: pytest.fail  # must not be called
    with TestClient(app) as http:
        body = json.dumps(github_push()).encode()
        r = http.post("/api/v1/webhooks/github", content=body, headers={"X-GitHub-Event": "push", **sign_github(body)})
    assert r.status_code == 401 and "MESHGEN_WEBHOOK_SECRET_GITHUB" in r.json()["detail"]


def test_enqueue_failure_forgets_the_delivery_so_a_retry_counts(client: Client, rns: RedisNS) -> None:
    calls: list[Any] = []

    def broken(request: Any) -> JobRecord:
        calls.append(request)
        if len(calls) == 1:
            raise ConnectionError("broker down")
        return JobRecord(id="job-ok")

    client.http.app.dependency_overrides[deps.get_enqueue] = lambda: broken  # type: ignore[attr-defined]
    assert client.post("github", delivery="d-7").status_code == 503
    assert client.post("github", delivery="d-7").json() == {"status": "queued", "job": "job-ok", "commit": SHA}


def test_real_enqueue_records_a_queued_job_and_sends_one_task(rns: RedisNS) -> None:
    """The default get_enqueue: a queued JobRecord and one message on the broker queue."""
    settings = Settings(redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, webhook_secret_github=SECRET,
                        queue=rns.prefix.replace(":", "-") + "q", sync_debounce=0)
    app = FastAPI()
    app.include_router(router, prefix="/api/v1/webhooks")
    app.dependency_overrides[deps.get_settings] = lambda: settings
    app.dependency_overrides[deps.get_redis] = lambda: rns.client
    with TestClient(app) as http:
        body = json.dumps(github_push()).encode()
        r = http.post("/api/v1/webhooks/github", content=body,
                      headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "x", **sign_github(body)})
    assert r.status_code == 202, r.text
    job = rns.records.get_job(r.json()["job"])
    assert job is not None and job.state == "queued" and job.trigger == "webhook:github"
    assert job.blueprint_commit == SHA and job.blueprint_author == "Ada Lovelace"
    assert rns.client.llen(f"{rns.prefix}{settings.queue}") == 1
