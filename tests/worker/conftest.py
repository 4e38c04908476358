"""Fixtures for the worker tests: a blueprints root, a Redis namespace, and a client for the queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sync_support import Fleet, make_root, redis_namespace


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    with redis_namespace(request.node.name[:16]) as ns:
        f = Fleet(make_root(tmp_path / "bp", ["cart", "checkout"]), ns.prefix, ns.client, tmp_path)
        try:
            yield f
        finally:
            if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
                for log in f.logs:
                    print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # lets the fixture print worker logs of a failed test
    return report
