"""Fixtures for the GitOps tests: real repositories in tmp_path, built with pygit2."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitops_support import BOT, FOREIGN, Clock, Origin

from meshgen.gitops.envrepo import EnvRepo
from meshgen.forges.local import LocalForge


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    return Origin(tmp_path / "env.git", FOREIGN)


@pytest.fixture
def env_repo(origin: Origin, tmp_path: Path) -> EnvRepo:
    return EnvRepo(origin.path, cache_dir=tmp_path / "cache", identity=BOT, clock=Clock())


@pytest.fixture
def forge(origin: Origin) -> LocalForge:
    return LocalForge(origin.path, identity=BOT, clock=Clock())


@pytest.fixture(autouse=True)
def _own_redis_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """`meshgen pr merge` refreshes unit records when Redis answers: point it at this suite's own
    database index and a prefix nothing else uses, never at the default database 0."""
    import uuid

    monkeypatch.setenv("MESHGEN_REDIS_URL", "redis://127.0.0.1:6379/11")
    monkeypatch.setenv("MESHGEN_REDIS_PREFIX", f"meshgen-test-{uuid.uuid4().hex[:8]}:")
