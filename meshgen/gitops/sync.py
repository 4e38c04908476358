"""One sync: render the blueprints repository (ROOT, or a fresh checkout of MESHGEN_BLUEPRINTS_URL), then bring the environment repository's pull
requests in line with it, and record what happened.

`meshgen sync` calls `sync_repository` in-process; the Celery worker calls the same function
under the writer lock (meshgen.gitops.jobs). Record keeping is optional: without Redis the
returned JobRecord is the whole report.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pygit2
import redis

from meshgen.blueprint.config import Config, ForgeSettings
from meshgen.diagnostics import BlueprintError
from meshgen.diff import semantic_diff
from meshgen.forges import forge_spec
from meshgen.forges.base import Forge, ForgeError, ForgeTarget, GitCredential, Identity, PRState, PullRequest
from meshgen.gitops.blueprints import BlueprintsSourceError, blueprints_remote, checkout_blueprints
from meshgen.gitops.coordination import IdempotencyMarkers
from meshgen.gitops.envrepo import EnvRepo, EnvRepoError, folder_differs
from meshgen.gitops.lifecycle import Progress, SyncReport, SyncResult, branch_for, sync_env
from meshgen.gitops.transport import blueprints_access, env_repo_access
from meshgen.giturls import local_path
from meshgen.pipeline import Blocked, RenderResult, render_repository
from meshgen.records import JobPR, JobRecord, PRRef, Records, UnitRecord, end_unfinished
from meshgen.settings import Settings
from meshgen.units import Unit, content_hash

log = logging.getLogger(__name__)

Fence = Callable[[], None]


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class _Clock:
    """Seconds spent per part (render / repo / forge / records), for JobRecord.timings."""

    forge: float = 0.0
    records: float = 0.0
    checkout: float = 0.0


class _SyncEnvRepo(EnvRepo):
    """EnvRepo whose ref updates first check the fence."""

    fence: Fence | None = None

    def push(self, branch: str, new: pygit2.Oid, *, expected: pygit2.Oid | None) -> None:
        if self.fence is not None:
            self.fence()
        super().push(branch, new, expected=expected)


class _TimedForge:
    """A Forge that times every call and checks the fence before every change."""

    kind: ClassVar[str] = "timed"

    def __init__(self, inner: Forge, clock: _Clock, fence: Fence | None) -> None:
        self.inner = inner
        self._clock = clock
        self._fence = fence

    def _timed(self, call: Callable[[], Any], *, writes: bool) -> Any:
        if writes and self._fence is not None:
            self._fence()
        started = time.perf_counter()
        try:
            return call()
        finally:
            self._clock.forge += time.perf_counter() - started

    def find_open(self, branch: str) -> PullRequest | None:
        return self._timed(lambda: self.inner.find_open(branch), writes=False)  # type: ignore[no-any-return]

    def create(self, *, branch: str, base: str, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        return self._timed(  # type: ignore[no-any-return]
            lambda: self.inner.create(branch=branch, base=base, title=title, body=body, labels=labels), writes=True)

    def update(self, number: int, *, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        return self._timed(  # type: ignore[no-any-return]
            lambda: self.inner.update(number, title=title, body=body, labels=labels), writes=True)

    def comment(self, number: int, body: str) -> None:
        self._timed(lambda: self.inner.comment(number, body), writes=True)

    def close(self, number: int, *, comment: str | None = None) -> PullRequest:
        return self._timed(lambda: self.inner.close(number, comment=comment), writes=True)  # type: ignore[no-any-return]

    def merge(self, number: int) -> PullRequest:
        return self._timed(lambda: self.inner.merge(number), writes=True)  # type: ignore[no-any-return]

    def get(self, number: int) -> PullRequest:
        return self._timed(lambda: self.inner.get(number), writes=False)  # type: ignore[no-any-return]

    def list(self, state: PRState | None = None) -> list[PullRequest]:
        return self._timed(lambda: self.inner.list(state), writes=False)  # type: ignore[no-any-return]

    def check_access(self) -> str:
        return self._timed(self.inner.check_access, writes=False)  # type: ignore[no-any-return]

    def git_credential(self) -> GitCredential | None:
        return self.inner.git_credential()


# ---- the environment repository and the forge, from meshgen.yaml -----------------------


def env_repo_identity(root: Path, config: Config) -> str:
    """What names one environment repository across processes (the writer lock's resource)."""
    local = local_path(config.env_repo.url, root)
    return str(local.resolve()) if local is not None else config.env_repo.url


def ensure_local_repo(path: Path, branch: str, identity: Identity) -> None:
    """Create the embedded environment repository: bare, one empty commit on `branch`."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    repo = pygit2.init_repository(str(path), bare=True, initial_head=branch)
    sig = pygit2.Signature(identity.name, identity.email)
    repo.create_commit(f"refs/heads/{branch}", sig, sig, "meshgen: initial commit\n",
                       repo.TreeBuilder().write(), [])
    log.info("created the environment repository %s (branch %s)", path, branch)


def _state_path(root: Path, settings: Settings) -> Path:
    return settings.state_dir if settings.state_dir.is_absolute() else root / settings.state_dir


def _credentials(root: Path, fs: ForgeSettings, settings: Settings) -> dict[str, Any]:
    """The token handling meshgen.yaml chose, as the provider's keyword arguments."""
    # The token itself only goes to the forge client (which redacts it); never into logs or records.
    if fs.app is not None:  # the provider makes the app (its registration accepts `app`)
        return {"app": fs.fields()["app"], "app_private_key_file": settings.github_app_private_key_file}
    if fs.token_file:
        path = Path(fs.token_file)
        return {"token_file": path if path.is_absolute() else root / path}
    if fs.token_env == "MESHGEN_FORGE_TOKEN" and settings.forge_token is not None:
        return {"token": settings.forge_token.get_secret_value()}  # also covers MESHGEN_FORGE_TOKEN_FILE
    return {"token_env": fs.token_env}


def forge_from_config(root: Path, config: Config, settings: Settings, *, local_path: Path | None,
                      identity: Identity, options: Mapping[str, Any] | None = None) -> Forge:
    """The forge meshgen.yaml's envRepo.forge describes, built by its registration; `options` tune
    HTTP retries (tests, doctor)."""
    fs = config.env_repo.forge
    target = ForgeTarget(fields=fs.fields(), credentials=_credentials(root, fs, settings), local_path=local_path,
                         identity=identity, options=options or {})
    return forge_spec(fs.kind).build(target)


# ---- the canary controller, installed by the entry points -------------------------------
#
# Every sync renders canary units at the weight their canary is at and then reconciles every canary
# (meshgen.canary.controller). The controller sits above this module (it reads Argo CD and
# Prometheus), so it is not imported here: the entry points (the Celery worker, the CLI, `meshgen up`)
# install it with `install_canary_controller`, as the tests' conftest does.


class Resync(Protocol):
    """Re-sync one environment with these units replaced and these branch notes; the sync's report.
    `refresh`: branches whose open pull request is rebuilt on the current base even if it would be kept."""

    def __call__(self, units: Mapping[str, Unit], notes: Mapping[str, Any], *,
                 refresh: Collection[str] = ()) -> SyncReport: ...


class CanaryPass(Protocol):
    """The canaries of one environment during one sync (meshgen.canary.controller.EnvPass)."""

    warnings: list[str]

    def prepare(self) -> tuple[list[Unit], Mapping[str, Any]]:
        """The environment's units with every canary at the weight it wants now, and the branch notes."""
        ...

    def reconcile(self, resync: Resync) -> None:
        """One pass over the canaries after the sync `prepare` fed; `resync` writes a step."""
        ...


#: Builds one environment's pass from keyword arguments (root, config_root, config, repo, forge, env,
#: base, grouping, units, render_at, records, settings): EnvPass's constructor.
CanaryPasses = Callable[..., CanaryPass]

_canary_passes: CanaryPasses | None = None
_CANARY_KEY = re.compile(rb"^[ \t]*canary[ \t]*:", re.MULTILINE)


def install_canary_controller(passes: CanaryPasses | None) -> CanaryPasses | None:
    """Make every sync in this process run `passes` (None uninstalls); returns the one it replaces."""
    global _canary_passes
    previous, _canary_passes = _canary_passes, passes
    return previous


class _NoCanaries:
    """Without a controller: refuse rather than render a canary back to its stable version."""

    def __init__(self, *, root: Path, env: str, units: Sequence[Unit], **_: Any) -> None:
        self.warnings: list[str] = []
        self._root, self._env, self._units = root, env, units

    def prepare(self) -> tuple[list[Unit], Mapping[str, Any]]:
        for path in sorted({u.blueprint_path for u in self._units if u.blueprint_path}):
            try:
                data = (self._root / path).read_bytes()
            except OSError:
                continue
            if _CANARY_KEY.search(data):
                raise EnvRepoError(
                    f"{path} declares a canary but this process runs syncs without the canary controller, "
                    "so the sync would undo its steps; call meshgen.canary.controller.install() at start-up "
                    "(the worker, the CLI and `meshgen up` do)")
        return list(self._units), {}

    def reconcile(self, resync: Resync) -> None:
        return None


# ---- records (best effort: a sync is not failed because Redis blinked) ------------------


class _Recorder:
    def __init__(self, records: Records | None, clock: _Clock) -> None:
        self.records = records
        self.clock = clock

    def run(self, what: str, action: Callable[[Records], None]) -> None:
        if self.records is None:
            return
        started = time.perf_counter()
        try:
            action(self.records)
        except redis.RedisError as exc:
            log.warning("could not record %s in Redis (%s); the sync itself is unaffected", what, exc)
        finally:
            self.clock.records += time.perf_counter() - started

    def job(self, job: JobRecord) -> None:
        self.run(f"job {job.id}", lambda r: r.save_job(job))


#: A sync that finds at most this many recorded pull requests closed or merged since the last sync
#: asks the forge for each by number; beyond, or when a unit's number is unknown, one listing per env.
GET_BY_NUMBER_MAX = 20


def _pr_ref(repo: EnvRepo, result: SyncResult) -> PRRef | None:
    if result.number is None:
        return None
    action = result.action
    state: PRState = "merged" if action == "merged" else "closed" if action in ("closed", "rejected") else "open"
    head = result.head_sha
    if not head:
        tip = repo.tip(result.branch)
        head = str(tip) if tip else ""
    return PRRef(number=result.number, url=result.url or "", state=state, branch=result.branch, head_sha=head,
                 merge_sha=result.merge_sha if state == "merged" else None)


def _ref_of(pr: PullRequest) -> PRRef:
    return PRRef(number=pr.number, url=pr.url, state=pr.state, branch=pr.branch, head_sha=pr.head_sha,
                 merge_sha=pr.merge_sha if pr.state == "merged" else None)


def _needs_refresh(previous: UnitRecord | None) -> bool:
    """A unit whose change is in the base and has no pull request this sync: is its last PR's outcome known?"""
    if previous is None:
        return True  # no record (first sync with records, or records lost): look for a merged PR
    pr = previous.pr
    if pr is None:
        return not previous.up_to_date  # its change landed in the base since the last sync
    if pr.state == "open":
        return True  # merged or closed since the last sync
    return pr.state == "merged" and not pr.merge_sha  # recorded before merge commits were kept


def _settled_prs(forge: Forge, env: str, base: str, branches: Mapping[tuple[str, str], str],
                 previous: Mapping[tuple[str, str], UnitRecord], wanted: Sequence[tuple[str, str]]
                 ) -> dict[tuple[str, str], PRRef | None]:
    """The current pull request of each `wanted` unit (merged, closed or none), with few forge calls.

    Recorded open pull requests are asked for by number when there are at most GET_BY_NUMBER_MAX of
    them; otherwise (or when a unit has no recorded number) one listing of merged pull requests
    serves the whole environment. Raises ForgeError.
    """
    recorded = [previous[k].pr if k in previous else None for k in wanted]
    numbers = {pr.number for pr in recorded if pr is not None}
    known = all(pr is not None for pr in recorded)
    by_number: dict[int, PullRequest] = {}
    newest_merged: dict[str, PullRequest] = {}
    if known and len(numbers) <= GET_BY_NUMBER_MAX:
        for number in sorted(numbers):
            by_number[number] = forge.get(number)
    else:
        prefix = f"meshgen/{env}/"
        for pr in forge.list("merged"):  # newest first
            if pr.branch.startswith(prefix) and pr.base == base:
                newest_merged.setdefault(pr.branch, pr)
                by_number[pr.number] = pr
    out: dict[tuple[str, str], PRRef | None] = {}
    for key in wanted:
        old = previous[key].pr if key in previous else None
        branch = branches[key]
        found = by_number.get(old.number) if old is not None else None
        newer = newest_merged.get(branch)
        if newer is not None and (found is None or newer.number > found.number):
            found = newer
        if found is not None and found.branch == branch and found.state in ("merged", "closed"):
            out[key] = _ref_of(found)
        else:
            out[key] = None
    return out


def _record_units(records: Records, repo: EnvRepo, forge: Forge, config: Config, env: str, units: Sequence[Unit],
                  report: SyncReport, job: JobRecord, blocked: Sequence[Blocked] = (),
                  failed_files: Collection[str] = ()) -> None:
    """One UnitRecord per rendered (env, ns, svc); records of deleted blueprints follow their removal PR.

    A unit without a pull-request change this sync keeps its branch's last pull request: a merged
    one (with its merge commit) is what the rollout rules compare Argo CD's revision with.
    """
    grouping = config.env_repo.grouping
    base = repo.commit_at(config.env_repo.branch)
    base_tree = base.tree if base is not None else None
    results = {r.branch: r for r in report.results}
    previous = {(u.namespace, u.service): u for u in records.iter_units() if u.env == env}
    live = set()
    prs: dict[tuple[str, str], PRRef | None] = {}
    up_to_date: dict[tuple[str, str], bool] = {}
    branches: dict[tuple[str, str], str] = {}
    wanted: list[tuple[str, str]] = []
    for unit in units:
        key = (unit.namespace, unit.service)
        live.add(key)
        branch = branches[key] = branch_for(unit, grouping)
        result = results.get(branch)
        up_to_date[key] = not folder_differs(repo.repo, base_tree, unit)
        if result is not None:
            prs[key] = _pr_ref(repo, result)
            continue
        old = previous.get(key)
        prs[key] = old.pr if old is not None and old.pr is not None and old.pr.branch == branch else None
        if up_to_date[key] and (_needs_refresh(old) or (old is not None and old.pr is not None
                                                         and old.pr.branch != branch)):
            wanted.append(key)
    if wanted:
        try:
            prs.update(_settled_prs(forge, env, config.env_repo.branch, branches, previous, wanted))
        except ForgeError as exc:
            log.warning("could not look up merged pull requests of %s (%s); keeping the recorded ones", env, exc)
    for unit in units:
        key = (unit.namespace, unit.service)
        records.save_unit(UnitRecord(
            env=env, namespace=unit.namespace, service=unit.service, team=unit.team,
            blueprint_path=unit.blueprint_path, blueprint_commit=job.blueprint_commit, job_id=job.id,
            render_state="rendered", up_to_date=up_to_date[key], pr=prs[key],
        ))
    held = {(b.namespace, b.service) for b in blocked}
    for old in [u for k, u in previous.items() if k not in live and k not in held
                and u.blueprint_path not in failed_files]:
        stub = Unit(env, old.namespace, old.service, None, "", {})
        result = results.get(branch_for(stub, grouping))
        if result is None or result.action == "closed":
            records.delete_unit(env, old.namespace, old.service)  # its folder is gone from the base
        else:
            records.save_unit(old.model_copy(update={
                "job_id": job.id, "up_to_date": False, "updated_at": time.time(),
                "pr": _pr_ref(repo, result)}))


def record_merged(records: Records, pr: PullRequest) -> int:
    """Mark the units whose recorded pull request is `pr` (same URL and number) merged, now.

    What `meshgen pr merge` calls so the rollout API shows awaiting-sync without waiting for the
    next sync (which would record the same). Returns how many units were updated. Raises RedisError.
    """
    return record_pr_state(records, pr) if pr.state == "merged" else 0


def record_pr_state(records: Records, pr: PullRequest) -> int:
    """Record that `pr` (matched by number, URL and branch) is now merged or closed, on every unit carrying it.

    `meshgen pr merge|close` and the forge's pull_request webhooks call this so the rollout API
    answers awaiting-sync / rejected at once; the next sync records the same. Returns how many
    units changed. Raises RedisError.
    """
    if pr.state not in ("merged", "closed"):
        return 0
    ref = _ref_of(pr)
    updated = 0
    for unit in records.iter_units():
        old = unit.pr
        if old is None or old.number != pr.number or old.url != pr.url or old.branch != pr.branch:
            continue
        if old.state == pr.state and old.merge_sha == ref.merge_sha:
            continue
        records.save_unit(unit.model_copy(update={"pr": ref, "up_to_date": pr.state == "merged" or unit.up_to_date,
                                                  "updated_at": time.time()}))
        updated += 1
    return updated


def _record_blocked(records: Records, result: RenderResult, job: JobRecord) -> None:
    """render-failed, with the file's first error, on every unit a failing blueprint would render."""
    now = time.time()
    seen = set()
    for b in result.blocked:
        seen.add((b.env, b.namespace, b.service))
        old = records.get_unit(b.env, b.namespace, b.service)
        base = old or UnitRecord(env=b.env, namespace=b.namespace, service=b.service)
        records.save_unit(base.model_copy(update={
            "blueprint_path": b.file, "render_state": "render-failed", "render_error": b.error,
            "job_id": job.id, "updated_at": now}))
    for unit in records.iter_units():  # files that failed to load name no unit: match the recorded path
        if unit.blueprint_path in result.failed_files and (unit.env, unit.namespace, unit.service) not in seen:
            records.save_unit(unit.model_copy(update={
                "render_state": "render-failed", "render_error": result.failed_files[unit.blueprint_path],
                "job_id": job.id, "updated_at": now}))


def _record_render_failure(records: Records, exc: BlueprintError, job: JobRecord) -> None:
    """Mark the units of the failing blueprint files, so the API shows why they are stuck."""
    first: dict[str, str] = {}
    for d in exc.diagnostics:
        if d.severity == "error":
            first.setdefault(d.file, str(d))
    for unit in records.iter_units():
        if unit.blueprint_path in first:
            records.save_unit(unit.model_copy(update={
                "render_state": "render-failed", "render_error": first[unit.blueprint_path],
                "job_id": job.id, "updated_at": time.time()}))


# ---- the flow ------------------------------------------------------------------------


def _ends_terminal(fn: Callable[..., JobRecord]) -> Callable[..., JobRecord]:
    """The job rule (meshgen.records.end_unfinished): whatever `fn` raises, its job record ends
    failed with the error. The job is made here when the caller passes none, so its id is known."""

    @functools.wraps(fn)
    def run(root: Path, settings: Settings, **kwargs: Any) -> JobRecord:
        job = kwargs.get("job") or JobRecord(id=new_job_id(), trigger=kwargs.get("trigger", "cli"))
        try:
            return fn(root, settings, **{**kwargs, "job": job})
        except BaseException as exc:
            end_unfinished(kwargs.get("records"), job, exc)
            raise

    return run


@_ends_terminal
def sync_repository(
    root: Path,
    settings: Settings,
    *,
    env: str | None = None,
    trigger: str = "cli",
    blueprint_commit: str | None = None,
    blueprint_author: str | None = None,
    records: Records | None = None,
    job: JobRecord | None = None,
    fence: Fence | None = None,
    forge_options: Mapping[str, Any] | None = None,
    skip_if_synced: bool = False,
    progress: Progress | None = None,
    retry_rejected: bool = False,
) -> JobRecord:
    """Render ROOT and sync every environment (or `env`) to the environment repository.

    Returns the finished JobRecord (state succeeded). Raises BlueprintError when rendering
    fails (nothing is pushed), EnvRepoError / ForgeError when writing fails; in both cases
    the job is recorded as failed first. `fence` is called right before every ref update
    and pull-request change (the worker's lock check). `skip_if_synced` (the worker) does
    nothing when the same content was already synced onto the same base (needs `records`).

    With `settings.blueprints_url` set, ROOT's blueprints are not read: the repository is fetched
    and the tip of `settings.blueprints_branch` is rendered from a checkout under the state
    directory (see `_checkout`); `blueprint_commit` must then be on that branch, else
    BlueprintsSourceError (recorded as a failed job first). ROOT still anchors the state
    directory and the relative paths of meshgen.yaml (envRepo.url, templates, token files).

    A rendering a reviewer rejected (closed its pull request without merging) is not opened again
    (reported `rejected` in job.prs, with a warning) unless `retry_rejected`.
    """
    root = Path(root)
    job = job or JobRecord(id=new_job_id(), trigger=trigger)
    job = job.model_copy(update={
        "state": "running", "started_at": time.time(), "finished_at": None, "errors": [],
        "blueprint_commit": blueprint_commit or job.blueprint_commit,
        "blueprint_author": blueprint_author or job.blueprint_author,
    })
    clock = _Clock()
    recorder = _Recorder(records, clock)
    recorder.job(job)
    started = time.perf_counter()
    render_root, config_root = root, None
    if settings.blueprints_url:
        try:
            render_root, config_root = _checkout(root, settings, job, clock)
        except (BlueprintsSourceError, EnvRepoError) as exc:
            job.errors.append(str(exc))
            _finish(job, "failed", clock, started, render=0.0)
            recorder.job(job)
            raise
    _fill_provenance(job, root, settings)
    render_started = time.perf_counter()
    try:
        # Partial: one team's broken blueprint blocks only its own units (see render_repository).
        result = render_repository(render_root, env=env, config_root=config_root, partial=True)
    except BlueprintError as exc:  # meshgen.yaml itself (or --env) is wrong: nothing can render
        job.errors = [str(d) for d in exc.diagnostics if d.severity == "error"]
        job.warnings = [*job.warnings, *(str(d) for d in exc.diagnostics if d.severity == "warning")]
        _finish(job, "failed", clock, started, render=time.perf_counter() - render_started)
        failure = exc
        recorder.run("render failure", lambda r: _record_render_failure(r, failure, job))
        recorder.job(job)
        raise
    render_s = time.perf_counter() - render_started
    job.warnings = [*job.warnings, *(str(d) for d in result.warnings)]  # keep notes of earlier attempts
    job.errors = [str(d) for d in result.errors]
    if result.blocked or result.failed_files:
        rendered = result
        recorder.run("render failures", lambda r: _record_blocked(r, rendered, job))
    try:
        _sync_rendered(root, settings, result, env, job, recorder, fence, forge_options,
                       skip_if_synced and not retry_rejected, progress, retry_rejected, render_root)
    except (EnvRepoError, ForgeError) as exc:
        job.errors.append(str(exc))
        _finish(job, "failed", clock, started, render=render_s)
        recorder.job(job)
        raise
    _finish(job, "partial" if result.errors else "succeeded", clock, started, render=render_s)
    recorder.job(job)
    return job


def _checkout(root: Path, settings: Settings, job: JobRecord, clock: _Clock) -> tuple[Path, Path | None]:
    """Fetch MESHGEN_BLUEPRINTS_URL and materialise the commit to render; (render root, config root).

    The job's blueprint_commit becomes the rendered commit (the branch tip: the pushed commit or
    newer). meshgen.yaml at ROOT, when there is one (the Helm chart mounts it from a ConfigMap),
    shadows the commit's, as it does for the API and the Argo CD poll, which read ROOT's.
    """
    started = time.perf_counter()
    assert settings.blueprints_url is not None
    pushed = job.blueprint_commit
    url = blueprints_remote(settings.blueprints_url, root)
    try:
        path, sha = checkout_blueprints(url, settings.blueprints_branch, _state_path(root, settings), commit=pushed,
                                        access=blueprints_access(url, settings))
    finally:
        clock.checkout += time.perf_counter() - started
    note = None
    if pushed and not sha.startswith(pushed.lower()):
        note = (f"commit {pushed[:12]} is no longer the tip of {settings.blueprints_branch!r}: rendered "
                            f"the newer tip {sha[:12]} (it includes {pushed[:12]}; the newest push wins)")
    if note and note not in job.warnings:  # a retried attempt keeps the notes of earlier ones
        job.warnings.append(note)
    job.blueprint_commit = sha
    log.info("rendering blueprints commit %s from %s", sha[:12], path)
    return path, (root if (root / "meshgen.yaml").is_file() else None)


def _fill_provenance(job: JobRecord, root: Path, settings: Settings) -> None:
    """Author and subject of the blueprint commit, from the blueprints mirror or ROOT's own git repository.

    Without a commit (a plain `meshgen sync` of a working tree), ROOT's HEAD counts only when
    nothing under ROOT differs from it: uncommitted edits are never attributed to a commit.
    """
    repo: pygit2.Repository | None = None
    try:
        if settings.blueprints_url:
            from meshgen.gitops.blueprints import _BlueprintsMirror

            repo = _BlueprintsMirror(blueprints_remote(settings.blueprints_url, root),
                                     cache_dir=_state_path(root, settings), prefix="blueprints-").repo
        else:
            found = pygit2.discover_repository(str(root))
            repo = pygit2.Repository(found) if found else None
        if repo is None:
            return
        if job.blueprint_commit:
            commit = repo.revparse_single(job.blueprint_commit).peel(pygit2.Commit)
        elif settings.blueprints_url or repo.is_bare or repo.head_is_unborn:
            return
        else:
            workdir = Path(repo.workdir).resolve()
            inside = root.resolve().relative_to(workdir).as_posix()
            prefix = "" if inside == "." else inside + "/"
            state = (_state_path(root, settings).resolve().relative_to(workdir).as_posix() + "/"
                     if _state_path(root, settings).resolve().is_relative_to(workdir) else None)
            dirty = [p for p, flags in repo.status(untracked_files="all").items()
                     if p.startswith(prefix) and flags != pygit2.GIT_STATUS_IGNORED
                     and not (state and p.startswith(state))]
            if dirty:
                return
            commit = repo.head.peel(pygit2.Commit)
            job.blueprint_commit = str(commit.id)
    except (pygit2.GitError, KeyError, ValueError, EnvRepoError, OSError):
        return  # provenance is a courtesy: a sync never fails for it
    job.blueprint_author = job.blueprint_author or commit.author.name
    job.blueprint_subject = job.blueprint_subject or commit.message.split("\n", 1)[0].strip()


def _web_url(url: str | None) -> str | None:
    """The blueprints repository's web address (commit links), when its URL is http(s); credentials dropped."""
    if not url or not url.startswith(("https://", "http://")):
        return None
    scheme, rest = url.split("://", 1)
    host_path = rest.split("@", 1)[-1] if "@" in rest.split("/", 1)[0] else rest
    return f"{scheme}://{host_path}".rstrip("/").removesuffix(".git")


def _finish(job: JobRecord, state: str, clock: _Clock, started: float, *, render: float) -> None:
    total = time.perf_counter() - started
    job.state = state  # type: ignore[assignment]
    job.finished_at = time.time()
    sync_s = max(total - render - clock.records - clock.checkout, 0.0)
    job.timings = {
        **({"checkout": round(clock.checkout, 4)} if clock.checkout else {}),
        "render": round(render, 4),
        "repo": round(max(sync_s - clock.forge, 0.0), 4),  # fetch, tree building, commits, pushes
        "forge": round(clock.forge, 4),
        "records": round(clock.records, 4),
        "total": round(total, 4),
    }


def _sync_rendered(root: Path, settings: Settings, result: RenderResult, env: str | None, job: JobRecord,
                   recorder: _Recorder, fence: Fence | None, forge_options: Mapping[str, Any] | None,
                   skip_if_synced: bool, progress: Progress | None = None, retry_rejected: bool = False,
                   render_root: Path | None = None) -> None:
    from meshgen.pipeline import render_at_weight

    config = result.config
    render_root = render_root or root
    settings_er = config.env_repo
    identity = Identity(settings_er.author.name, settings_er.author.email)
    local = local_path(settings_er.url, root)
    if local is not None:
        ensure_local_repo(local, settings_er.branch, identity)
    inner = forge_from_config(root, config, settings, local_path=local, identity=identity, options=forge_options)
    forge = _TimedForge(inner, recorder.clock, fence)
    try:
        # The forge's token (or envRepo.git's) authenticates fetch and push; SSH URLs use the key.
        repo = _SyncEnvRepo(str(local) if local is not None else settings_er.url,
                            cache_dir=_state_path(root, settings), identity=identity,
                            access=env_repo_access(root, config, settings, inner))
        repo.fence = fence
        envs = [env] if env else list(config.environments)
        content = f"{','.join(envs)}|{content_hash(result.units)}"
        synced = skip_if_synced and _already_synced(recorder, repo, settings_er.branch, content, job)
        by_env: dict[str, list[Unit]] = {e: [] for e in envs}
        for unit in result.units:
            by_env.setdefault(unit.env, []).append(unit)
        for name in envs:
            # The canary controller (meshgen.canary.controller): canary units render at the weight their
            # canary is at, then every canary is reconciled once, under this sync's lock and fence.
            passes = _canary_passes or _NoCanaries
            canaries = passes(root=render_root, config_root=root, config=config, repo=repo, forge=forge, env=name,
                              base=settings_er.branch, grouping=settings_er.grouping, units=by_env[name],
                              render_at=lambda u, w: render_at_weight(render_root, config, u, w),
                              records=recorder.records, settings=settings)
            units, notes = canaries.prepare()

            def sync_units(units: list[Unit], notes: Mapping[str, Any], env_name: str = name,
                           refresh: Collection[str] = ()) -> SyncReport:
                report = _sync_one_env(root, config, repo, forge, env_name, units, result, job, progress,
                                       retry_rejected, settings.blueprints_url, canary=notes, refresh=refresh)

                def record(r: Records) -> None:
                    _record_units(r, repo, forge, config, env_name, units, report, job,
                                  [b for b in result.blocked if b.env == env_name], result.failed_files)

                recorder.run(f"units of {env_name}", record)
                return report

            if not synced:  # a duplicate sync of the same content onto the same base writes nothing
                sync_units(units, notes)
            canaries.reconcile(lambda replaced, notes, env_name=name, refresh=(): sync_units(
                [replaced.get(u.folder, u) for u in by_env[env_name]], notes, env_name, refresh))
            job.warnings.extend(w for w in canaries.warnings if w not in job.warnings)
        if synced:
            return
        tip = repo.tip(settings_er.branch)
        recorder.run("idempotency marker", lambda r: IdempotencyMarkers(r.client, r.prefix).put(
            repo.remote, settings_er.branch, content, job=job.id, base=str(tip) if tip else None))
    finally:
        close = getattr(forge.inner, "close_connections", None)
        if close is not None:
            close()


def _already_synced(recorder: _Recorder, repo: EnvRepo, branch: str, content: str, job: JobRecord) -> bool:
    """Same content already synced onto the same base (a redelivered or duplicate task): do nothing."""
    if recorder.records is None:
        return False
    try:
        marker = IdempotencyMarkers(recorder.records.client, recorder.records.prefix).get(repo.remote, branch, content)
    except redis.RedisError:
        return False  # cannot tell: syncing again is safe, only slower
    if marker is None:
        return False
    repo.fetch()
    tip = repo.tip(branch)
    if marker.get("base") != (str(tip) if tip else None):
        return False  # the base moved (a merge): PRs may need rebuilding or closing
    job.warnings.append(f"nothing to do: job {marker.get('job')} already synced this content onto this base")
    return True


def _sync_one_env(root: Path, config: Config, repo: EnvRepo, forge: Forge, env: str, units: list[Unit],
                  result: RenderResult, job: JobRecord, progress: Progress | None = None,
                  retry_rejected: bool = False, blueprints_url: str | None = None,
                  canary: Mapping[str, Any] | None = None, refresh: Collection[str] = ()) -> SyncReport:
    er = config.env_repo
    by_file: dict[str, list[str]] = {}
    for d in result.warnings:
        by_file.setdefault(d.file, []).append(str(d))
    validation = {u.folder: by_file[u.blueprint_path] for u in units if u.blueprint_path in by_file}
    templates = Path(er.templates) if er.templates else None
    if templates is not None and not templates.is_absolute():
        templates = root / templates
    report = sync_env(
        repo, forge, units, env=env, env_path=config.env_path(env), base=er.branch, grouping=er.grouping,
        describe=semantic_diff, blueprint_commit=job.blueprint_commit, blueprint_author=job.blueprint_author,
        blueprint_subject=job.blueprint_subject, blueprint_url=_web_url(blueprints_url),
        validation=validation, auto_merge=env in er.auto_merge, template_dir=templates, progress=progress,
        retry_rejected=retry_rejected,
        blocked=[(b.namespace, b.service) for b in result.blocked if b.env == env],
        failed_files=list(result.failed_files),
        canary=canary,
        refresh=refresh,
    )
    job.prs.extend(JobPR(env=env, branch=r.branch, action=r.action, number=r.number, url=r.url)
                   for r in report.results)
    for r in report.results:
        if r.action == "rejected":
            note = (f"{env}: {r.branch}: this rendering was rejected in pull request #{r.number} (closed without "
                    "merging); nothing opened. Change the blueprint, or run `meshgen sync --retry-rejected` "
                    "(API: POST /api/v1/syncs {\"retry_rejected\": true}) to open it again")
            if note not in job.warnings:
                job.warnings.append(note)
    return report


def pr_summary(prs: Iterable[JobPR]) -> str:
    """`1 opened, 20 unchanged`: what a sync did to pull requests, counted by action."""
    actions = Counter(pr.action for pr in prs)
    return ", ".join(f"{n} {action}" for action, n in sorted(actions.items())) or "no changes"


def format_report(job: JobRecord) -> list[str]:
    """Short per-PR lines for the terminal."""
    lines = [f"{pr.action:<9} {pr.env:<12} {pr.branch}" + (f"  #{pr.number}" if pr.number else "")
             + (f"  {pr.url}" if pr.url else "") for pr in job.prs]
    t = job.timings
    lines.append(f"job {job.id}: {job.state}, pull requests {pr_summary(job.prs)} "
                 f"(render {t.get('render', 0):.2f}s, repo {t.get('repo', 0):.2f}s, forge {t.get('forge', 0):.2f}s)")
    return lines
