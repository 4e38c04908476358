"""Response and request bodies of the rollout API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from meshgen.records import CanaryCommand, CanaryPhase, CanaryStep, GateValue, PRRef
from meshgen.rollout import State


class Problem(BaseModel):
    """RFC 9457 problem details (served as application/problem+json)."""

    type: str = Field("about:blank", description="A URI naming the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong in this case, and what to do about it.")


class PullRequestView(PRRef):
    """The pull request a rollout is about (the unit record's reference, as the API shows it)."""


class ArgoCDView(BaseModel):
    application: str = Field(description="The Application name looked up (name template or selector match).")
    found: bool = Field(description="Whether the poller found this Application in Argo CD.")
    sync_status: str | None = Field(default=None, description="status.sync.status: Synced, OutOfSync or Unknown.")
    out_of_sync: bool = False
    health: str | None = Field(default=None, description="status.health.status: Healthy, Progressing, Degraded, ...")
    health_message: str | None = None
    synced_revisions: list[str] = Field(default_factory=list,
                                        description="status.sync.revision, or revisions[] of a multi-source app.")
    operation_phase: str | None = None
    operation_message: str | None = None
    reconciled_at: str | None = None
    conditions: list[str] = Field(default_factory=list, description="ComparisonError / InvalidSpecError conditions.")


class BlueprintView(BaseModel):
    path: str
    commit: str | None = None


class JobRef(BaseModel):
    id: str
    state: str | None = None


class Timestamps(BaseModel):
    unit_updated_at: float = Field(description="When the sync worker last wrote this unit (unix time).")
    job_created_at: float | None = None
    job_finished_at: float | None = None


class CanaryView(BaseModel):
    """Where the unit's canary stands (meshgen.records.CanaryRecord, as the controller last wrote it)."""

    phase: CanaryPhase = Field(description="waiting: for Argo CD, a merge or Prometheus (see reason); progressing: a "
                               "step pull request is open; measuring: the gates are being read; awaiting-approval: "
                               "a person merges the step (approval: manual); inconclusive: too few requests, "
                               "waiting; paused; promoted; rolled-back.")
    stable: str = Field(description="The version serving before the canary.")
    to: str = Field(description="The version the canary moves traffic to.")
    step: int = Field(description="Index into `steps` of the weight on the environment branch; -1 before the first "
                      "step (and after a rollback).")
    steps: list[int] = Field(description="The weights of `to`, in percent, one pull request each.")
    weight: int = Field(description="Percent of traffic `to` receives per the environment branch.")
    failures: int = Field(description="Failed measurements at the current step (rolled back at failureLimit).")
    gates: list[GateValue] = Field(description="The last measurement: each gate's value, threshold, verdict, time.")
    history: list[CanaryStep] = Field(description="Every step so far: its weight, pull request number and result.")
    reason: str = Field(description="Why the canary is in this phase, or what it waits for.")
    updated_at: float = Field(description="When the controller last wrote this (unix time).")


class CanaryCommandAccepted(BaseModel):
    """A command recorded for the controller's next pass, and the sync queued to run that pass."""

    command: CanaryCommand
    canary: CanaryView = Field(description="The canary as it stood when the command was recorded.")
    job_id: str
    url: str = Field(description="Where to follow the sync job that applies the command.")


class Rollout(BaseModel):
    """Is the change to one (environment, namespace, service) live?"""

    model_config = ConfigDict(json_schema_extra={"example": {
        "env": "staging", "namespace": "payments", "service": "api-service", "team": "payments",
        "state": "healthy", "reason": "api-service-staging runs a revision containing 3f2a... and is healthy",
        "live": True, "notes": [], "stale": False, "age_seconds": 12.5,
    }})

    env: str
    namespace: str
    service: str
    team: str | None = None
    state: State
    reason: str = Field(description="Why this state, in a sentence that says what to do next.")
    live: bool | None = Field(default=None, description="The synced revision contains the change (null: not determined).")
    notes: list[str] = Field(default_factory=list, description="Facts that did not change the state (e.g. OutOfSync).")
    pr: PullRequestView | None = None
    argocd: ArgoCDView | None = None
    blueprint: BlueprintView
    job: JobRef | None = None
    timestamps: Timestamps
    canary: CanaryView | None = Field(default=None, description="The unit's canary; absent when it has none.")
    stale: bool = Field(description="The state relies on Argo CD data older than argocd.staleAfter.")
    age_seconds: float | None = Field(description="Seconds since the last successful Argo CD poll (null: never).")


class RolloutPage(BaseModel):
    items: list[Rollout]
    total: int = Field(description="Rollouts matching the filters, over all pages.")
    limit: int
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page; null on the last page.")


class SyncRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    env: str | None = Field(default=None, description="Only this environment (default: all).", max_length=63)
    blueprint_commit: str | None = Field(default=None, description="The blueprints commit that motivated the sync.",
                                         max_length=64)
    retry_rejected: bool = Field(default=False, description="Open pull requests again for renderings a reviewer "
                                                            "rejected (closed without merging).")


def sync_request_body(environments: list[str]) -> type[SyncRequestBody]:
    """SyncRequestBody whose `env` is an enum of meshgen.yaml's environments.

    The document then tells clients (and schemathesis) exactly which values are accepted, and
    FastAPI rejects the others with a 422 that lists them.
    """
    if not environments:
        return SyncRequestBody
    env_type = Literal[tuple(sorted(environments))]  # type: ignore[valid-type]
    return create_model(
        "SyncRequestBody", __base__=SyncRequestBody,
        env=(env_type | None, Field(default=None, description="Only this environment (default: all).")),  # type: ignore[arg-type]
    )


class SyncAccepted(BaseModel):
    job_id: str
    state: str
    url: str = Field(description="Where to follow the job.")


class Health(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: Literal["ready", "not-ready"]
    checks: dict[str, Check]
