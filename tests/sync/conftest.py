"""Fixtures for the in-process sync and webhook tests (real Redis DB 13, real repositories)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sync_support import REDIS_DB_URL, RedisNS, make_root

from meshgen.settings import Settings


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "bp", ["cart", "checkout"])


@pytest.fixture
def settings(root: Path, rns: RedisNS) -> Settings:
    return Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, lock_ttl=2, lock_wait=5)
