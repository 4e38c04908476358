"""Poll Argo CD into Redis, so that API requests never wait on Argo CD.

    poll_once(config, settings, records)   one poll (what a Celery beat task or a test calls)
    poll_from_settings()                   the same, building config and records from MESHGEN_*
    run_forever(...) / start_background()  the loop behind `meshgen serve --poll`

Keys (beside the records contract in meshgen.records):

    <prefix>argocd:app:<name>     JSON Application (trimmed to what the rollout rules read) + fetched_at
    <prefix>argocd:apps           set of the names above (so vanished apps are removed)
    <prefix>argocd:polled         unix time of the last successful poll
    <prefix>argocd:version        bumped when the polled content changed (API snapshots reload on it);
                                  argocd:version:digest is the digest it was bumped for
    <prefix>argocd:poll_errors    count of failed polls; argocd:last_error the last message (JSON)
    <prefix>argocd:poll_lock      held during a poll, so replicas and beat do not poll twice at once
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from meshgen.argocd.mirror import open_mirror
from meshgen.argocd.source import AppSource, ArgoCDError, Locator, make_source
from meshgen.blueprint.config import ArgoCDSettings, Config
from meshgen.blueprint.loading import load_config
from meshgen.diagnostics import BlueprintError
from meshgen.gitops.jobs import CANARY_SCHEDULE_ENTRY, CANARY_TASK_NAME, POLL_SCHEDULE_ENTRY, POLL_TASK_NAME
from meshgen.records import Records, UnitRecord
from meshgen.settings import Settings

log = logging.getLogger(__name__)

#: With at most this many applications to look at, GET each by name; beyond, one list call is cheaper.
GET_BY_NAME_MAX = 20
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")


@dataclass(frozen=True)
class PollResult:
    ok: bool
    apps: int = 0  # applications cached
    missing: int = 0  # units whose application was not found (name-template mode)
    changed: bool = False  # content differed from the previous poll
    seconds: float = 0.0
    skipped: bool = False  # another poll held the lock
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ArgoKeys:
    """Key names of the Argo CD cache (shared by the poller and the API)."""

    def __init__(self, prefix: str) -> None:
        base = f"{prefix}argocd:"
        self.app_prefix = base + "app:"
        self.apps = base + "apps"
        self.polled = base + "polled"
        self.version = base + "version"
        self.poll_errors = base + "poll_errors"
        self.last_error = base + "last_error"
        self.lock = base + "poll_lock"

    def app(self, name: str) -> str:
        return self.app_prefix + name


def poll_interval(config: Config | None) -> float:
    return config.argocd.poll_interval.seconds if config and config.argocd else 30.0


def beat_schedule(settings: Settings) -> tuple[dict[str, Any], str]:
    """Celery beat's schedule from ROOT/meshgen.yaml, and a sentence saying what it holds.

    With an `argocd` section: poll Argo CD every argocd.pollInterval (on the sync queue; a poll
    still waiting when the next is due expires, so a busy worker never works through a backlog).
    Without one, or when meshgen.yaml cannot be read: no entry.
    """
    try:
        config, _ = load_config(settings.root)
    except BlueprintError as exc:
        first = exc.diagnostics[0] if exc.diagnostics else "unreadable"
        return {}, f"no Argo CD poll scheduled: meshgen.yaml in {settings.root} cannot be read ({first})"
    schedule: dict[str, Any] = {}
    notes = []
    if config.prometheus is not None or any(e.prometheus is not None for e in config.environments.values()):
        # Canaries need Prometheus: without it there is nothing a timer could measure.
        tick = settings.canary_tick
        schedule[CANARY_SCHEDULE_ENTRY] = {"task": CANARY_TASK_NAME, "schedule": tick,
                                           "options": {"queue": settings.queue, "expires": max(tick, 1.0)}}
        notes.append(f"canary controller every {tick:g}s")
    if config.argocd is None:
        notes.append(f"no Argo CD poll scheduled: meshgen.yaml in {settings.root} has no `argocd` section")
        return schedule, "; ".join(reversed(notes))
    interval = poll_interval(config)
    schedule[POLL_SCHEDULE_ENTRY] = {"task": POLL_TASK_NAME, "schedule": interval,
                                     "options": {"queue": settings.queue, "expires": max(interval, 1.0)}}
    notes.insert(0, f"Argo CD poll scheduled every {interval:g}s on queue {settings.queue}")
    return schedule, "; ".join(notes)


# ---- trimming: keep what the rollout rules and the API show, drop resource trees ------


def _pick(obj: Any, *keys: str) -> dict[str, Any]:
    return {k: obj[k] for k in keys if isinstance(obj, Mapping) and obj.get(k) not in (None, "", [], {})}


def _source(src: Any) -> dict[str, Any]:
    return _pick(src, "repoURL", "path", "targetRevision", "chart")


def trim(app: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an Application meshgen reads; still a valid v1alpha1Application."""
    meta = app.get("metadata") or {}
    spec = app.get("spec") or {}
    status = app.get("status") or {}
    op_state = status.get("operationState") or {}
    out: dict[str, Any] = {"metadata": _pick(meta, "name", "namespace", "labels")}
    out_spec: dict[str, Any] = _pick(spec, "project")
    if spec.get("source"):
        out_spec["source"] = _source(spec["source"])
    if spec.get("sources"):
        out_spec["sources"] = [_source(s) for s in spec["sources"]]
    out["spec"] = out_spec
    if app.get("operation"):
        out["operation"] = {"sync": _pick((app["operation"] or {}).get("sync") or {}, "revision", "revisions")}
    st: dict[str, Any] = _pick(status, "reconciledAt")
    if status.get("sync"):
        st["sync"] = _pick(status["sync"], "status", "revision", "revisions")
    if status.get("health"):
        st["health"] = _pick(status["health"], "status", "message")
    if op_state:
        st["operationState"] = _pick(op_state, "phase", "message", "startedAt", "finishedAt")
        if op_state.get("syncResult"):
            st["operationState"]["syncResult"] = _pick(op_state["syncResult"], "revision", "revisions")
    if status.get("conditions"):
        st["conditions"] = [_pick(c, "type", "message") for c in status["conditions"]]
    out["status"] = st
    return out


