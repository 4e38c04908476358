"""A fifth forge is one module plus one registration line: a toy forge, registered in-process,
is picked up by every place that derives from meshgen.forges.registry with no edit elsewhere.

meshgen.yaml (kind, required fields, file:line errors, the config schema), the provider a sync
builds, the HTTPS git credential, the webhook secret MESHGEN_WEBHOOK_SECRET_TOY[_FILE], the
webhook route /api/v1/webhooks/toy (verified, then a real sync job queued through Celery in
Redis), the settings table, and the 404 for kinds nobody registered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sync_support import REDIS_DB_URL, RedisNS

from meshgen.api import deps
from meshgen.api.prhooks import router as prhooks_router
from meshgen.api.webhooks import router
from meshgen.blueprint.loading import load_config
from meshgen.blueprint.schema import blueprint_schema
from meshgen.diagnostics import BlueprintError
from meshgen.docs import settings_table_markdown
from meshgen.forges import FORGES, Forge, make_forge
from meshgen.forges.base import (
    ForgeError,
    ForgeSpec,
    ForgeTarget,
    GitCredential,
    Identity,
    PRState,
    PullRequest,
    Push,
    WebhookSpec,
    verify_hmac_sha256,
)
from meshgen.gitops.sync import forge_from_config
from meshgen.gitops.transport import env_repo_access
from meshgen.records import Records
from meshgen.settings import Settings

SECRET = "toy-webhook-secret-1f2e3d"
SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


# ---- the whole toy forge: what a contributor writes in meshgen/forges/toy.py --------------------


class ToyForge:
    """Pull requests kept in memory; enough of the Forge protocol to be built and asked."""

    kind: ClassVar[str] = "toy"

    def __init__(self, base_url: str, project: str, *, token: str | None = None, token_env: str | None = None,
                 token_file: str | None = None) -> None:
        if token is None:
            raise ForgeError("the toy forge needs a token")
        self.base_url, self.project, self._token = base_url, project, token
        self._prs: dict[int, PullRequest] = {}

    def find_open(self, branch: str) -> PullRequest | None:
        return next((p for p in self._prs.values() if p.branch == branch and p.state == "open"), None)

    def create(self, *, branch: str, base: str, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        number = len(self._prs) + 1
        self._prs[number] = PullRequest(number, title, body, "open", branch, base, "", None,
                                        f"{self.base_url}/{self.project}/pr/{number}", labels)
        return self._prs[number]

    def update(self, number: int, *, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        return self._prs[number]

    def comment(self, number: int, body: str) -> None:
        pass

    def close(self, number: int, *, comment: str | None = None) -> PullRequest:
        return self._prs[number]

    def merge(self, number: int) -> PullRequest:
        return self._prs[number]

    def get(self, number: int) -> PullRequest:
        return self._prs[number]

    def list(self, state: PRState | None = None) -> list[PullRequest]:
        return [p for p in self._prs.values() if state is None or p.state == state]

    def check_access(self) -> str:
        return f"toy project {self.project}"

    def git_credential(self) -> GitCredential:
        return GitCredential(TOY.git_username or "", lambda: self._token)


def _toy_push(p: Any) -> Push:
    return Push(p["project"], p["ref"], p["sha"], p.get("who"))


TOY = ForgeSpec(
    kind="toy",
    title="Toy",
    provider=ToyForge,
    build=lambda t: ToyForge(t.fields["baseUrl"], t.fields["project"], **t.credentials),
    required=("baseUrl", "project"),
    git_username="toy-user",
    repository=lambda fields: str(fields["project"]),
    webhook=WebhookSpec(
        signature_header="x-toy-signature",
        verify=verify_hmac_sha256("x-toy-signature"),
        event_header="x-toy-event",
        delivery_headers=("x-toy-delivery",),
        push_events=("push",),
        parse_push=_toy_push,
        secret_help="Secret for X-Toy-Signature.",
    ),
)


# ---- the one registration line, in-process -----------------------------------------------------


@pytest.fixture(autouse=True)
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForgeSpec]:
    monkeypatch.setitem(FORGES, "toy", TOY)
    yield TOY


def _root(tmp: Path, forge: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "meshgen.yaml").write_text(
        "environments:\n  staging: {mesh: istio}\n"
        "envRepo:\n  url: https://toy.example/acme/env.git\n"
        f"  forge:\n{forge}")
    return tmp


def test_meshgen_yaml_takes_the_kind_and_asks_for_its_fields(tmp_path: Path) -> None:
    config, _ = load_config(_root(tmp_path / "ok", "    kind: toy\n    baseUrl: https://toy.example\n"
                                                   "    project: acme/env\n"))
    assert config.env_repo.forge.kind == "toy"
    assert config.env_repo.forge.fields() == {"baseUrl": "https://toy.example", "project": "acme/env"}

    with pytest.raises(BlueprintError) as missing:
        load_config(_root(tmp_path / "missing", "    kind: toy\n    baseUrl: https://toy.example\n"))
    assert [str(d) for d in missing.value.diagnostics] == [
        "meshgen.yaml:5:3: envRepo.forge: forge kind 'toy' needs project"]

    with pytest.raises(BlueprintError) as unknown:
        load_config(_root(tmp_path / "unknown", "    kind: bitbucket\n"))
    message = str(unknown.value.diagnostics[0])
    assert message.startswith("meshgen.yaml:6:5: envRepo.forge.kind: ") and "one of: local, github, gitlab, gitea, toy" in message

    forge_schema = blueprint_schema("config")["$defs"]["ForgeSettings"]["properties"]["kind"]
    assert forge_schema["enum"] == ["local", "github", "gitlab", "gitea", "toy"]


def test_the_provider_and_its_git_credential_come_from_the_registration(tmp_path: Path) -> None:
    root = _root(tmp_path, "    kind: toy\n    baseUrl: https://toy.example\n    project: acme/env\n")
    config, _ = load_config(root)
    settings = Settings(root=root, forge_token="toy-token")
    forge = forge_from_config(root, config, settings, local_path=None, identity=Identity())
    assert isinstance(forge, ToyForge) and isinstance(forge, Forge)
    assert (forge.base_url, forge.project) == ("https://toy.example", "acme/env")
    assert isinstance(make_forge("toy", base_url="u", project="p", token="t"), ToyForge)

    access = env_repo_access(root, config, settings, forge)  # HTTPS git for envRepo.url: the forge's token
    assert access is not None and access.credential is not None
    assert (access.credential.username, access.credential.token()) == ("toy-user", "toy-token")


def test_settings_and_docs_have_its_webhook_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHGEN_WEBHOOK_SECRET_TOY", "from-the-variable")
    assert Settings().webhook_secret("toy").get_secret_value() == "from-the-variable"  # type: ignore[union-attr]
    secret_file = tmp_path / "toy-secret"
    secret_file.write_text("from-the-file\n")
    monkeypatch.setenv("MESHGEN_WEBHOOK_SECRET_TOY_FILE", str(secret_file))
    assert Settings().webhook_secret("toy").get_secret_value() == "from-the-file"  # type: ignore[union-attr]
    assert ("| `webhook_secret_toy` | `MESHGEN_WEBHOOK_SECRET_TOY` or `MESHGEN_WEBHOOK_SECRET_TOY_FILE` | — | "
            "Secret for X-Toy-Signature. |") in settings_table_markdown()


@pytest.fixture
def http(rns: RedisNS, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The webhook routers with the real dependencies: settings from the environment, Redis, Celery."""
    monkeypatch.setenv("MESHGEN_WEBHOOK_SECRET_TOY", SECRET)
    settings = Settings(redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, queue="toy-sync",
                        sync_debounce=0, blueprints_repo="acme/blueprints")
    app = FastAPI()
    app.include_router(router, prefix="/api/v1/webhooks")
    app.include_router(prhooks_router, prefix="/api/v1/webhooks")
    app.dependency_overrides[deps.get_settings] = lambda: settings
    with TestClient(app) as client:
        yield client


