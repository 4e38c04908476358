"""Suite-wide set-up and the fixtures many folders share.

What every entry point of meshgen does at start-up, the tests do once: install the canary controller.
The fixtures: a Redis key namespace per test (real Redis, cleaned up), a fresh fake Argo CD on loopback
HTTP (tests/api/argo_fakes.py; tests/api/conftest.py overrides it with one shared server), and a real
Prometheus per module (Debian's package, tests/promsupport.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import TOKENS
from argo_fakes import ArgoCDServer
from promsupport import PrometheusServer, start_prometheus
from sync_support import RedisNS, redis_namespace

from meshgen.canary import controller

# The worker, the CLI and `meshgen up` install the canary controller before any sync; so do the
# tests that call the library's sync directly (tests/canary/test_canary_install.py checks both ways).
controller.install()


@pytest.fixture
def rns(request: pytest.FixtureRequest) -> Iterator[RedisNS]:
    """A key prefix of this test's own in the tests' Redis database, deleted afterwards."""
    with redis_namespace(request.node.name[:20]) as ns:
        yield ns


@pytest.fixture
def argo() -> Iterator[ArgoCDServer]:
    """A fake Argo CD speaking its REST API on a free loopback port."""
    server = ArgoCDServer(TOKENS["argocd"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus on a free loopback port, shared by one module's tests."""
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()
