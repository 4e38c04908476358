"""A real `meshgen worker` (log level DEBUG) renders the pushed commit of a private blueprints repository
fetched over authenticated smart HTTP, pushes to the environment repository with the forge's token and
opens the pull request; neither token appears in the worker's log, the job record or the state folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from forges._github_fake import GitHubFake
from forges._gitrepo import BareRepo
from gitserver import Account
from sync_support import MESHGEN_YAML, Fleet, blueprint, redis_namespace, running_worker

from .conftest import BLUEPRINTS_TOKEN, TOKEN

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    (tmp_path / "ws").mkdir()
    with redis_namespace(request.node.name[:16]) as ns:
        yield Fleet(tmp_path / "ws", ns.prefix, ns.client, tmp_path)


def test_worker_renders_the_pushed_commit_of_a_private_repository(fleet: Fleet, served: Path,
                                                                   origin: BareRepo) -> None:
    fake = GitHubFake(origin, TOKEN).start()
    try:
        fake.git.accounts.append(Account(BLUEPRINTS_TOKEN, "x-access-token", write=False))
        blueprints = BareRepo(served / "blueprints.git")
        config = (MESHGEN_YAML + f"envRepo:\n  url: {fake.git_url}\n"
                  f"  forge: {{kind: github, owner: acme, repo: env, baseUrl: {fake.url}}}\n")
        blueprints.commit_files("main", {"meshgen.yaml": config, "blueprints/cart.yaml": blueprint("cart", 10)},
                                "cart 10")
        pushed = blueprints.commit_files("main", {"blueprints/cart.yaml": blueprint("cart", 35)}, "cart 35")
        env = fleet.env(MESHGEN_BLUEPRINTS_URL=fake.git.url("blueprints.git"),
                        MESHGEN_BLUEPRINTS_TOKEN=BLUEPRINTS_TOKEN, MESHGEN_FORGE_TOKEN=TOKEN,
                        MESHGEN_LOG_LEVEL="DEBUG")
        log = fleet.log("worker")
        with running_worker(env, log):
            job = fleet.finished(fleet.enqueue(trigger="webhook", blueprint_commit=pushed).id, timeout=60)
        assert job.state == "succeeded" and job.blueprint_commit == pushed, job.errors
        # the private repository was read with its own token, the environment repository written with the forge's
        fetched = {user for _, path, user, status in fake.git.log if "blueprints.git" in path and status == 200}
        assert fetched == {"x-access-token"}
        [pr] = fake.prs.values()
        assert pr.head == "meshgen/production/shop/cart" and origin.tip(pr.head) is not None
        assert "weight: 35" in origin.read(pr.head, "production/shop/cart/virtualservice-cart.yaml")
        text = log.read_text(errors="replace")
        assert "DEBUG" in text  # the log really is at DEBUG
        files = [p for p in fleet.root.rglob("*") if p.is_file()]
        for secret in (TOKEN, BLUEPRINTS_TOKEN):
            assert secret not in text
            assert secret not in job.model_dump_json()
            assert not [p for p in files if secret.encode() in p.read_bytes()]
        assert not fake.violations, fake.violations
    finally:
        fake.stop()