def _post(http: TestClient, kind: str, payload: dict[str, Any], secret: str = SECRET, suffix: str = "",
          event: str = "push") -> Any:
    body = json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return http.post(f"/api/v1/webhooks/{kind}{suffix}", content=body, headers={
        "Content-Type": "application/json", "X-Toy-Event": event, "X-Toy-Delivery": "d-1",
        "X-Toy-Signature": signature})


def test_its_webhook_route_verifies_and_queues_a_sync(http: TestClient, rns: RedisNS) -> None:
    push = {"project": "acme/blueprints", "ref": "refs/heads/main", "sha": SHA, "who": "Ada"}

    wrong = _post(http, "toy", push, secret="not-it")
    assert wrong.status_code == 401 and "MESHGEN_WEBHOOK_SECRET_TOY" in wrong.json()["detail"]
    assert SECRET not in wrong.text

    r = _post(http, "toy", push)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["status"] == "queued" and answer["commit"] == SHA
    job = Records(rns.client, rns.prefix).get_job(answer["job"])
    assert job is not None and (job.trigger, job.state, job.blueprint_author) == ("webhook:toy", "queued", "Ada")
    assert rns.client.llen(f"{rns.prefix}toy-sync") == 1  # the Celery message waits for a worker (keys prefixed)

    assert _post(http, "toy", push).json() == {"status": "duplicate", "delivery": "d-1"}  # same delivery id
    # no pull-request events registered: acknowledged, nothing parsed
    ignored = _post(http, "toy", push, suffix="/env-repo", event="pull_request")
    assert ignored.status_code == 202 and ignored.json()["status"] == "ignored"


