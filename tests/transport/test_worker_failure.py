"""The worker's task body: a credential failure ends the job `failed` at once (a retry cannot fix it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from forges._github_fake import GitHubFake
from forges._gitrepo import BareRepo
from sync_support import MESHGEN_YAML, REDIS_DB_URL, RedisNS, blueprint

from meshgen.gitops.jobs import run_sync_job
from meshgen.records import JobRecord
from meshgen.settings import Settings

from .conftest import TOKEN


def test_wrong_token_fails_the_job_without_retrying(tmp_path: Path, origin: BareRepo, rns: RedisNS,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake = GitHubFake(origin, TOKEN).start()
    try:
        root = tmp_path / "root"
        (root / "blueprints").mkdir(parents=True)
        (root / "blueprints" / "cart.yaml").write_text(blueprint("cart", 10))
        (root / "meshgen.yaml").write_text(
            MESHGEN_YAML + f"envRepo:\n  url: {fake.git_url}\n"
            f"  forge: {{kind: github, owner: acme, repo: env, baseUrl: {fake.url}, tokenEnv: MG_WRONG}}\n")
        monkeypatch.setenv("MG_WRONG", "mgtok_not_the_right_one_000000000000")
        settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=rns.prefix, lock_ttl=2, lock_wait=5)
        rns.records.save_job(JobRecord(id="job1", trigger="api", state="queued"))
        # not the final attempt: a network error would be re-raised for Celery to retry; this one is not
        job = run_sync_job(settings, rns.records, job_id="job1", final_attempt=False)
        stored = rns.records.get_job("job1")
        assert stored is not None and stored.state == "failed" and job.state == "failed"
        assert "rejected the credentials (HTTP 401" in stored.errors[0] and fake.git_url in stored.errors[0]
        assert "mgtok_not_the_right_one" not in stored.model_dump_json()
    finally:
        fake.stop()