# ---- polling ----------------------------------------------------------------------------


def _fetch(source: AppSource, locator: Locator, units: list[UnitRecord]) -> tuple[dict[str, dict[str, Any]], int]:
    """The applications that can show one of `units`, by name, and how many units found none."""
    if locator.selector:
        apps = source.list(locator.server_selector())
        return {a["metadata"]["name"]: a for a in apps if (a.get("metadata") or {}).get("name")}, 0
    wanted = {locator.name_for(u.env, u.namespace, u.service, u.team) for u in units}
    wanted = {n for n in wanted if _DNS_SUBDOMAIN.match(n)}  # `_mesh`/`_namespace` units have no app name
    if len(wanted) <= GET_BY_NAME_MAX:
        found = {}
        for name in sorted(wanted):
            app = source.get(name)
            if app is not None:
                found[name] = app
    else:
        found = {a["metadata"]["name"]: a for a in source.list() if (a.get("metadata") or {}).get("name") in wanted}
    return found, len(wanted - found.keys())


def poll_once(config: Config, settings: Settings, records: Records, *, lock_ttl: float = 120.0) -> PollResult:
    """Read every Application meshgen's units need, fetch the mirror, and cache both in Redis."""
    started = time.monotonic()
    cfg: ArgoCDSettings | None = config.argocd
    if cfg is None:
        return PollResult(ok=False, error="meshgen.yaml has no `argocd` section; nothing to poll")
    keys = ArgoKeys(records.prefix)
    client = records.client
    token = f"{time.time()}:{threading.get_ident()}"
    if not client.set(keys.lock, token, nx=True, px=int(lock_ttl * 1000)):
        return PollResult(ok=True, skipped=True)
    try:
        try:
            locator = Locator.from_config(cfg)
            source = make_source(cfg, settings)
            try:
                apps, missing = _fetch(source, locator, list(records.iter_units()))
            finally:
                source.close()
        except (ArgoCDError, OSError, ValueError) as exc:
            return _record_error(client, keys, str(exc), started)
        mirror_tip = _fetch_mirror(config, settings)
        changed = _store(client, keys, apps, mirror_tip)
        return PollResult(ok=True, apps=len(apps), missing=missing, changed=changed,
                          seconds=time.monotonic() - started)
    finally:
        # Release only our own lock (a slow poll may have outlived its TTL and another taken it).
        if client.get(keys.lock) in (token, token.encode()):
            client.delete(keys.lock)


