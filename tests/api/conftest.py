"""Fixtures of the API tests: Redis (DB 12, a unique prefix per test), a real environment
repository, a blueprints root with meshgen.yaml, and a fake Argo CD on loopback HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
import redis
from api_support import TOKENS, EnvRepoShas, make_settings, write_config
from argo_fakes import ArgoCDServer

from meshgen.records import Records

REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"these tests need Redis at 127.0.0.1:6379 ({exc}); start it with "
                    "`redis-server --daemonize yes --save ''` (.ci/run does)")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    value = f"meshgen-test-api-{uuid.uuid4().hex[:10]}:"
    yield value
    keys = list(redis_client.scan_iter(match=value + "*", count=1000))
    for i in range(0, len(keys), 500):
        redis_client.delete(*keys[i:i + 500])


@pytest.fixture
def records(redis_client: redis.Redis, prefix: str) -> Records:
    return Records(redis_client, prefix)


@pytest.fixture
def env_repo(tmp_path: Path) -> EnvRepoShas:
    """A bare environment repository: base → merge M (of branch B) → later L; X is a sibling of M."""
    path = tmp_path / "env.git"
    repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
    sig = pygit2.Signature("t", "t@example.com", 1_700_000_000, 0)

    def commit(ref: str | None, message: str, parents: list[pygit2.Oid], content: bytes) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        tb.insert("f.yaml", repo.create_blob(content), pygit2.GIT_FILEMODE_BLOB)
        return repo.create_commit(ref, sig, sig, message, tb.write(), parents)

    base = commit(None, "base", [], b"0")
    branch = commit(None, "pr change", [base], b"1")
    merge = commit(None, "Merge PR #1", [base, branch], b"1")
    later = commit(None, "later", [merge], b"2")
    sibling = commit(None, "someone else", [base], b"3")
    repo.references.create("refs/heads/main", later)
    repo.references.create("refs/heads/other", sibling)
    return EnvRepoShas(path, str(base), str(branch), str(merge), str(later), str(sibling))


@pytest.fixture(scope="session")
def argo_server() -> Iterator[ArgoCDServer]:
    server = ArgoCDServer(TOKENS["argocd"])
    yield server
    server.stop()


@pytest.fixture
def argo(argo_server: ArgoCDServer) -> Iterator[ArgoCDServer]:
    argo_server.clear()
    yield argo_server
    argo_server.clear()


@pytest.fixture
def root(tmp_path: Path, env_repo: EnvRepoShas, argo: ArgoCDServer) -> Path:
    folder = tmp_path / "blueprints"
    folder.mkdir()
    write_config(folder, env_repo.path, {"mode": "rest", "url": argo.url, "staleAfter": "2m"})
    return folder


@pytest.fixture
def settings(root: Path, prefix: str):  # type: ignore[no-untyped-def]
    return make_settings(root, prefix)
