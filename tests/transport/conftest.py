"""Fixtures: an environment repository behind real git smart HTTP (basic auth) and behind real sshd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from forges._gitrepo import BareRepo
from gitserver import Account, GitHttpServer, SshServer

# Look like real tokens, so a leak is easy to spot in any output or file.
TOKEN = "mgtok_git_7e5b2d4c6e8a0b1c2d3e4f5a6b9f3c1a"
READ_ONLY_TOKEN = "mgtok_ro_0b1c2d3e4f5a6b9f3c1a7e5b2d4c6e8a"
BLUEPRINTS_TOKEN = "mgtok_bp_c6e8a0b1c2d3e4f5a6b9f3c1a7e5b2d4"


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """The folder both servers serve repositories from."""
    path = tmp_path / "srv"
    path.mkdir()
    return path


@pytest.fixture
def origin(served: Path) -> BareRepo:
    return BareRepo(served / "env.git")


@pytest.fixture
def http_git(served: Path, origin: BareRepo) -> Iterator[GitHttpServer]:
    """`x-access-token` + TOKEN may push; any user + READ_ONLY_TOKEN may only fetch."""
    with GitHttpServer(served, [Account(TOKEN, "x-access-token"), Account(READ_ONLY_TOKEN, None, write=False),
                                Account(BLUEPRINTS_TOKEN, "x-access-token", write=False)]) as server:
        yield server


@pytest.fixture
def sshd(tmp_path: Path, served: Path, origin: BareRepo) -> Iterator[SshServer]:
    server = SshServer(tmp_path / "sshd", served)
    try:
        yield server
    finally:
        server.stop()
