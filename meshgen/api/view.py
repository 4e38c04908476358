"""The joined rollout view, kept in process memory and rebuilt only when Redis says it changed.

A request for one rollout would otherwise read and parse three JSON records (unit, job,
Application) and walk Git history. Instead every API process holds a snapshot: one
pre-encoded JSON body per (env, namespace, service). A background task checks a cheap
fingerprint every `check_interval` seconds (version counters, the newest job records and the
last-poll time, two round trips) and rebuilds the snapshot in a thread when it moved. Requests
only look up a dict and append the two time-dependent fields (`stale`, `age_seconds`).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshgen.api.models import (
    ArgoCDView,
    BlueprintView,
    CanaryView,
    JobRef,
    PullRequestView,
    Rollout,
    Timestamps,
)
from meshgen.argocd.mirror import Containment
from meshgen.argocd.poller import ArgoKeys
from meshgen.argocd.source import ArgoCDError, Locator, parse_selector, selector_matches
from meshgen.blueprint.config import Config
from meshgen.records import CanaryRecord, JobRecord, Records, UnitRecord
from meshgen.rollout import STATES, AppFacts, app_facts, decide

log = logging.getLogger(__name__)

#: Rebuild at least this often even when no fingerprint moved (writers that do not bump a version).
FULL_REFRESH_SECONDS = 300.0
_FILTER_CACHE = 256


@dataclass(frozen=True)
class Entry:
    key: str  # env/namespace/service
    env: str
    namespace: str
    service: str
    team: str | None
    state: str
    used_argocd: bool
    head: bytes  # the Rollout JSON without its closing brace and the time-dependent fields
    data: dict[str, Any]  # the same, as a dict (status page)


@dataclass
class Snapshot:
    entries: dict[str, Entry]
    keys: list[str]  # sorted
    built_at: float
    build_seconds: float
    envs: list[str]
    teams: list[str]
    _filtered: dict[tuple[str | None, str | None, str | None], list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def matching(self, env: str | None, team: str | None, state: str | None) -> list[str]:
        """Sorted keys passing the filters (cached per snapshot: it never changes)."""
        if env is None and team is None and state is None:
            return self.keys
        sig = (env, team, state)
        hit = self._filtered.get(sig)
        if hit is None:
            hit = [k for k in self.keys if _passes(self.entries[k], env, team, state)]
            with self._lock:
                if len(self._filtered) >= _FILTER_CACHE:
                    self._filtered.clear()
                self._filtered[sig] = hit
        return hit

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(STATES, 0)
        for e in self.entries.values():
            out[e.state] += 1
        return out


def _passes(e: Entry, env: str | None, team: str | None, state: str | None) -> bool:
    return (env is None or e.env == env) and (team is None or e.team == team) and (state is None or e.state == state)


EMPTY = Snapshot({}, [], 0.0, 0.0, [], [])


def page_after(keys: list[str], cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    """The page after `cursor` and the next cursor.

    A cursor is the key of the last item served ("env/namespace/service"), so any string is a
    position in the sorted order: pages stay stable when rollouts are added or removed between
    requests, and there is no invalid cursor to reject.
    """
    start = bisect.bisect_right(keys, cursor) if cursor is not None else 0
    page = keys[start:start + limit]
    more = start + limit < len(keys)
    return page, (page[-1] if more and page else None)


class RolloutView:
    """The per-process snapshot and the rules to rebuild it."""

    def __init__(self, records: Records, config: Config | None, containment: Containment,
                 *, env_repo_url: str | None = None, check_interval: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.records = records
        self.config = config
        self.containment = containment
        self.env_repo_url = env_repo_url
        self.check_interval = check_interval
        self.clock = clock
        self.keys = ArgoKeys(records.prefix)
        argocd = config.argocd if config else None
        self.argocd_configured = argocd is not None
        self.stale_after = argocd.stale_after.seconds if argocd else None
        self.locator = Locator.from_config(argocd) if argocd else None
        self.snapshot: Snapshot = EMPTY
        self.polled_at: float | None = None
        self.last_error: str | None = None
        self._fingerprint: str | None = None
        self._loaded = False
        self._build_lock = threading.Lock()

    # ---- time-dependent fields ------------------------------------------------------

    def age(self, now: float | None = None) -> float | None:
        if self.polled_at is None:
            return None
        return max(0.0, (now or self.clock()) - self.polled_at)

    def is_stale(self, age: float | None) -> bool:
        if self.stale_after is None:
            return False
        return age is None or age > self.stale_after

    def tails(self) -> tuple[bytes, bytes]:
        """(tail for entries that used Argo CD data, tail for the others), computed once per request."""
        age = self.age()
        age_json = "null" if age is None else f"{age:.3f}"
        stale = "true" if self.is_stale(age) else "false"
        return (f',"stale":{stale},"age_seconds":{age_json}}}'.encode(),
                f',"stale":false,"age_seconds":{age_json}}}'.encode())

    # ---- refresh --------------------------------------------------------------------

    def _read_fingerprint(self) -> tuple[str, float | None]:
        client, prefix = self.records.client, self.records.prefix
        pipe = client.pipeline(transaction=False)
        pipe.get(self.records.version_key)  # bumped by every unit/job write (meshgen.records)
        pipe.get(self.keys.version)
        pipe.get(self.keys.polled)
        pipe.zrevrange(prefix + "jobs", 0, 7)  # a sync writes units, then finishes its job record
        pipe.zcard(prefix + "jobs")
        version, argo_version, polled, recent, njobs = pipe.execute()
        raws = client.mget([f"{prefix}job:{_s(i)}" for i in recent]) if recent else []
        digest = hashlib.sha1(repr((version, argo_version, njobs, raws)).encode()).hexdigest()
        return digest, float(polled) if polled else None

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot if Redis changed (or `force`); True when rebuilt. Raises RedisError."""
        with self._build_lock:
            fingerprint, polled = self._read_fingerprint()
            self.polled_at = polled
            old_enough = self.clock() - self.snapshot.built_at > FULL_REFRESH_SECONDS
            if not force and self._loaded and fingerprint == self._fingerprint and not old_enough:
                return False
            self.snapshot = self._build()
            self._fingerprint = fingerprint
            self._loaded = True
            self.last_error = None
            return True

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    async def run(self) -> None:
        """Keep the snapshot fresh until cancelled (the app's lifespan task)."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # noqa: BLE001 - Redis down: keep serving the last snapshot, see /readyz
                if str(exc) != self.last_error:
                    log.warning("rollout view refresh failed: %s", exc)
                self.last_error = str(exc)
            await asyncio.sleep(self.check_interval)

    # ---- building -------------------------------------------------------------------

    def _load_apps(self) -> dict[str, dict[str, Any]]:
        client = self.records.client
        names = sorted(_s(n) for n in client.smembers(self.keys.apps))
        apps: dict[str, dict[str, Any]] = {}
        for i in range(0, len(names), 1000):
            chunk = names[i:i + 1000]
            for name, raw in zip(chunk, client.mget([self.keys.app(n) for n in chunk]), strict=True):
                if raw:
                    apps[name] = json.loads(raw)
        return apps

    def _load_jobs(self, ids: set[str]) -> dict[str, JobRecord]:
        ordered = sorted(ids)
        jobs: dict[str, JobRecord] = {}
        for i in range(0, len(ordered), 1000):
            chunk = ordered[i:i + 1000]
            raws = self.records.client.mget([f"{self.records.prefix}job:{j}" for j in chunk])
            for job_id, raw in zip(chunk, raws, strict=True):
                if raw:
                    jobs[job_id] = JobRecord.model_validate_json(raw)
        return jobs

    def _build(self) -> Snapshot:
        started = time.perf_counter()
        units = list(self.records.iter_units())
        jobs = self._load_jobs({u.job_id for u in units if u.job_id})
        apps = self._load_apps() if self.argocd_configured else {}
        canaries = {c.key: c for c in self.records.iter_canaries()}
        find = self._finder(apps)
        facts_cache: dict[str, AppFacts] = {}
        entries: dict[str, Entry] = {}
        for unit in units:
            name, app = find(unit)
            facts = None
            if app is not None:
                facts = facts_cache.get(name)
                if facts is None:
                    facts = facts_cache[name] = app_facts(app)
            job = jobs.get(unit.job_id) if unit.job_id else None
            entry = self._entry(unit, job, name, app, facts, canaries.get(unit.key))
            entries[entry.key] = entry
        keys = sorted(entries)
        # meshgen.yaml's order (what the platform wrote), then environments only the records know, sorted.
        configured = list(self.config.environments) if self.config else []
        envs = configured + sorted({e.env for e in entries.values()} - set(configured))
        teams = sorted({e.team for e in entries.values() if e.team})
        return Snapshot(entries, keys, self.clock(), time.perf_counter() - started, envs, teams)

    def _finder(self, apps: Mapping[str, dict[str, Any]]) -> Callable[[UnitRecord], tuple[str, dict[str, Any] | None]]:
        locator = self.locator
        if locator is None:
            return lambda unit: ("", None)
        if not locator.selector:
            def by_name(unit: UnitRecord) -> tuple[str, dict[str, Any] | None]:
                name = locator.name_for(unit.env, unit.namespace, unit.service, unit.team)
                return name, apps.get(name)
            return by_name
        # Label selectors: index the apps by every label, then check only the candidates of the
        # unit's first equality term (10k units x 10k apps would otherwise be 10^8 matches).
        index: dict[tuple[str, str], list[str]] = {}
        for app_name, app in apps.items():
            for k, v in ((app.get("metadata") or {}).get("labels") or {}).items():
                index.setdefault((k, v), []).append(app_name)
        all_names = sorted(apps)

        def by_selector(unit: UnitRecord) -> tuple[str, dict[str, Any] | None]:
            selector = locator.selector_for(unit.env, unit.namespace, unit.service, unit.team) or ""
            try:
                terms = parse_selector(selector)
            except ArgoCDError:
                return selector, None
            eq = next(((k, next(iter(vs))) for k, op, vs in terms if op == "=" and len(vs) == 1), None)
            candidates = index.get(eq, []) if eq else all_names
            for app_name in candidates:
                labels = (apps[app_name].get("metadata") or {}).get("labels") or {}
                if selector_matches(selector, labels):
                    return app_name, apps[app_name]
            return selector, None

        return by_selector

    def _entry(self, unit: UnitRecord, job: JobRecord | None, name: str, app: dict[str, Any] | None,
               facts: AppFacts | None, canary: CanaryRecord | None = None) -> Entry:
        decision = decide(unit, facts, contains=self.containment, app_name=name or None,
                          argocd_configured=self.argocd_configured, job_state=job.state if job else None,
                          env_repo_url=self.env_repo_url)
        argocd = None
        if self.argocd_configured:
            argocd = ArgoCDView(application=name, found=facts is not None)
            if facts is not None:
                argocd = ArgoCDView(
                    application=facts.name or name, found=True, sync_status=facts.sync_status,
                    out_of_sync=facts.out_of_sync, health=facts.health, health_message=facts.health_message,
                    synced_revisions=list(facts.revisions), operation_phase=facts.operation_phase,
                    operation_message=facts.operation_message, reconciled_at=facts.reconciled_at,
                    conditions=list(facts.error_conditions),
                )
        pr = PullRequestView.model_validate(unit.pr.model_dump()) if unit.pr else None
        rollout = Rollout(
            env=unit.env, namespace=unit.namespace, service=unit.service, team=unit.team,
            state=decision.state, reason=decision.reason, live=decision.live, notes=list(decision.notes),
            pr=pr, argocd=argocd, blueprint=BlueprintView(path=unit.blueprint_path, commit=unit.blueprint_commit),
            job=JobRef(id=unit.job_id, state=job.state if job else None) if unit.job_id else None,
            timestamps=Timestamps(unit_updated_at=unit.updated_at,
                                  job_created_at=job.created_at if job else None,
                                  job_finished_at=job.finished_at if job else None),
            canary=canary_view(canary) if canary else None, stale=False, age_seconds=None,
        )
        # `canary` is absent (not null) for the many units without one.
        data = rollout.model_dump(mode="json", exclude={"stale", "age_seconds", *(() if canary else ("canary",))})
        head = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()[:-1]
        return Entry(unit.key, unit.env, unit.namespace, unit.service, unit.team, decision.state,
                     decision.used_argocd, head, data)


def canary_view(record: CanaryRecord) -> CanaryView:
    return CanaryView.model_validate(record.model_dump(include=set(CanaryView.model_fields)))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
