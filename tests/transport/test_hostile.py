"""Hostile inputs on the transport's surfaces: secret files that are FIFOs or huge, a known_hosts
path that is a folder, and remote URLs git would read as options or programs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from meshgen.blueprint.config import Config
from meshgen.forges.base import ForgeError
from meshgen.forges.github import GitHubForge
from meshgen.forges.github_app import GitHubApp, InstallationTokens
from meshgen.gitops.transport import (
    GitTransportError,
    RemoteAccess,
    SshIdentity,
    blueprints_access,
    env_repo_access,
    ls_remote,
)
from meshgen.settings import Settings

HTTPS = "https://git.example.com/acme/env.git"


def _config(env_repo: dict[str, object]) -> Config:
    return Config.model_validate({"environments": {"prod": {}}, "envRepo": env_repo})


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A named pipe nobody writes to: reading it the ordinary way blocks forever."""
    path = tmp_path / "token.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def huge(tmp_path: Path) -> Path:
    """A 1 GiB (sparse) file: reading it whole would take a gigabyte of memory."""
    path = tmp_path / "token.huge"
    with path.open("wb") as handle:
        handle.truncate(1 << 30)
    return path


@pytest.mark.parametrize(("which", "reason"), [("fifo", "not a regular file"), ("huge", "larger than 65536 bytes")])
def test_token_files_that_are_not_small_regular_files_are_refused(
        which: str, reason: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path: Path = request.getfixturevalue(which)
    settings = Settings(root=tmp_path)
    # envRepo.git.tokenFile
    with pytest.raises(GitTransportError, match=f"cannot read token file {path}: {reason}"):
        env_repo_access(tmp_path, _config({"url": HTTPS, "git": {"tokenFile": str(path)}}), settings, None)
    # MESHGEN_BLUEPRINTS_TOKEN_FILE
    monkeypatch.setenv("MESHGEN_BLUEPRINTS_TOKEN_FILE", str(path))
    with pytest.raises(GitTransportError, match=f"cannot read token file {path}: {reason}"):
        blueprints_access("https://git.example.com/acme/blueprints.git", Settings(root=tmp_path))
    monkeypatch.delenv("MESHGEN_BLUEPRINTS_TOKEN_FILE")
    # the forge's token file (envRepo.forge.tokenFile)
    with pytest.raises(ForgeError, match=f"cannot read token file {path}: {reason}"):
        GitHubForge("acme", "env", token_file=path)
    # the GitHub App's private key
    with pytest.raises(ForgeError, match=f"cannot read the private key file {path}: {reason}"):
        InstallationTokens(GitHubApp("1", 2, path), "http://127.0.0.1:9")
    # MESHGEN_<SECRET>_FILE settings
    monkeypatch.setenv("MESHGEN_FORGE_TOKEN_FILE", str(path))
    with pytest.raises(ValidationError, match=f"MESHGEN_FORGE_TOKEN_FILE={path}: cannot read it: {reason}"):
        Settings(root=tmp_path)


def test_known_hosts_that_is_a_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "key"
    key.write_text("not used\n")
    monkeypatch.setenv("MESHGEN_GIT_SSH_KEY_FILE", str(key))
    monkeypatch.setenv("MESHGEN_GIT_KNOWN_HOSTS_FILE", str(tmp_path))
    with pytest.raises(GitTransportError, match="MESHGEN_GIT_KNOWN_HOSTS_FILE points to .*not a readable file"):
        blueprints_access("git@git.example.com:acme/blueprints.git", Settings(root=tmp_path))


@pytest.mark.parametrize(("url", "says"), [
    ("ext::sh -c touch% /tmp/meshgen-pwned", "remote-helper syntax ('ext::')"),
    ("fd::17", "remote-helper syntax ('fd::')"),
    ("--upload-pack=touch${IFS}pwned;:x", "starts with '-'"),
    ("git@-oProxyCommand=touch${IFS}pwned:acme/env.git", "SSH host starts with '-'"),
    ("git@git.example.com:--upload-pack=touch pwned", "SSH path starts with '-'"),
    ("ssh://git@git.example.com/--upload-pack=x", "SSH path starts with '-'"),
    ("ftp://git.example.com/acme/env.git", "scheme 'ftp://'"),
])
def test_urls_git_would_read_as_options_or_programs_are_refused(url: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        _config({"url": url})
    assert says in str(err.value) and "https://HOST/ORG/REPO.git" in str(err.value)
    with pytest.raises(GitTransportError) as terr:
        blueprints_access(url, Settings(root=tmp_path))
    assert says in str(terr.value) and terr.value.reason == "config"


def test_ls_remote_never_reads_the_url_as_an_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even past the URL check, the SSH ls-remote of `meshgen doctor` passes the URL after `--`: run from a
    clone whose origin is a local path, `--upload-pack=CMD` would otherwise run CMD."""
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "up.git")], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "remote", "add", "origin", "../up.git"], check=True)
    (tmp_path / "key").write_text("")
    (tmp_path / "known_hosts").write_text("")
    monkeypatch.chdir(work)
    access = RemoteAccess("--upload-pack=touch${IFS}PWNED;:x", "blueprints repository",
                          ssh=SshIdentity(tmp_path / "key", tmp_path / "known_hosts"))
    with pytest.raises(GitTransportError):
        ls_remote(access)
    assert not (work / "PWNED").exists()


def test_a_redirect_to_another_host_never_gets_the_token() -> None:
    """libgit2 follows a redirect of the first request to any host and asks for credentials there."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from meshgen.gitops.transport import GitCredential

    seen: list[tuple[str, str | None]] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(("elsewhere", self.headers.get("Authorization")))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)

    class Forge(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(("forge", self.headers.get("Authorization")))
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{elsewhere.server_port}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    forge = ThreadingHTTPServer(("127.0.0.1", 0), Forge)
    for server in (elsewhere, forge):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{forge.server_port}/env.git"
        access = RemoteAccess(url, "environment repository",
                              credential=GitCredential("x-access-token", lambda: "mgtok_redirect_secret", "test"))
        with pytest.raises(GitTransportError) as err:
            ls_remote(access)
        message = str(err.value)
        assert f"redirected to http://localhost:{elsewhere.server_port}" in message and url in message
        assert err.value.reason == "config" and "mgtok_redirect_secret" not in message
        assert ("elsewhere", None) in seen and all(auth is None for _, auth in seen)
    finally:
        for server in (elsewhere, forge):
            server.shutdown()
            server.server_close()
