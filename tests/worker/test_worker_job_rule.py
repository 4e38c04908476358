"""The rule for every long-running job (issue 13), with a real `meshgen worker` process: whatever
a sync raises, its job record ends in a terminal state with the error, and the worker goes on."""

from __future__ import annotations

import pytest
from sync_support import Fleet, prs_for, running_worker

pytestmark = pytest.mark.slow

DEEP = "service: cart\nnamespace: shop\nteam: shop\ntimeout: " + "[" * 600 + "]" * 600 + "\n"
# A PR-title override that recurses until Python's stack is exhausted: RecursionError, which no
# part of the sync expects, raised deep inside it (after the render, in the pull-request step).
RECURSIVE_TITLE = "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}\n"


def test_whatever_a_sync_raises_its_job_ends_failed_and_the_worker_goes_on(fleet: Fleet) -> None:
    templates = fleet.root / "tpl"
    templates.mkdir()
    with (fleet.root / "meshgen.yaml").open("a") as fh:
        fh.write("envRepo: {templates: tpl}\n")
    good = (fleet.root / "blueprints/cart.yaml").read_text()
    with running_worker(fleet.env(), fleet.log("worker")) as worker:
        # 2. deep nesting: a blueprint error at file:line, not a RecursionError left `running`
        # (`partial`: the other blueprint, checkout, still syncs).
        (fleet.root / "blueprints/cart.yaml").write_text(DEEP)
        nested = fleet.finished(fleet.enqueue().id, timeout=60)
        assert nested.state == "partial" and nested.finished_at is not None
        assert any(e.startswith("blueprints/cart.yaml:4:") and "nest more than 64 levels" in e
                   for e in nested.errors), nested.errors

        # An unexpected exception anywhere in the sync: failed, with the error, not `running`.
        (fleet.root / "blueprints/cart.yaml").write_text(good)
        (templates / "title.txt.j2").write_text(RECURSIVE_TITLE)
        crashed = fleet.finished(fleet.enqueue().id, timeout=60)
        assert crashed.state == "failed" and crashed.finished_at is not None
        assert any("internal error: RecursionError" in e for e in crashed.errors), crashed.errors
        assert worker.proc.poll() is None, "the worker died"

        # ... and the same worker process takes the next job.
        (templates / "title.txt.j2").unlink()
        done = fleet.finished(fleet.enqueue().id, timeout=60)
        assert done.state == "succeeded", done.errors
        assert worker.proc.poll() is None
    assert len(prs_for(fleet.root, "cart")) == 1 and len(prs_for(fleet.root, "checkout")) == 1
