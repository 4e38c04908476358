"""What meshgen remembers in Redis: sync jobs and the state of every (env, namespace, service).

The worker (and `meshgen sync`) writes these records; the rollout API reads them and never
calls a forge or Argo CD while answering a request. One module owns the key layout:

    <prefix>job:<id>                 JSON JobRecord
    <prefix>jobs                     sorted set of job ids by creation time
    <prefix>unit:<env>/<ns>/<svc>    JSON UnitRecord (svc may be _namespace or _mesh)
    <prefix>units                    set of unit keys
    <prefix>canary:<env>/<ns>/<svc>  JSON CanaryRecord: where a canary stands (meshgen.canary)
    <prefix>canaries                 set of unit keys with a canary record
    <prefix>canary-cmd:<env>/<ns>/<svc>  a person's pending command (pause, resume, abort, promote, retry)
    <prefix>version                  counter, INCR'd in the same pipeline as every save_unit,
                                     delete_unit and save_job: API processes (meshgen.api.view)
                                     compare it to notice that their snapshot is out of date

The Argo CD poller (meshgen.argocd.poller) writes beside these:

    <prefix>argocd:app:<name>        JSON of an Argo CD Application as last polled, with fetched_at
    <prefix>argocd:apps              set of the application names above (vanished apps are removed)
    <prefix>argocd:polled            unix time of the last successful poll
    <prefix>argocd:version           counter bumped when the polled content changed (API snapshots reload on it)
    <prefix>argocd:version:digest    digest of the content that last bumped argocd:version
    <prefix>argocd:poll_errors       count of failed polls
    <prefix>argocd:last_error        JSON {at, message} of the last failed poll
    <prefix>argocd:poll_lock         held while a poll runs (replicas and beat never poll twice at once)

A unit's `pr` is its branch's most recent pull request: open while under review, and still there
once merged (state merged, with merge_sha), so the rollout rules can check that Argo CD runs the
merge commit. A sync that finds no open pull request refreshes a recorded open one from the forge.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field

#: partial: some blueprints did not render (job.errors); every other unit was synced.
JobState = Literal["queued", "running", "succeeded", "partial", "failed"]
PRAction = Literal["opened", "updated", "unchanged", "closed", "merged", "rejected"]
RenderState = Literal["rendering", "render-failed", "rendered"]


class PRRef(BaseModel):
    number: int
    url: str
    state: Literal["open", "merged", "closed"]
    branch: str
    head_sha: str
    merge_sha: str | None = None


class JobPR(BaseModel):
    env: str
    branch: str
    action: PRAction
    number: int | None = None
    url: str | None = None


class JobRecord(BaseModel):
    id: str
    kind: Literal["sync"] = "sync"
    state: JobState = "queued"
    trigger: str = "cli"  # cli | webhook:<forge kind> (webhook:github, ...) | api | up
    blueprint_commit: str | None = None
    blueprint_author: str | None = None
    blueprint_subject: str | None = None  # first line of the blueprint commit's message
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    timings: dict[str, float] = Field(default_factory=dict)  # render, push, forge, total (seconds)
    prs: list[JobPR] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class UnitRecord(BaseModel):
    env: str
    namespace: str
    service: str
    team: str | None = None
    blueprint_path: str = ""
    blueprint_commit: str | None = None
    job_id: str | None = None
    render_state: RenderState = "rendered"
    render_error: str | None = None
    up_to_date: bool = False  # the environment repository's base already holds this rendering
    pr: PRRef | None = None
    updated_at: float = Field(default_factory=time.time)

    @property
    def key(self) -> str:
        return unit_key(self.env, self.namespace, self.service)


CanaryPhase = Literal["waiting", "progressing", "measuring", "awaiting-approval", "inconclusive", "paused",
                      "promoted", "rolled-back"]
CanaryCommand = Literal["pause", "resume", "abort", "promote", "retry"]
StepResult = Literal["pending", "passed", "failed", "inconclusive", "promoted", "rolled-back", "aborted"]


class GateValue(BaseModel):
    """One gate of one measurement: the value read from Prometheus against its threshold."""

    name: str
    value: float | None  # None: no data in the window
    threshold: str  # as shown to people, e.g. ">= 99%", "<= 500ms"
    ok: bool | None  # None: not decided (no data)
    at: float  # unix time the window ended


class CanaryStep(BaseModel):
    """One step of a canary's history: the weight it set, its pull request and how it ended."""

    step: int  # index into steps; -1 is the rollback (weight 0)
    weight: int  # weight of `to` this step sets
    pr: int | None = None
    result: StepResult = "pending"
    gates: list[GateValue] = Field(default_factory=list)
    reason: str = ""
    at: float = Field(default_factory=time.time)


