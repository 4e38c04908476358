"""GitHub App authentication against the fake GitHub on loopback.

The fake verifies the app JWT with the app's public key and checks iss/iat/exp against its clock;
installation tokens expire on that same clock. Tests move the clock instead of sleeping.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshgen.blueprint.config import Config
from meshgen.gitops.envrepo import EnvRepo, EnvRepoError, Identity
from meshgen.forges.base import ForgeError
from meshgen.forges.github import GitHubForge
from meshgen.forges.github_app import GitHubApp, InstallationTokens
from meshgen.gitops.sync import forge_from_config
from meshgen.gitops.transport import RemoteAccess
from meshgen.settings import Settings

from ._github_fake import _APP_TOKENS, GitHubFake
from ._gitrepo import BareRepo, push_files
from .conftest import FAST, TOKEN

APP_ID = "424242"
INSTALLATION = 31337


class Clock:
    """Epoch seconds that only move when a test says so (shared by meshgen and the fake)."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path, app_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(_pem(app_key))
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(bare_repo: BareRepo, app_key: rsa.RSAPrivateKey, clock: Clock) -> Iterator[GitHubFake]:
    server = GitHubFake(bare_repo, TOKEN)
    server.enable_app(APP_ID, INSTALLATION, app_key.public_key(), clock=clock)
    server.start()
    yield server
    server.stop()
    assert not server.violations, "\n".join(server.violations)


def _forge(fake: GitHubFake, key_file: Path, clock: Clock, **app: Any) -> GitHubForge:
    settings = {"app_id": APP_ID, "installation_id": INSTALLATION, "private_key_file": key_file,
                "clock": clock, **app}
    return GitHubForge("acme", "env", base_url=fake.url, app=GitHubApp(**settings), **FAST)


def _exchanges(fake: GitHubFake) -> int:
    return fake.count("POST", _APP_TOKENS)


def test_pull_requests_as_an_app_installation(fake: GitHubFake, bare_repo: BareRepo, key_file: Path,
                                              clock: Clock) -> None:
    bare_repo.commit_files("meshgen/a", {"a.yaml": "a: 1\n"}, "a", start="main")
    with _forge(fake, key_file, clock) as forge:
        pr = forge.create(branch="meshgen/a", base="main", title="t", body="b", labels=("meshgen",))
        assert forge.get(pr.number).labels == ("meshgen",)
        assert forge.find_open("meshgen/a") == forge.get(pr.number)
        # One JWT exchange served every call; the token GitHub minted is what the calls used.
        assert _exchanges(fake) == 1
        assert fake.jwt_rejections == []
        assert list(fake.app_tokens) == [forge.app_tokens.reveal()]  # type: ignore[union-attr]
        assert dict(forge.app_tokens.permissions)["pull_requests"] == "write"  # type: ignore[union-attr]


def test_forges_of_one_process_share_the_token(fake: GitHubFake, key_file: Path, clock: Clock) -> None:
    """A worker builds a forge per sync: they reuse one installation token until it is due."""
    with _forge(fake, key_file, clock) as first, _forge(fake, key_file, clock) as second:
        assert first.list() == [] and second.list() == []
        assert first.app_tokens is second.app_tokens
        assert _exchanges(fake) == 1
        clock.advance(56 * 60)
        second.list()
        first.list()
        assert _exchanges(fake) == 2
    # a rotated key file (new content) starts afresh
    key_file.write_bytes(key_file.read_bytes() + b"\n")
    with _forge(fake, key_file, clock) as third:
        assert third.app_tokens is not first.app_tokens
        third.list()
        assert _exchanges(fake) == 3


