"""One canary test's world: blueprints on disk, the local forge's environment repository, the fake Argo CD
(tests/api/argo_fakes.py, on loopback HTTP) following the base branch, and a real Prometheus scraping
the mesh exporter (promsupport). Real Redis (DB 13, a unique prefix) holds the records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pygit2
from api_support import TOKENS
from argo_fakes import ArgoCDServer, application
from helpers import wait_for
from promsupport import PrometheusServer
from sync_support import REDIS_DB_URL, RedisNS, env_repo

from meshgen.gitops.envrepo import managed_files
from meshgen.forges.base import PullRequest
from meshgen.forges.local import LocalForge
from meshgen.gitops.sync import sync_repository
from meshgen.records import CanaryRecord, JobRecord
from meshgen.settings import Settings

BRANCH = "meshgen/production/shop/cart"
APP = "cart-production"
FOLDER = "production/shop/cart"


def blueprint(*, steps: str = "[20, 50, 100]", interval: str = "3s", failure_limit: int = 0,
              approval: str = "auto", to: str = "v2") -> str:
    return f"""\
service: cart
namespace: shop
team: shop
versions: {{v1: {{version: v1}}, v2: {{version: v2}}, v3: {{version: v3}}}}
routes:
  - name: default
    to: v1
canary:
  stable: v1
  to: {to}
  steps: {steps}
  interval: {interval}
  gates: {{successRate: 99, latencyP99: 500ms}}
  minRequests: 5
  failureLimit: {failure_limit}
  approval: {approval}
"""


@dataclass
class World:
    root: Path
    rns: RedisNS
    argo: ArgoCDServer
    prom: PrometheusServer
    mesh: str = "istio"
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = Settings(root=self.root, redis_url=REDIS_DB_URL, redis_prefix=self.rns.prefix, lock_ttl=5,
                                 lock_wait=30, argocd_token=TOKENS["argocd"])

    @property
    def repo_path(self) -> Path:
        return env_repo(self.root)

    @property
    def forge(self) -> LocalForge:
        return LocalForge(self.repo_path)

    def write(self, text: str) -> None:
        (self.root / "blueprints" / "cart.yaml").write_text(text)

    def traffic(self, *, rps: float, error_ratio: float = 0.0, latency_ms: float = 20.0) -> None:
        # The labels of cart's v2 pods: the blueprint's workload default (app=cart) and the version's.
        self.prom.exporter.set(self.mesh, "shop", "cart", "v2", rps=rps, error_ratio=error_ratio,
                               latency_ms=latency_ms, pod_labels={"app": "cart", "version": "v2"})

    def sync(self) -> JobRecord:
        """One sync (one canary pass), then Argo CD runs the base's tip and reports it healthy."""
        job = sync_repository(self.root, self.settings, records=self.rns.records)
        self.follow()
        return job

    def follow(self) -> None:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.argo.put(application(APP, revision=self.tip(), repo_url=str(self.repo_path), health="Healthy",
                                  finished_at=now, reconciled_at=now))

    def tip(self) -> str:
        return str(pygit2.Repository(str(self.repo_path)).references["refs/heads/main"].target)

    def record(self) -> CanaryRecord | None:
        return self.rns.records.get_canary("production", "shop", "cart")

    def until(self, what: str, check: Callable[[CanaryRecord], bool], timeout: float = 60.0,
              each: Callable[[], None] | None = None, sync: bool = True) -> CanaryRecord:
        """Pass after pass (`sync=False`: someone else runs them; Argo CD is only told to follow)."""
        def done() -> CanaryRecord | None:
            if sync:
                self.sync()
            else:
                self.follow()
            if each is not None:
                each()
            rec = self.record()
            return rec if rec is not None and check(rec) else None

        return wait_for(done, timeout, what, interval=0.3)  # type: ignore[no-any-return]

    def prs(self, state: str | None = None) -> list[PullRequest]:
        return sorted((p for p in self.forge.list(state) if p.branch == BRANCH),  # type: ignore[arg-type]
                      key=lambda p: p.number)

    def base_files(self) -> dict[str, bytes]:
        repo = pygit2.Repository(str(self.repo_path))
        tree = repo.references["refs/heads/main"].peel(pygit2.Commit).tree
        return managed_files(repo, tree, FOLDER)

    def start(self, text: str) -> PullRequest:
        """The blueprint's first PR (an ordinary one), merged by a person: the base serves v1 at 100."""
        self.write(text)
        self.sync()
        first = self.prs("open")
        assert [p.title for p in first] == ["meshgen(production): add shop/cart"], first
        merged = self.forge.merge(first[0].number)
        self.follow()
        return merged


def make_world(tmp: Path, rns: RedisNS, argo: ArgoCDServer, prom: PrometheusServer, *, mesh: str = "istio",
               prometheus_url: str | None = None, extra: str = "") -> World:
    root = tmp / "bp"
    (root / "blueprints").mkdir(parents=True)
    (root / "meshgen.yaml").write_text(
        f"environments:\n  production: {{mesh: {mesh}, path: production}}\n"
        f"argocd: {{mode: rest, url: '{argo.url}', staleAfter: 10m}}\n"
        f"prometheus: {{url: '{prometheus_url or prom.url}'}}\n" + extra)
    return World(root, rns, argo, prom, mesh)


def titles(prs: list[PullRequest]) -> list[tuple[str, str]]:
    return [(p.title, p.state) for p in prs]


def summary(rec: CanaryRecord) -> dict[str, Any]:
    return {"phase": rec.phase, "weight": rec.weight, "reason": rec.reason}