class CanaryRecord(BaseModel):
    """Where one unit's canary stands. A cache of what Git and the forge say (the weight on the base
    branch, the step pull requests): a lost record is rebuilt from them, never trusted over them."""

    env: str
    namespace: str
    service: str
    stable: str
    to: str
    spec_hash: str  # digest of the blueprint's canary section for this environment; a change restarts
    phase: CanaryPhase = "waiting"
    step: int = -1  # index into steps of the weight on the base branch; -1: not started (weight 0)
    steps: list[int] = Field(default_factory=list)
    weight: int = 0  # weight of `to` on the base branch
    failures: int = 0  # failed measurements at the current step
    gates: list[GateValue] = Field(default_factory=list)  # the last measurement
    history: list[CanaryStep] = Field(default_factory=list)
    reason: str = ""  # why it is in this phase (what it waits for), one sentence
    healthy_since: float | None = None  # when Argo CD first reported the step's merge commit healthy
    updated_at: float = Field(default_factory=time.time)

    @property
    def key(self) -> str:
        return unit_key(self.env, self.namespace, self.service)


def unit_key(env: str, namespace: str, service: str) -> str:
    return f"{env}/{namespace}/{service}"


class Records:
    """Typed access to the records; `client` is a redis.Redis (decode_responses not required)."""

    #: Job records kept (newest first); older ones are removed as new ones are saved, so a canary timer
    #: writing a job every pass, or years of syncs, never grow Redis without bound.
    KEEP_JOBS = 2000
    _TRIM_SLACK = 100  # trim in batches, not on every save

    def __init__(self, client: Any, prefix: str = "meshgen:", *, keep_jobs: int | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.keep_jobs = self.KEEP_JOBS if keep_jobs is None else keep_jobs

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def version_key(self) -> str:
        """`<prefix>version`: bumped by every write below (what API snapshots watch)."""
        return self._k("version")

    def version(self) -> int:
        raw = self.client.get(self.version_key)
        return int(raw) if raw else 0

    # jobs
    def save_job(self, job: JobRecord) -> None:
        pipe = self.client.pipeline()
        pipe.set(self._k("job", job.id), job.model_dump_json())
        pipe.zadd(self._k("jobs"), {job.id: job.created_at})
        pipe.incr(self._k("version"))
        pipe.zcard(self._k("jobs"))
        count = pipe.execute()[-1]
        if count > self.keep_jobs + self._TRIM_SLACK:
            self._trim_jobs()

    def _trim_jobs(self) -> None:
        """Remove the oldest job records beyond `keep_jobs`."""
        old = self.client.zrange(self._k("jobs"), 0, -(self.keep_jobs + 1))
        if not old:
            return
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in old]
        pipe = self.client.pipeline()
        pipe.delete(*[self._k("job", i) for i in ids])
        pipe.zrem(self._k("jobs"), *ids)
        pipe.execute()

    def get_job(self, job_id: str) -> JobRecord | None:
        raw = self.client.get(self._k("job", job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    def recent_jobs(self, limit: int = 50) -> list[JobRecord]:
        ids = self.client.zrevrange(self._k("jobs"), 0, limit - 1)
        raws = self.client.mget([self._k("job", i.decode() if isinstance(i, bytes) else i) for i in ids]) if ids else []
        return [JobRecord.model_validate_json(r) for r in raws if r]

    # units
    def save_unit(self, unit: UnitRecord) -> None:
        pipe = self.client.pipeline()
        pipe.set(self._k("unit", unit.key), unit.model_dump_json())
        pipe.sadd(self._k("units"), unit.key)
        pipe.incr(self._k("version"))
        pipe.execute()

    def get_unit(self, env: str, namespace: str, service: str) -> UnitRecord | None:
        raw = self.client.get(self._k("unit", unit_key(env, namespace, service)))
        return UnitRecord.model_validate_json(raw) if raw else None

    def iter_units(self, batch: int = 500) -> Iterator[UnitRecord]:
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in self.client.smembers(self._k("units")))
        for i in range(0, len(keys), batch):
            chunk = keys[i:i + batch]
            for raw in self.client.mget([self._k("unit", k) for k in chunk]):
                if raw:
                    yield UnitRecord.model_validate_json(raw)

    def delete_unit(self, env: str, namespace: str, service: str) -> None:
        key = unit_key(env, namespace, service)
        pipe = self.client.pipeline()
        pipe.delete(self._k("unit", key))
        pipe.srem(self._k("units"), key)
        pipe.incr(self._k("version"))
        pipe.execute()

    # canaries
    def save_canary(self, record: CanaryRecord) -> None:
        pipe = self.client.pipeline()
        pipe.set(self._k("canary", record.key), record.model_dump_json())
        pipe.sadd(self._k("canaries"), record.key)
        pipe.incr(self._k("version"))
        pipe.execute()

    def get_canary(self, env: str, namespace: str, service: str) -> CanaryRecord | None:
        raw = self.client.get(self._k("canary", unit_key(env, namespace, service)))
        return CanaryRecord.model_validate_json(raw) if raw else None

    def iter_canaries(self) -> Iterator[CanaryRecord]:
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in self.client.smembers(self._k("canaries")))
        if keys:
            for raw in self.client.mget([self._k("canary", k) for k in keys]):
                if raw:
                    yield CanaryRecord.model_validate_json(raw)

    def delete_canary(self, env: str, namespace: str, service: str) -> None:
        key = unit_key(env, namespace, service)
        pipe = self.client.pipeline()
        pipe.delete(self._k("canary", key), self._k("canary-cmd", key))
        pipe.srem(self._k("canaries"), key)
        pipe.incr(self._k("version"))
        pipe.execute()

    def request_canary_command(self, env: str, namespace: str, service: str, command: CanaryCommand) -> None:
        """A person's command for the controller's next pass (the newest one wins)."""
        self.client.set(self._k("canary-cmd", unit_key(env, namespace, service)), command)

    def take_canary_command(self, env: str, namespace: str, service: str) -> CanaryCommand | None:
        raw = self.client.getdel(self._k("canary-cmd", unit_key(env, namespace, service)))
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return text if text in ("pause", "resume", "abort", "promote", "retry") else None  # type: ignore[return-value]