def _fetch_mirror(config: Config, settings: Settings) -> str:
    """Fetch the environment repository so revisions Argo CD reports exist locally; its tip."""
    try:
        mirror = open_mirror(config, settings)
        mirror.fetch()
        tip = mirror.tip(config.env_repo.branch)
        return str(tip) if tip else ""
    except Exception as exc:  # noqa: BLE001 - a Git outage must not stop Argo CD data from being refreshed
        log.warning("could not fetch the environment repository mirror: %s", exc)
        return ""


def _store(client: Any, keys: ArgoKeys, apps: Mapping[str, Mapping[str, Any]], mirror_tip: str) -> bool:
    now = time.time()
    trimmed = {name: trim(app) for name, app in apps.items()}
    digest = hashlib.sha256(
        json.dumps([trimmed, mirror_tip], sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    old_names = {n.decode() if isinstance(n, bytes) else n for n in client.smembers(keys.apps)}
    previous = client.get(keys.version + ":digest")
    pipe = client.pipeline(transaction=True)
    for name, app in trimmed.items():
        pipe.set(keys.app(name), json.dumps({**app, "fetched_at": now}, separators=(",", ":")))
    gone = old_names - trimmed.keys()
    for name in gone:
        pipe.delete(keys.app(name))
    if gone:
        pipe.srem(keys.apps, *gone)
    if trimmed:
        pipe.sadd(keys.apps, *trimmed)
    pipe.set(keys.polled, repr(now))
    changed = (previous.decode() if isinstance(previous, bytes) else previous) != digest
    if changed:
        pipe.set(keys.version + ":digest", digest)
        pipe.incr(keys.version)
    pipe.execute()
    return changed


def _record_error(client: Any, keys: ArgoKeys, message: str, started: float) -> PollResult:
    log.warning("Argo CD poll failed: %s", message)
    try:
        pipe = client.pipeline()
        pipe.incr(keys.poll_errors)
        pipe.set(keys.last_error, json.dumps({"at": time.time(), "message": message}))
        pipe.execute()
    except redis.RedisError:
        pass
    return PollResult(ok=False, error=message, seconds=time.monotonic() - started)


# ---- runners ----------------------------------------------------------------------------


def _records_for(settings: Settings) -> Records:
    return Records(redis.Redis.from_url(settings.redis_url), settings.redis_prefix)


def poll_from_settings(settings: Settings | None = None) -> dict[str, Any]:
    """One poll with everything taken from MESHGEN_* and ROOT/meshgen.yaml (for a Celery task)."""
    settings = settings or Settings()
    config, _ = load_config(settings.root)
    records = _records_for(settings)
    try:
        return poll_once(config, settings, records).as_dict()
    finally:
        records.client.close()


def run_forever(config: Config, settings: Settings, records: Records, stop: threading.Event) -> None:
    """Poll every argocd.pollInterval until `stop` is set; errors are logged and retried."""
    interval = poll_interval(config)
    while not stop.is_set():
        try:
            result = poll_once(config, settings, records)
            if result.ok and not result.skipped:
                log.debug("polled Argo CD: %s", result)
        except redis.RedisError as exc:
            log.warning("Argo CD poll could not reach Redis: %s", exc)
        stop.wait(interval)


def start_background(config: Config, settings: Settings, records: Records) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(config, settings, records, stop),
                              name="meshgen-argocd-poller", daemon=True)
    thread.start()
    return thread, stop