def test_token_is_refreshed_before_it_expires(fake: GitHubFake, bare_repo: BareRepo, key_file: Path,
                                              clock: Clock) -> None:
    bare_repo.commit_files("meshgen/a", {"a.yaml": "a: 1\n"}, "a", start="main")
    with _forge(fake, key_file, clock) as forge:
        number = forge.create(branch="meshgen/a", base="main", title="t", body="", labels=()).number
        first = forge.app_tokens.reveal()  # type: ignore[union-attr]
        clock.advance(54 * 60)  # 6 minutes left: still used
        forge.get(number)
        assert _exchanges(fake) == 1
        clock.advance(2 * 60)  # 4 minutes left, inside the 5-minute margin: a new one is minted
        forge.get(number)
        assert _exchanges(fake) == 2
        second = forge.app_tokens.reveal()  # type: ignore[union-attr]
        assert second != first
        clock.advance(5 * 60)  # the first token has expired now: the fake refuses it ...
        stale = httpx.get(f"{fake.url}/repos/acme/env/pulls/{number}", headers={"Authorization": f"Bearer {first}"})
        assert stale.status_code == 401
        forge.get(number)  # ... while meshgen works on with the second
        assert _exchanges(fake) == 2
        assert fake.jwt_rejections == []


def test_revoked_token_is_replaced_on_the_next_call(fake: GitHubFake, bare_repo: BareRepo, key_file: Path,
                                                    clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bare_repo.commit_files("meshgen/a", {"a.yaml": "a: 1\n"}, "a", start="main")
    with _forge(fake, key_file, clock) as forge:
        number = forge.create(branch="meshgen/a", base="main", title="t", body="", labels=()).number
        revoked = forge.app_tokens.reveal()  # type: ignore[union-attr]
        fake.expire_app_tokens()
        with pytest.raises(ForgeError) as err:
            forge.get(number)
        # The fake echoes the presented credential in its 401 body; meshgen scrubs it.
        assert "401" in str(err.value) and revoked not in str(err.value)
        assert f"GitHub App {APP_ID}" in str(err.value)
        assert forge.get(number).number == number
        assert _exchanges(fake) == 2
        fresh = forge.app_tokens.reveal()  # type: ignore[union-attr]
    for record in caplog.records:
        text = logging.Formatter("%(name)s %(message)s").format(record)
        assert revoked not in text and fresh not in text


def test_one_exchange_when_threads_ask_at_once(fake: GitHubFake, key_file: Path, clock: Clock) -> None:
    tokens = InstallationTokens(GitHubApp(APP_ID, INSTALLATION, key_file, clock=clock), fake.url, timeout=5.0)
    barrier = threading.Barrier(8)
    seen: list[str] = []

    def ask() -> None:
        barrier.wait()
        seen.append(tokens.reveal())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tokens.close()
    assert len(seen) == 8 and len(set(seen)) == 1
    assert _exchanges(fake) == 1


def test_the_jwt_follows_githubs_rules(fake: GitHubFake, key_file: Path, clock: Clock,
                                       app_key: rsa.RSAPrivateKey) -> None:
    tokens = InstallationTokens(GitHubApp(APP_ID, INSTALLATION, key_file, clock=clock), fake.url, timeout=5.0)
    signed = tokens._sign()
    header = jwt.get_unverified_header(signed)
    claims = jwt.decode(signed, app_key.public_key(), algorithms=["RS256"],
                        options={"verify_exp": False, "verify_iat": False})
    assert header["alg"] == "RS256"
    assert claims == {"iss": APP_ID, "iat": int(clock.now) - 60, "exp": int(clock.now) + 540}
    tokens.close()


@pytest.mark.parametrize("claims, why", [
    ({"iss": APP_ID, "iat": -60, "exp": 3600}, "exp is more than 10 minutes ahead"),
    ({"iss": APP_ID, "iat": -700, "exp": -10}, "exp is in the past"),
    ({"iss": APP_ID, "iat": 120, "exp": 500}, "iat is in the future"),
    ({"iss": "999", "iat": -60, "exp": 500}, "InvalidIssuerError: Invalid issuer"),
])
def test_the_fake_refuses_bad_jwts(fake: GitHubFake, clock: Clock, app_key: rsa.RSAPrivateKey,
                                   claims: dict[str, Any], why: str) -> None:
    """The fake is no rubber stamp: what GitHub would refuse, it refuses."""
    payload = {k: (int(clock.now) + v if k != "iss" else v) for k, v in claims.items()}
    signed = jwt.encode(payload, app_key, algorithm="RS256")
    answer = httpx.post(f"{fake.url}/app/installations/{INSTALLATION}/access_tokens",
                        headers={"Authorization": f"Bearer {signed}"})
    assert answer.status_code == 401
    assert fake.jwt_rejections == [why]
    assert fake.app_tokens == {}


def test_wrong_private_key_is_a_clear_error(fake: GitHubFake, tmp_path: Path, clock: Clock) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with _forge(fake, other, clock) as forge, pytest.raises(ForgeError) as err:
        forge.get(1)
    message = str(err.value)
    assert "HTTP 401" in message and "JWT" in message
    assert "MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE" in message and "envRepo.forge.app.id" in message
    assert fake.jwt_rejections and fake.jwt_rejections[0].startswith("InvalidSignatureError")


def test_app_not_installed_is_a_clear_error(fake: GitHubFake, key_file: Path, clock: Clock) -> None:
    with _forge(fake, key_file, clock, installation_id=1) as forge, pytest.raises(ForgeError) as err:
        forge.get(1)
    message = str(err.value)
    assert "HTTP 404" in message and "installation 1 of app 424242 was not found" in message
    assert "envRepo.forge.app.installationId" in message


def test_bad_key_files(tmp_path: Path, clock: Clock) -> None:
    def error(path: Path) -> str:
        with pytest.raises(ForgeError) as err:
            InstallationTokens(GitHubApp(APP_ID, INSTALLATION, path, clock=clock), "http://127.0.0.1:9")
        assert "MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE" in str(err.value)
        return str(err.value)

    assert f"cannot read the private key file {tmp_path / 'missing.pem'}: No such file" in error(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key at all\n")
    assert "is not an unencrypted PEM private key" in error(garbage)
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    assert "GitHub Apps sign with RSA" in error(ec_key)


def test_forge_from_meshgen_yaml(fake: GitHubFake, key_file: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config.model_validate({
        "environments": {"staging": {}},
        "envRepo": {"url": "https://github.example/acme/env.git",
                    "forge": {"kind": "github", "baseUrl": fake.url, "owner": "acme", "repo": "env",
                              "app": {"id": int(APP_ID), "installationId": INSTALLATION}}},
    })
    for unset in (None, ""):  # an empty variable is no key file (not the current directory)
        if unset is None:
            monkeypatch.delenv("MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE", raising=False)
        else:
            monkeypatch.setenv("MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE", unset)
        with pytest.raises(ForgeError, match="MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE is not"):
            forge_from_config(tmp_path, config, Settings(), local_path=None, identity=Identity("m", "m@x"))
    monkeypatch.setenv("MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE", str(key_file))
    # The fake runs on the real clock here: the JWT and the token are judged against time.time().
    fake.clock = __import__("time").time
    forge = forge_from_config(tmp_path, config, Settings(), local_path=None, identity=Identity("m", "m@x"),
                              options=FAST)
    assert isinstance(forge, GitHubForge) and forge.list() == []
    assert _exchanges(fake) == 1 and fake.jwt_rejections == []
    forge.close_connections()


def test_app_needs_the_github_forge() -> None:
    from meshgen.blueprint.base import Strict  # noqa: F401  # the config model's base

    with pytest.raises(Exception, match="needs forge kind 'github'"):
        Config.model_validate({"environments": {"staging": {}},
                               "envRepo": {"forge": {"kind": "gitea", "baseUrl": "https://g", "owner": "a",
                                                     "repo": "b", "app": {"id": 1, "installationId": 2}}}})


def test_git_fetch_and_push_with_the_installation_token(fake: GitHubFake, bare_repo: BareRepo, key_file: Path,
                                                        clock: Clock, tmp_path: Path) -> None:
    """The same refreshing token authenticates git over HTTPS (username x-access-token)."""
    with _forge(fake, key_file, clock) as forge:
        credential = forge.git_credential()
        assert credential is not None and credential.username == "x-access-token"
        assert "GitHub App 424242" in credential.source
        access = RemoteAccess(fake.git_url, "environment repository", credential=credential)
        mirror = EnvRepo(fake.git_url, cache_dir=tmp_path / "mirror", access=access)
        first = push_files(mirror, "meshgen/a", {"a.yaml": "a: 1\n"}, "a", start="main")
        assert bare_repo.tip("meshgen/a") == first
        pr = forge.create(branch="meshgen/a", base="main", title="t", body="", labels=())
        assert pr.head_sha == first
        token_one = forge.app_tokens.reveal()  # type: ignore[union-attr]
        clock.advance(56 * 60)  # inside the refresh margin: the next push mints and uses a new token
        second = push_files(mirror, "meshgen/a", {"a.yaml": "a: 2\n"}, "a2")
        assert bare_repo.tip("meshgen/a") == second and _exchanges(fake) == 2
        token_two = forge.app_tokens.reveal()  # type: ignore[union-attr]
        users = {entry[2] for entry in fake.git.log}
        assert users - {""} == {"x-access-token"}  # "": libgit2's first, unauthenticated probe (401 challenge)
        seen = " ".join(fake.git.auth_seen)
        assert base64.b64encode(f"x-access-token:{token_two}".encode()).decode() in seen
        assert base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode() not in seen  # never the static token
        # An expired installation token is refused by the git side too, with a clear error.
        stale = RemoteAccess(fake.git_url, "environment repository",
                             credential=type(credential)("x-access-token", lambda: token_one, "an old token"))
        clock.advance(10 * 60)
        with pytest.raises(EnvRepoError) as err:
            EnvRepo(fake.git_url, cache_dir=tmp_path / "stale", access=stale).fetch()
        assert token_one not in str(err.value)


class _Answers:
    """A loopback server answering every POST with one canned response, recording what reached it."""

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.requests.append((self.path, self.headers.get("Authorization")))
                self.send_response(status)
                for name, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_redirect_of_the_token_exchange_to_another_origin_is_not_followed(key_file: Path, clock: Clock) -> None:
    """A token minted by whatever a redirect points at must never become meshgen's credential."""
    elsewhere = _Answers(201, b'{"token": "ghs_from_elsewhere", "expires_at": "2099-01-01T00:00:00Z"}')
    forge = _Answers(307, headers={"Location": f"http://localhost:{elsewhere.server.server_port}/steal"})
    try:
        tokens = InstallationTokens(GitHubApp(APP_ID, INSTALLATION, key_file, clock=clock), forge.url)
        with pytest.raises(ForgeError) as err:
            tokens.reveal()
        assert "redirected the request to another origin" in str(err.value) and forge.url in str(err.value)
        assert elsewhere.requests == []
        assert len(forge.requests) == 1
    finally:
        forge.close()
        elsewhere.close()


@pytest.mark.parametrize(("body", "says"), [
    (b"<html>sign in</html>", "the body is not JSON"),
    (b"[1, 2]", "unexpected response shape"),
    (b'{"token": 5, "expires_at": "2099-01-01T00:00:00Z"}', "not a single-line string"),
    (b'{"token": "ghs_a\\nX-Injected: 1", "expires_at": "2099-01-01T00:00:00Z"}', "not a single-line string"),
    (b'{"token": "ghs_ok"}', "unexpected response shape (KeyError"),
    (b'{"token": "ghs_ok", "expires_at": "soon"}', "unexpected response shape"),
])
def test_garbage_from_the_token_exchange_is_a_clear_error(body: bytes, says: str, key_file: Path,
                                                          clock: Clock) -> None:
    forge = _Answers(201, body)
    try:
        tokens = InstallationTokens(GitHubApp(APP_ID, INSTALLATION, key_file, clock=clock), forge.url)
        with pytest.raises(ForgeError) as err:
            tokens.reveal()
        assert says in str(err.value) and "ghs_" not in str(err.value)
    finally:
        forge.close()
