"""Fixtures: a bare environment repository, and fake GitHub / Gitea / GitLab servers on loopback.

The fakes are parametrised through `forge_env` so that behaviour shared by all three providers is
written once. Every fake records schema violations; a test that caused any fails on teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshgen.forges.gitea import GiteaForge
from meshgen.forges.github import GitHubForge
from meshgen.forges.gitlab import GitLabForge
from meshgen.gitops.envrepo import EnvRepo
from meshgen.gitops.transport import RemoteAccess

from ._gitea_fake import GiteaFake
from ._github_fake import GitHubFake
from ._gitlab_fake import GitLabFake
from ._gitrepo import BareRepo, push_files
from ._server import FakeForge

# Looks like a real token, so a leak would be easy to spot and impossible to miss in a search.
TOKEN = "mgtok_9f3c1a7e5b2d4c6e8a0b1c2d3e4f5a6b"

# Fast retries: tests must not sleep for real backoff.
FAST = {"max_attempts": 3, "max_wait": 5.0, "backoff": 0.01, "timeout": 5.0}


@dataclass
class ForgeEnv:
    """A fake server, the bare repository behind it, and a factory for the matching client."""

    kind: str
    fake: FakeForge
    repo: BareRepo
    make: Callable[..., Any]  # make(**overrides) -> forge client
    pusher: EnvRepo  # a mirror of the repository, pushing over authenticated smart HTTP

    def push(self, branch: str, files: dict[str, str] | None = None, *, start: str = "main") -> str:
        """Commit to `branch` and push it to the fake's git server with the provider's own git
        credential (its username convention), as a `git push` would; returns the new tip."""
        return push_files(self.pusher, branch, files or {f"{branch}.yaml": "kind: Demo\n"},
                          f"update {branch}", start=start)


def _client(kind: str, fake: FakeForge, **overrides: Any) -> Any:
    settings: dict[str, Any] = {**FAST, **overrides}
    if "token" not in settings and "token_env" not in settings and "token_file" not in settings:
        settings["token"] = TOKEN
    if kind == "github":
        settings.setdefault("base_url", fake.url)
        return GitHubForge("acme", "env", **settings)
    if kind == "gitea":
        # The instance root, without /api/v1: the client appends it.
        return GiteaForge(settings.pop("base_url", fake.root), "acme", "env", **settings)
    settings.setdefault("base_url", fake.root)
    return GitLabForge(settings.pop("project", "acme/platform/env"), **settings)


_FAKES: dict[str, type[FakeForge]] = {"github": GitHubFake, "gitea": GiteaFake, "gitlab": GitLabFake}


@pytest.fixture
def bare_repo(tmp_path: Path) -> BareRepo:
    return BareRepo(tmp_path / "env.git")


def _start(kind: str, repo: BareRepo, cache: Path) -> Iterator[ForgeEnv]:
    fake = _FAKES[kind](repo, TOKEN).start()
    clients: list[Any] = []

    def make(**overrides: Any) -> Any:
        client = _client(kind, fake, **overrides)
        clients.append(client)
        return client

    access = RemoteAccess(fake.git_url, "environment repository", credential=make().git_credential())
    try:
        yield ForgeEnv(kind, fake, repo, make, EnvRepo(fake.git_url, cache_dir=cache, access=access))
    finally:
        for client in clients:
            client.close_connections()
        fake.stop()
    assert not fake.violations, "the fake forge saw API-contract violations:\n" + "\n".join(fake.violations)


@pytest.fixture(params=["github", "gitea", "gitlab"])
def forge_env(request: pytest.FixtureRequest, bare_repo: BareRepo, tmp_path: Path) -> Iterator[ForgeEnv]:
    yield from _start(request.param, bare_repo, tmp_path / "pusher")


@pytest.fixture
def github_env(bare_repo: BareRepo, tmp_path: Path) -> Iterator[ForgeEnv]:
    yield from _start("github", bare_repo, tmp_path / "pusher")


@pytest.fixture
def gitea_env(bare_repo: BareRepo, tmp_path: Path) -> Iterator[ForgeEnv]:
    yield from _start("gitea", bare_repo, tmp_path / "pusher")


@pytest.fixture
def gitlab_env(bare_repo: BareRepo, tmp_path: Path) -> Iterator[ForgeEnv]:
    yield from _start("gitlab", bare_repo, tmp_path / "pusher")
