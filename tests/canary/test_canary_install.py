"""The canary controller is installed by the entry points, not imported by the sync (imports point down).

Without it, a sync would render a canary back to its stable version; it refuses instead and says what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from canary_world import blueprint
from sync_support import make_root, open_prs

from meshgen.canary import controller
from meshgen.gitops.envrepo import EnvRepoError
from meshgen.gitops.sync import install_canary_controller, sync_repository
from meshgen.settings import Settings


@pytest.fixture
def without_controller() -> Iterator[None]:
    previous = install_canary_controller(None)
    try:
        yield
    finally:
        install_canary_controller(previous)


def test_a_sync_without_the_controller_refuses_a_canary_and_writes_nothing(tmp_path: Path,
                                                                           without_controller: None) -> None:
    root = make_root(tmp_path, [])
    (root / "blueprints" / "cart.yaml").write_text(blueprint())
    with pytest.raises(EnvRepoError, match=r"blueprints/cart\.yaml declares a canary .*controller\.install\(\)"):
        sync_repository(root, Settings(root=root))
    assert open_prs(root) == []


def test_a_sync_without_the_controller_delivers_blueprints_without_canaries(tmp_path: Path,
                                                                           without_controller: None) -> None:
    root = make_root(tmp_path, ["cart"])
    job = sync_repository(root, Settings(root=root))
    assert job.state == "succeeded"
    assert [pr.branch for pr in open_prs(root)] == ["meshgen/production/shop/cart"]


def test_install_makes_every_sync_run_the_controller(tmp_path: Path, without_controller: None) -> None:
    controller.install()
    root = make_root(tmp_path, [])
    (root / "blueprints" / "cart.yaml").write_text(blueprint())
    job = sync_repository(root, Settings(root=root))
    # The controller ran: the first sync delivers the blueprint as written (weight 0, no step yet).
    assert job.state == "succeeded", job.errors
    assert [pr.branch for pr in open_prs(root)] == ["meshgen/production/shop/cart"]
