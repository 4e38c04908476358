"""Which credential a remote gets, from meshgen.yaml and settings; URLs with credentials are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshgen.blueprint.config import Config
from meshgen.forges.gitea import GiteaForge
from meshgen.forges.github import GitHubForge
from meshgen.forges.gitlab import GitLabForge
from meshgen.gitops.transport import (
    GitTransportError,
    blueprints_access,
    env_repo_access,
    is_ssh_url,
    url_credentials_problem,
)
from meshgen.settings import Settings

from .conftest import TOKEN


def _config(env_repo: dict[str, object]) -> Config:
    return Config.model_validate({"environments": {"prod": {}}, "envRepo": env_repo})


@pytest.mark.parametrize(("url", "ssh"), [
    ("ssh://git@github.com/acme/env.git", True),
    ("git@github.com:acme/env.git", True),
    ("github.com:acme/env.git", True),
    ("https://github.com/acme/env.git", False),
    ("/srv/env.git", False),
    ("./env.git", False),
    ("file:///srv/env.git", False),
    ("C/env.git", False),
])
def test_ssh_urls_are_recognised(url: str, ssh: bool) -> None:
    assert is_ssh_url(url) is ssh


@pytest.mark.parametrize("url", [
    f"https://x-access-token:{TOKEN}@github.com/acme/env.git",
    f"https://{TOKEN}@gitlab.com/acme/env.git",
    f"http://oauth2:{TOKEN}@127.0.0.1:3000/acme/env.git",
])
def test_a_token_in_env_repo_url_is_refused_saying_where_it_goes(url: str) -> None:
    with pytest.raises(ValueError) as caught:  # pydantic's ValidationError is a ValueError
        _config({"url": url})
    message = str(caught.value)
    assert "envRepo.url" in message and "envRepo.git.tokenEnv" in message
    assert TOKEN not in message


def test_a_token_in_the_blueprints_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GitTransportError) as caught:
        blueprints_access(f"https://bot:{TOKEN}@git.example.com/acme/blueprints.git", Settings(root=tmp_path))
    assert "MESHGEN_BLUEPRINTS_TOKEN" in str(caught.value) and TOKEN not in str(caught.value)
    assert TOKEN not in caught.value.url


def test_ssh_user_is_not_a_secret() -> None:
    assert url_credentials_problem("ssh://git@host/x.git", "envRepo.url") is None
    assert url_credentials_problem("git@host:x.git", "envRepo.url") is None
    assert url_credentials_problem("ssh://git:pw@host/x.git", "envRepo.url") is not None


@pytest.mark.parametrize(("forge", "username"), [
    (lambda: GitHubForge("acme", "env", token=TOKEN), "x-access-token"),
    (lambda: GitLabForge("acme/env", token=TOKEN), "oauth2"),
    (lambda: GiteaForge("https://gitea.example.com", "acme", "env", token=TOKEN), "meshgen"),
])
def test_each_forge_lends_its_token_in_its_convention(tmp_path: Path, forge, username: str) -> None:  # type: ignore[no-untyped-def]
    client = forge()
    config = _config({"url": "https://git.example.com/acme/env.git",
                      "forge": {"kind": "github", "owner": "acme", "repo": "env"}})
    access = env_repo_access(tmp_path, config, Settings(root=tmp_path), client)
    assert access is not None and access.credential is not None
    assert access.credential.username == username and access.credential.token() == TOKEN
    assert "MESHGEN_FORGE_TOKEN" in access.credential.source and TOKEN not in repr(access)
    client.close_connections()


def test_env_repo_git_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forge = GiteaForge("https://gitea.example.com", "acme", "env", token="forge-token")
    base = {"url": "https://gitea.example.com/acme/env.git",
            "forge": {"kind": "gitea", "baseUrl": "https://gitea.example.com", "owner": "acme", "repo": "env"}}
    # username only: the forge token under the token owner's name
    access = env_repo_access(tmp_path, _config({**base, "git": {"username": "deploy-bot"}}), Settings(root=tmp_path),
                             forge)
    assert access is not None and access.credential is not None
    assert (access.credential.username, access.credential.token()) == ("deploy-bot", "forge-token")
    # a separate token from the environment
    monkeypatch.setenv("MG_GIT_TOKEN", "git-token")
    access = env_repo_access(tmp_path, _config({**base, "git": {"tokenEnv": "MG_GIT_TOKEN", "username": "bot"}}),
                             Settings(root=tmp_path), forge)
    assert access is not None and access.credential is not None
    assert (access.credential.username, access.credential.token()) == ("bot", "git-token")
    # from a file, relative to the root
    (tmp_path / "git.token").write_text("file-token\n")
    access = env_repo_access(tmp_path, _config({**base, "git": {"tokenFile": "git.token"}}), Settings(root=tmp_path),
                             forge)
    assert access is not None and access.credential is not None
    assert access.credential.token() == "file-token" and str(tmp_path / "git.token") in access.credential.source
    # an unset variable fails at configuration time with the variable's name
    with pytest.raises(GitTransportError, match="MG_MISSING is not set"):
        env_repo_access(tmp_path, _config({**base, "git": {"tokenEnv": "MG_MISSING"}}), Settings(root=tmp_path), forge)
    with pytest.raises(ValueError, match="either tokenEnv or tokenFile"):
        _config({**base, "git": {"tokenEnv": "A", "tokenFile": "b"}})
    forge.close_connections()


def test_local_remotes_need_no_transport(tmp_path: Path) -> None:
    assert env_repo_access(tmp_path, _config({"url": ".meshgen/env-repo"}), Settings(root=tmp_path), None) is None
    assert blueprints_access(str(tmp_path), Settings(root=tmp_path)) is None
    assert blueprints_access(f"file://{tmp_path}", Settings(root=tmp_path)) is None


def test_blueprints_token_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://git.example.com/acme/blueprints.git"
    monkeypatch.setenv("MESHGEN_BLUEPRINTS_TOKEN", "bp-token")
    access = blueprints_access(url, Settings(root=tmp_path))
    assert access is not None and access.credential is not None
    assert (access.credential.username, access.credential.token()) == ("x-access-token", "bp-token")
    token_file = tmp_path / "bp"
    token_file.write_text("bp-file-token\n")
    monkeypatch.setenv("MESHGEN_BLUEPRINTS_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("MESHGEN_BLUEPRINTS_USERNAME", "oauth2")
    access = blueprints_access(url, Settings(root=tmp_path))
    assert access is not None and access.credential is not None
    assert (access.credential.username, access.credential.token()) == ("oauth2", "bp-file-token")
    token_file.write_text("rotated\n")
    assert access.credential.token() == "rotated"  # re-read per fetch