@pytest.mark.parametrize("suffix", ["", "/env-repo"])
def test_unknown_kinds_are_404_problems(http: TestClient, suffix: str) -> None:
    r = _post(http, "bitbucket", {"any": "thing"}, suffix=suffix)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "no webhooks for forge kind 'bitbucket'; forges with webhooks: github, gitlab, gitea, toy"
    assert _post(http, "local", {}, suffix=suffix).status_code == 404  # registered, but without webhooks


@pytest.mark.parametrize("kind", ["x" * 5000, "git%0Ahub%1B%5B31m", "%E2%80%AEbuhtig", "%2E%2E"])
def test_hostile_kinds_are_bounded_inert_404s(http: TestClient, kind: str) -> None:
    """The kind is a path segment anyone can send: it never reaches a forge, and the problem echoes at most
    40 characters of it, escaped (no newline or terminal escape comes back)."""
    r = _post(http, kind, {"any": "thing"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert detail.startswith("no webhooks for forge kind ") and len(detail) < 200
    assert not any(ch in detail for ch in "\n\x1b\u202e")


def test_a_kind_that_climbs_out_of_the_webhooks_path_reaches_no_route(http: TestClient, rns: RedisNS) -> None:
    r = _post(http, "..%2F..%2Fsyncs", {"env": "production"})
    assert r.status_code == 404
    assert rns.client.keys(f"{rns.prefix}*") == []  # nothing queued, nothing remembered


def test_a_kind_cannot_be_registered_twice_or_oddly_named() -> None:
    from meshgen.forges.registry import _register

    with pytest.raises(ValueError, match="registered twice"):
        _register(TOY, TOY)
    with pytest.raises(ValueError, match="lower-case identifier"):
        _register(ForgeSpec(kind="Bit-Bucket", title="x", provider=ToyForge, build=lambda t: ToyForge("", "")))
    assert isinstance(ForgeTarget(fields={}, credentials={}, local_path=None, identity=Identity()), ForgeTarget)
