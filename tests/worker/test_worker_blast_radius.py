"""A real `meshgen worker`: one team's broken blueprint holds back only its own unit (issue 10, item 6)."""

from __future__ import annotations

import pytest
from sync_support import Fleet, prs_for, running_worker

pytestmark = pytest.mark.slow


def test_worker_job_is_partial_and_delivers_the_healthy_units(fleet: Fleet) -> None:
    (fleet.root / "blueprints" / "cart.yaml").write_text("service: cart\nnamespace: shop\nroutes: 3\n")
    with running_worker(fleet.env(), fleet.log("worker")):
        job = fleet.finished(fleet.enqueue().id)
    assert job.state == "partial", job
    assert any(e.startswith("blueprints/cart.yaml:") for e in job.errors)
    assert [(p.branch.rsplit("/", 1)[1], p.action) for p in job.prs] == [("checkout", "opened")]
    assert not prs_for(fleet.root, "cart") and prs_for(fleet.root, "checkout")
    cart = fleet.records.get_unit("production", "shop", "cart")
    assert cart is not None and cart.render_state == "render-failed"
    assert (cart.render_error or "").startswith("blueprints/cart.yaml:")
