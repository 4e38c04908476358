"""Is my change live? The rollout state of one (env, namespace, service), as pure functions.

Inputs are what meshgen already knows: the UnitRecord the sync worker wrote (render result and
pull request) and the Argo CD Application the poller cached (a plain dict, as the API returns
it). The one question these functions cannot answer alone, whether a commit contains another,
is passed in as `contains(descendant, ancestor)` so the rules stay testable without Git.

The Argo CD rules follow Kargo's Argo CD health checker, with two deliberate differences:
OutOfSync does not demote a healthy app (many apps are OutOfSync forever because of ignored
fields or mutating webhooks), and a later commit that contains the merge counts as live.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from meshgen.records import UnitRecord

State = Literal[
    "rendering",
    "render-failed",
    "up-to-date",
    "awaiting-review",
    "rejected",
    "awaiting-sync",
    "progressing",
    "healthy",
    "degraded",
    "unknown",
]
#: Every state, in the order the status page lists them (the order of `State` above).
STATES: tuple[State, ...] = get_args(State)

#: `contains(descendant, ancestor)`: True/False, or None when a commit is not known locally.
Contains = Callable[[str, str], "bool | None"]

_ERROR_CONDITIONS = frozenset({"ComparisonError", "InvalidSpecError"})
_FAILED_PHASES = frozenset({"Failed", "Error"})
_RUNNING_PHASES = frozenset({"Running", "Terminating"})


@dataclass(frozen=True)
class AppFacts:
    """What the rules read from an Argo CD Application (absent fields are None / empty)."""

    name: str
    sync_status: str | None = None
    health: str | None = None
    health_message: str | None = None
    revisions: tuple[str, ...] = ()  # status.sync.revision, or revisions[] of a multi-source app
    applied_revisions: tuple[str, ...] = ()  # operationState.syncResult: what the last sync applied
    source_repos: tuple[str, ...] = ()  # repoURL per source, aligned with `revisions`
    operation_running: bool = False  # `operation` set, or operationState phase Running/Terminating
    operation_phase: str | None = None
    operation_message: str | None = None
    finished_at: str | None = None
    reconciled_at: str | None = None
    error_conditions: tuple[str, ...] = ()  # "ComparisonError: message"

    @property
    def out_of_sync(self) -> bool:
        return self.sync_status == "OutOfSync"

    @property
    def health_trusted(self) -> bool:
        """Health describes the last sync only if Argo CD reconciled after that sync finished."""
        if not self.finished_at:
            return True
        reconciled = _time(self.reconciled_at)
        finished = _time(self.finished_at)
        if reconciled is None or finished is None:
            return reconciled is not None or finished is None
        return reconciled >= finished


@dataclass(frozen=True)
class Decision:
    state: State
    reason: str  # one sentence a service owner can act on
    used_argocd: bool = False  # the state depends on Argo CD data (so staleness matters)
    live: bool | None = None  # the synced revision contains the change (None: not determined)
    notes: tuple[str, ...] = field(default=())  # reported facts that did not change the state


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)  # 3.11 reads the trailing Z
    except ValueError:
        return None


def _strs(values: Any) -> tuple[str, ...]:
    return tuple(v for v in values or () if isinstance(v, str) and v)


def app_facts(app: Mapping[str, Any]) -> AppFacts:
    """Extract the facts the rules need from an Application (REST or custom resource form)."""
    meta = app.get("metadata") or {}
    spec = app.get("spec") or {}
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    health = status.get("health") or {}
    op_state = status.get("operationState") or {}
    result = op_state.get("syncResult") or {}
    if sync.get("revisions"):
        revisions = _strs(sync.get("revisions"))
        repos = tuple(str((s or {}).get("repoURL", "")) for s in spec.get("sources") or ())
    else:
        revisions = _strs([sync.get("revision")])
        repos = (str((spec.get("source") or {}).get("repoURL", "")),)
    applied = _strs(result.get("revisions")) or _strs([result.get("revision")])
    phase = op_state.get("phase") or None
    errors = tuple(
        f"{c.get('type')}: {c.get('message', '')}".rstrip(": ")
        for c in status.get("conditions") or ()
        if isinstance(c, Mapping) and c.get("type") in _ERROR_CONDITIONS
    )
    return AppFacts(
        name=str(meta.get("name", "")),
        sync_status=sync.get("status") or None,
        health=health.get("status") or None,
        health_message=health.get("message") or None,
        revisions=revisions,
        applied_revisions=applied,
        source_repos=repos if len(repos) == len(revisions) else (),
        operation_running=bool(app.get("operation")) or phase in _RUNNING_PHASES,
        operation_phase=phase,
        operation_message=op_state.get("message") or None,
        finished_at=op_state.get("finishedAt") or None,
        reconciled_at=status.get("reconciledAt") or None,
        error_conditions=errors,
    )


def normalize_repo_url(url: str) -> str:
    """Compare Git URLs loosely: scheme, user, `.git` and trailing slashes do not matter."""
    url = url.strip().lower().rstrip("/")
    url = url.removesuffix(".git")
    if "://" in url:
        url = url.split("://", 1)[1]
    url = url.split("@", 1)[-1]  # user@host
    return url.replace(":", "/", 1) if "/" not in url.split(":", 1)[0] else url


def _candidate_revisions(facts: AppFacts, env_repo_url: str | None) -> Sequence[str]:
    """The revisions that belong to the environment repository.

    A multi-source app lists one revision per source (charts, value files, ...). When the
    sources name the environment repository, only its revisions count; otherwise every
    revision is tried (a chart version simply never contains a commit).
    """
    revisions = facts.revisions
    if facts.out_of_sync and facts.applied_revisions:
        # status.sync.revision is what Argo CD compared against (the branch tip), not what it
        # applied; for an OutOfSync app the last sync operation says what is in the cluster.
        revisions = facts.applied_revisions
    if env_repo_url and facts.source_repos and len(facts.source_repos) == len(revisions):
        wanted = normalize_repo_url(env_repo_url)
        mine = [r for r, repo in zip(revisions, facts.source_repos, strict=True) if normalize_repo_url(repo) == wanted]
        if mine:
            return mine
    return revisions


def _health_decision(facts: AppFacts, good: State, good_reason: str, live: bool | None) -> Decision:
    """Errors, running operations and health, in Kargo's order; `good` when all is well."""
    notes = (f"Argo CD reports {facts.sync_status}; a healthy app stays healthy while OutOfSync",) \
        if facts.out_of_sync else ()

    def decide(state: State, reason: str) -> Decision:
        return Decision(state, reason, used_argocd=True, live=live, notes=notes)

    if facts.error_conditions:
        return decide("degraded", f"Argo CD cannot use application {facts.name}: {facts.error_conditions[0]}")
    if facts.operation_phase in _FAILED_PHASES:
        message = f": {facts.operation_message}" if facts.operation_message else ""
        return decide("degraded", f"the last sync of {facts.name} {facts.operation_phase.lower()}{message}")
    if facts.operation_running:
        return decide("progressing", f"Argo CD is syncing {facts.name}")
    if not facts.health_trusted:
        return decide(
            "progressing",
            f"Argo CD has not re-assessed the health of {facts.name} since its last sync finished "
            f"(reconciledAt {facts.reconciled_at or 'never'} < finishedAt {facts.finished_at})",
        )
    health = facts.health
    message = f": {facts.health_message}" if facts.health_message else ""
    if health == "Healthy":
        return decide(good, good_reason)
    if health in ("Progressing", "Suspended"):
        return decide("progressing", f"{facts.name} is {health.lower()}{message}")
    if health in ("Degraded", "Missing"):
        return decide("degraded", f"{facts.name} is {health.lower()}{message}")
    return decide("unknown", f"Argo CD reports health {health or 'nothing'} for {facts.name}{message}")