# ---- the rule for every long-running job -----------------------------------------------------

TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "partial", "failed"})
_MAX_ERROR_CHARS = 500


def failure_text(exc: BaseException) -> str:
    """What a job record says about an exception: its own message for meshgen's errors (they say
    what to do), the type and a short escaped message for anything else."""
    from meshgen.diagnostics import escape_line

    text = escape_line(str(exc))[:_MAX_ERROR_CHARS]
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return f"interrupted ({type(exc).__name__}) before the job finished; run it again"
    if type(exc).__module__.startswith("meshgen."):
        return text
    import redis

    if isinstance(exc, redis.RedisError):
        return f"Redis failed ({type(exc).__name__}: {text}); check MESHGEN_REDIS_URL and that Redis is up"
    return (f"internal error: {type(exc).__name__}: {text}; this is a meshgen bug (the worker's log has the "
            "traceback); the job was stopped and nothing more was written")


def end_unfinished(records: Records | None, job: JobRecord, exc: BaseException) -> JobRecord:
    """Whatever was raised, the job's record ends in a terminal state, with the error.

    A record already terminal (the job recorded its own failure) is left as it is. Redis being
    unreachable is logged, never raised over the original error."""
    import logging

    import redis

    current = job
    try:
        if records is not None:
            current = records.get_job(job.id) or job
        if current.state in TERMINAL_STATES:
            return current
        current = current.model_copy(update={
            "state": "failed", "finished_at": time.time(), "errors": [*current.errors, failure_text(exc)]})
        if records is not None:
            records.save_job(current)
    except (redis.RedisError, ValueError) as err:
        logging.getLogger(__name__).warning("could not record job %s as failed (%s)", job.id, err)
    return current