def _unmerged(unit: UnitRecord, app: AppFacts | None, job_state: str | None) -> Decision:
    """The state of a unit with no merged pull request (none, or closed while up to date)."""
    if not unit.up_to_date:
        if job_state in ("queued", "running"):
            return Decision("rendering", f"the sync job is {job_state}")
        return Decision("unknown", "rendered, but no pull request was recorded; "
                                   "the sync job may have failed (see GET /api/v1/jobs/{id})")
    # Nothing pending in Git. Argo CD can still say the service is not fine.
    if app is None:
        return Decision("up-to-date", "the environment repository already holds this rendering")
    found = _health_decision(app, "up-to-date", "the environment repository holds this rendering "
                                                f"and {app.name} is healthy", None)
    if found.state == "unknown":
        return Decision("up-to-date", "the environment repository already holds this rendering",
                        used_argocd=True, notes=found.notes)
    return found


def decide(
    unit: UnitRecord,
    app: AppFacts | None,
    *,
    contains: Contains,
    app_name: str | None = None,
    argocd_configured: bool = True,
    job_state: str | None = None,
    env_repo_url: str | None = None,
) -> Decision:
    """The rollout state of `unit`.

    `app` is the cached Application (None: not found by the poller), `app_name` what it was
    looked up as (for messages), `job_state` the state of the unit's last sync job.
    """
    if unit.render_state == "rendering":
        return Decision("rendering", "meshgen is rendering this blueprint")
    if unit.render_state == "render-failed":
        return Decision("render-failed", unit.render_error or "the blueprint failed to render; run meshgen validate")
    pr = unit.pr
    if pr is not None and pr.state == "open":
        return Decision("awaiting-review", f"pull request #{pr.number} waits for review and merge")
    if pr is not None and pr.state == "closed" and not unit.up_to_date:
        return Decision("rejected", f"pull request #{pr.number} was closed without merging; "
                                    "change the blueprint to open a new one, or retry this rendering with "
                                    "`meshgen sync --retry-rejected`")

    if pr is None or pr.state != "merged":
        return _unmerged(unit, app, job_state)

    # A merged pull request: is its merge commit in what Argo CD synced?
    if not argocd_configured:
        return Decision("awaiting-sync", f"pull request #{pr.number} is merged; without `argocd` in meshgen.yaml "
                                         "meshgen cannot see the cluster, so the rollout stops here", live=None)
    if app is None:
        name = app_name or "(none)"
        return Decision("unknown", f"no Argo CD application {name} was found; check argocd.nameTemplate or "
                                   "argocd.selector in meshgen.yaml", used_argocd=True)
    target = pr.merge_sha or pr.head_sha
    via = "merge commit" if pr.merge_sha else "head commit (the merge commit is not recorded)"
    revisions = _candidate_revisions(app, env_repo_url)
    if not target:
        return Decision("unknown", f"pull request #{pr.number} is merged but its commit is not recorded",
                        used_argocd=True)
    if not revisions:
        return Decision("awaiting-sync", f"{app.name} has not synced any revision yet", used_argocd=True, live=False)
    answers = [contains(rev, target) for rev in revisions]
    if not any(answers):
        if all(a is None for a in answers):
            return Decision("unknown", f"revision {revisions[0][:12]} synced by {app.name} is not in the "
                                       "environment-repository mirror yet (it is fetched on every poll)",
                            used_argocd=True)
        return Decision("awaiting-sync", f"{app.name} runs {revisions[0][:12]}, which does not contain the "
                                         f"{via} {target[:12]} of pull request #{pr.number}",
                        used_argocd=True, live=False)
    return _health_decision(app, "healthy", f"{app.name} runs a revision containing {target[:12]} and is healthy",
                            True)
