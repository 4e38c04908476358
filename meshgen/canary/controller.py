"""The canary controller: walks each blueprint's canary from `stable` to `to`, one pull request per step.

Where the truth lives
---------------------
Git and the forge hold every durable fact; Redis (records.CanaryRecord) is a cache rebuilt from them.

* The weight a canary is at is the weight on the environment repository's base branch. The pipeline
  writes it into the rendered objects whose content depends on the split (and only those), as the
  annotations `meshgen.dev/canary-weight` and `meshgen.dev/canary-version` (meshgen.canary.steps):
  readable without knowing the mesh or the Linkerd flavour, part of the content (so it survives squash
  merges and rebases), and absent at weight 0, so a canary rolled back, or not started, is byte for byte
  the blueprint as written. The diff of a step is the weights plus these two lines on the same objects.
* A step in review is the open pull request on the unit's normal branch; its head's files carry the
  weight it proposes, its head commit a `Meshgen-Canary-Note` trailer (the title/description context,
  with the previous step's gate results) and its description a `meshgen-canary` marker.
* History (which pull request set which weight, a rollback) is rebuilt from the forge's merged pull
  requests of the branch whose markers name this canary (`spec`: a digest of the canary section).

So a restarted worker or a flushed Redis reads the same step back. What is only in Redis: when Argo CD
first reported the step healthy (`healthy_since`; rebuilt from Argo CD's `finishedAt`, else now, so
the window can only get longer) and the count of failed measurements at this step (rebuilt as 0, so
at worst it measures again). A resumed step always measures again before it advances: a step passes
only on a measurement taken by the pass that advances it.

What a pass does (once per sync, and on a timer: Celery beat's `meshgen.canary.tick`, `meshgen up`)
-------------------------------------------------------------------------------------------------
`prepare` (before the sync writes anything): every canary unit is rendered at the weight the canary
wants now, which is the weight of its open pull request if there is one, else the base's (0 when the
base runs another `to`). An ordinary sync therefore never reverts or rewrites a step, and a blueprint
edit during a canary lands at the current weight. The branch's note keeps the step's title and text.

`reconcile` (after the sync, under the same writer lock and fence), per canary:

1. A person's command (records.take_canary_command): pause / resume / abort (roll back) / promote (the
   step PR goes straight to 100 and is merged) / retry (restart a rolled-back canary).
2. An open step PR: merged by meshgen for `approval: auto` (phase progressing), else left for a person
   (awaiting-approval). An open rollback PR is merged unless `rollback: manual`.
3. Base at 0 and not rolled back: start, the PR for steps[0] (a changed `to` while the base still runs
   the old one first rolls that back).
4. Base at a step: measure only once Argo CD reports the step's merge commit (or a descendant) healthy
   (the poller's cached Application when fresh, else Argo CD itself), then after `interval`:
   inconclusive waits; fail counts toward `failureLimit` (exceeded: the rollback PR, weight 0, phase
   rolled-back with the failing values; it restarts only on a changed canary section or `retry`);
   pass opens the next step's PR (its description carries these gate values), or at 100: promoted.
5. Prometheus unreachable, Argo CD stale or absent, a PR not merged: the canary waits, `reason` says why.

A step or rollback PR is written by re-syncing the whole environment with the canary at its new weight.
The canaries' passes run up to the PR they need, then one re-sync carries all of them (each on its own
branch), then each pass goes on with its PR, in order (so N canaries starting at once cost one re-sync,
not N). The PRs were all built on the same base; merging them one after the other is a true merge onto
the moved base on every forge, clean because each changes only its own folder (and one that no longer
merges is rebuilt by the next sync, `_head_still_fits`). A base branch that merges only up-to-date branches
(GitHub's strict required checks, GitLab's fast-forward merges) refuses the second and later ones: a refused
PR whose head lacks the base tip is proposed again with its branch rebuilt on the moved base (a re-sync of
its own after the batch's, `refresh`) and merged once more; once per canary per pass, so a second refusal
(say, required checks still running on the new head) is the canary's reason and the next pass retries.
Canaries sharing a branch (team or env grouping) are re-synced one at a time, at once, as before: a step
PR never carries another canary's step.

One step PR per canary at a time follows from the lifecycle's one open PR per branch, and the next
weight is computed from the base read in the same pass: two passes that race open the same PR (the
second finds it unchanged) or nothing (the base already has it), never a step further.
Every canary's pass is wrapped: an error becomes the canary's `reason` and the sync goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pygit2
import redis

from meshgen.blueprint.config import Config
from meshgen.blueprint.loading import load_file
from meshgen.blueprint.model import Canary, ServiceBlueprint
from meshgen.canary.gates import Gate, Measurement, Target, default_gates, measure
from meshgen.canary.prometheus import Prometheus, PrometheusError
from meshgen.canary.steps import read_weight
from meshgen.diagnostics import BlueprintError
from meshgen.forges.base import Forge, ForgeError, PullRequest
from meshgen.gitops.coordination import LockLost
from meshgen.gitops.envrepo import EnvRepo, EnvRepoError, managed_files
from meshgen.gitops.lifecycle import Grouping, SyncReport, branch_for, head_canary_note
from meshgen.gitops.sync import Resync, install_canary_controller
from meshgen.records import CanaryPhase, CanaryRecord, CanaryStep, GateValue, Records
from meshgen.render.registry import mesh
from meshgen.units import Unit

if TYPE_CHECKING:
    from meshgen.argocd.source import AppSource

log = logging.getLogger(__name__)

Note = dict[str, Any]
RenderAt = Callable[[Unit, int], Unit]

#: A cached Argo CD Application older than this many poll intervals is not trusted: Argo CD is read.
STALE_POLLS = 3
_CANARY_MARKER = re.compile(r"<!-- meshgen-canary: (\{.*?\}) -->")
_TERMINAL = ("promoted", "rolled-back")


@dataclass
class _Canary:
    unit: Unit  # rendered as written (weight 0)
    blueprint: ServiceBlueprint
    canary: Canary
    mesh: str
    spec: str
    branch: str
    base_version: str | None = None
    base_weight: int = 0
    pr: PullRequest | None = None  # the open pull request on the branch
    pr_weight: int | None = None
    pr_note: Note | None = None
    in_base: bool = False  # the base branch has the unit's folder

    @property
    def name(self) -> str:
        return self.unit.display_name

    @property
    def base_at(self) -> int:
        """The base's weight of *this* canary's `to` (-1: the base runs another version's step)."""
        if self.base_weight == 0:
            return 0
        return self.base_weight if self.base_version == self.canary.to else -1


@dataclass(frozen=True)
class _Proposal:
    """A pull request a canary's pass needs: its unit at `weight` with `note` on its branch."""

    c: _Canary
    weight: int
    note: Note
    refresh: bool = False  # rebuild its open PR on the current base (an up-to-date-only base refused it)


#: A canary's pass (EnvPass._one): yields the pull request it needs, is sent what the re-sync did.
_Steps = Generator[_Proposal, SyncReport, None]


def install() -> None:
    """Run this controller in every sync of the process; the entry points call it at start-up."""
    install_canary_controller(EnvPass)


def spec_hash(canary: Canary) -> str:
    """Digest of a canary section (as it applies to one environment): a change restarts the canary."""
    text = json.dumps(canary.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prometheus_for(root: Path, config: Config, env: str) -> Prometheus | None:
    """The Prometheus client for `env`, or None when meshgen.yaml names none. A token that is configured
    but cannot be read is a PrometheusError (the canary waits and says which setting to fix)."""
    cfg = config.prometheus_for(env)
    return None if cfg is None else Prometheus.from_settings(cfg, root)


@dataclass
class EnvPass:
    """The canaries of one environment, for one sync. `records` may be None (`meshgen sync` without Redis)."""

    root: Path  # where the blueprints are read (the rendered checkout)
    config_root: Path  # where meshgen.yaml's relative paths start
    config: Config
    repo: EnvRepo
    forge: Forge
    env: str
    base: str
    grouping: Grouping
    units: Sequence[Unit]
    render_at: RenderAt
    records: Records | None = None
    settings: Any = None
    now: Callable[[], float] = time.time
    canaries: list[_Canary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _loaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # records as read: unchanged ones are not saved
    # One Argo CD client per pass (when the poller's cache is stale or absent), not one per canary.
    _argo_source: AppSource | None = field(default=None, init=False, repr=False)
    # The forge's merged pull requests, listed once for every record rebuilt in the pass (until it merges).
    _merged_prs: list[PullRequest] | None = field(default=None, init=False, repr=False)
    # While a batch's passes go on: the base read once after its re-sync (see _base_weight, _merge).
    _batch_base: pygit2.Commit | None = field(default=None, init=False, repr=False)
    # Canary folders whose branch this pass already rebuilt after a refused merge (at most once: no loop).
    _refreshed: set[str] = field(default_factory=set, init=False, repr=False)

    # ---- before the sync --------------------------------------------------------------

    def prepare(self) -> tuple[list[Unit], dict[str, Note]]:
        """The environment's units with every canary at the weight it wants now, and the branch notes."""
        try:
            self.canaries = self._find()
            if not self.canaries:
                return list(self.units), {}
            self.repo.fetch()
            self._read_git()
            return self._at_wanted()
        except (EnvRepoError, ForgeError):
            raise
        except Exception as exc:
            raise EnvRepoError(f"{self.env}: could not read where its canaries stand ({type(exc).__name__}: "
                               f"{exc}); nothing was written, the sync is retried") from exc

    def _find(self) -> list[_Canary]:
        found: list[_Canary] = []
        loaded: dict[str, Any] = {}
        for unit in self.units:
            if not unit.blueprint_path or unit.service.startswith("_"):
                continue
            path = self.root / unit.blueprint_path
            try:
                if unit.blueprint_path not in loaded:
                    data = path.read_bytes()
                    loaded[unit.blueprint_path] = (
                        load_file(self.root, unit.blueprint_path, self.config, env=self.env, data=data)
                        if b"canary" in data else None)
            except OSError:
                continue
            file = loaded[unit.blueprint_path]
            if file is None:
                continue
            for inst in file.instances:
                bp = inst.blueprint
                if (inst.env == unit.env and isinstance(bp, ServiceBlueprint) and bp.canary is not None
                        and (bp.namespace, bp.service) == (unit.namespace, unit.service)):
                    found.append(_Canary(unit, bp, bp.canary, inst.mesh, spec_hash(bp.canary),
                                         branch_for(unit, self.grouping)))
        return found

    def _read_git(self) -> None:
        base = self.repo.commit_at(self.base)
        if base is None:
            raise EnvRepoError(f"base branch {self.base!r} does not exist in {self.repo.remote}")
        opened = {pr.branch: pr for pr in self.forge.list("open") if pr.base == self.base}
        for c in self.canaries:
            files = managed_files(self.repo.repo, base.tree, c.unit.folder)
            c.in_base = bool(files)
            c.base_version, c.base_weight = read_weight(files.values())
            c.pr, c.pr_weight, c.pr_note = opened.get(c.branch), None, None
            tip = self.repo.tip(c.branch) if c.pr is not None else None
            if tip is not None:
                head = self.repo.repo[tip].peel(pygit2.Commit)
                version, weight = read_weight(managed_files(self.repo.repo, head.tree, c.unit.folder).values())
                c.pr_weight = weight if weight == 0 or version == c.canary.to else 0
                note = head_canary_note(head)
                c.pr_note = note if note is not None and note.get("weight") == c.pr_weight else None

    def _wanted(self, c: _Canary) -> int:
        if c.pr_weight is not None:
            return c.pr_weight
        return max(c.base_at, 0)

    def _at_wanted(self, override: Mapping[str, tuple[int, Note, Unit]] | None = None
                   ) -> tuple[list[Unit], dict[str, Note]]:
        """Every unit, each canary at the weight it wants (`override`: folder -> weight, note, rendered unit)."""
        by_folder = {c.unit.folder: c for c in self.canaries}
        units: list[Unit] = []
        notes: dict[str, Note] = {}
        for unit in self.units:
            c = by_folder.get(unit.folder)
            if c is None:
                units.append(unit)
                continue
            if override is not None and c.unit.folder in override:
                weight, note, rendered = override[c.unit.folder]
            else:
                weight = self._wanted(c)
                note = c.pr_note if c.pr_note is not None else self._note(c, weight)
                rendered = self._render(unit, weight)
            units.append(rendered)
            if weight != c.base_weight or (weight and c.base_at != weight):
                notes[c.branch] = note
        return units, notes

    def _render(self, unit: Unit, weight: int) -> Unit:
        try:
            return self.render_at(unit, weight)
        except BlueprintError as exc:
            raise EnvRepoError(f"{unit.display_name}: cannot render its canary at {weight}%: {exc}") from exc

    def _note(self, c: _Canary, weight: int, *, previous: Mapping[str, Any] | None = None,
              why: str | None = None) -> Note:
        kind = "rollback" if weight == 0 else "step"
        if kind == "rollback" and c.base_at == -1 and c.base_version == c.canary.stable and c.base_weight == 100:
            kind, why = "settle", f"{c.canary.stable} is stable now"
        elif kind == "rollback" and why is None:
            why = (f"the environment runs {c.base_version} at {c.base_weight}%, the canary now rolls out "
                   f"{c.canary.to}" if c.base_at == -1 else "rolled back")
        note: Note = {"kind": kind, "unit": c.name, "stable": c.canary.stable, "to": c.canary.to, "weight": weight,
                      "steps": list(c.canary.steps), "spec": c.spec, "why": why or "",
                      "previous": dict(previous) if previous else None}
        if weight == 0 and c.base_at == -1:
            note["restart"] = True  # clears the previous `to` off the base: not this canary's rollback
        return note

    # ---- after the sync ---------------------------------------------------------------

    def reconcile(self, resync: Resync) -> None:
        """One pass over the environment's canaries (after `prepare` and the sync it fed).

        Each canary's pass (`_one`) runs up to the pull request it needs (a step or a rollback), if any, and
        waits there; then one re-sync carries all of them and each canary's pass goes on with the report
        (merge or wait for approval, records), in order. So starting N canaries costs one re-sync of the
        environment, not N. A canary sharing its branch with another canary (team or env grouping) does not
        wait: its pull request is re-synced at once, alone, so a step never carries another canary's step.
        """
        if self.canaries:
            self.repo.fetch()
            self._read_git()
        self._refreshed = set()
        try:
            shared = self._shared_branches()
            waiting: list[tuple[_Steps, _Proposal]] = []
            for c in self.canaries:
                run = self._one(c)
                proposal = self._go_on(c, run, None)
                while proposal is not None and c.branch in shared:
                    proposal = self._go_on(c, run, self._resync(resync, [proposal])[c.unit.folder])
                if proposal is not None:
                    waiting.append((run, proposal))
            # One round, plus one per canary whose merge an up-to-date-only base refused (_merge_fresh).
            while waiting:
                batch, waiting = _next_batch(waiting)
                reports = self._resync(resync, [p for _, p in batch])
                # One fetch for the batch, not two per canary (each costs a walk of every branch):
                # each canary's race check reads its own folder, which no other PR of the batch changes.
                self._batch_base = self.repo.commit_at(self.base) if self._fetched() else None
                try:
                    for run, p in batch:
                        proposal = self._go_on(p.c, run, reports[p.c.unit.folder])
                        if proposal is not None:
                            waiting.append((run, proposal))
                finally:
                    self._batch_base = None
                self._fetched()
        finally:
            if self._argo_source is not None:
                self._argo_source.close()
                self._argo_source = None
        self._forget_gone()

    def _fetched(self) -> bool:
        """Fetch; False when it failed (each canary's race check then fetches, and fails, on its own)."""
        try:
            self.repo.fetch()
        except LockLost:
            raise
        except (EnvRepoError, pygit2.GitError) as exc:
            log.warning("%s: fetching the environment repository failed: %s", self.env, exc)
            return False
        return True

    def _shared_branches(self) -> set[str]:
        seen: set[str] = set()
        shared: set[str] = set()
        for c in self.canaries:
            (shared if c.branch in seen else seen).add(c.branch)
        return shared

    def _go_on(self, c: _Canary, run: _Steps, report: SyncReport | Exception | None) -> _Proposal | None:
        """Run a canary's pass on (`report`: what its re-sync did, or why it failed) to the next pull request
        it proposes; None once its pass is over. Any error but LockLost becomes the canary's reason."""
        try:
            if report is None:
                return next(run)
            if isinstance(report, Exception):
                return run.throw(report)  # raised where the pass proposed: as if the re-sync had raised there
            return run.send(report)
        except StopIteration:
            return None
        except LockLost:
            raise  # another writer holds the environment repository now: stop writing, the sync fails
        except Exception as exc:
            log.warning("canary %s/%s: %s", self.env, c.name, exc, exc_info=True)
            self.warnings.append(f"{self.env}: canary {c.name}: {exc}")
            self._save_reason(c, f"the controller failed this pass ({type(exc).__name__}: {exc}); it "
                                 "retries on the next pass")
            return None

    def _resync(self, resync: Resync, batch: Sequence[_Proposal]) -> dict[str, SyncReport | Exception]:
        """One re-sync of the environment carrying every proposal of `batch` (each on its own branch); per
        canary folder, the report or the error its pass gets. A unit that cannot render at its proposed
        weight fails only its own canary."""
        out: dict[str, SyncReport | Exception] = {}
        override: dict[str, tuple[int, Note, Unit]] = {}
        for p in batch:
            try:
                override[p.c.unit.folder] = (p.weight, p.note, self._render(p.c.unit, p.weight))
            except EnvRepoError as exc:
                out[p.c.unit.folder] = exc
        if override:
            report: SyncReport | Exception
            try:
                units, notes = self._at_wanted(override)
                self._merged_prs = None  # the re-sync may merge (envRepo.autoMerge)
                refresh = sorted({p.c.branch for p in batch if p.refresh})
                report = resync({u.folder: u for u in units}, notes, refresh=refresh)
            except LockLost:
                raise
            except Exception as exc:  # noqa: BLE001 - each canary of the batch reports it as its own
                report = exc
            out.update(dict.fromkeys(override, report))
        return out

    # records (best effort: Redis is a cache)

    def _load(self, c: _Canary) -> CanaryRecord:
        rec = None
        if self.records is not None:
            try:
                rec = self.records.get_canary(self.env, c.unit.namespace, c.unit.service)
            except redis.RedisError:
                rec = None
        if rec is not None and rec.spec_hash == c.spec:
            self._loaded[rec.key] = rec.model_dump(exclude={"updated_at"})
            rec.steps = list(c.canary.steps)
            return rec
        return self._rebuild(c)

    def _rebuild(self, c: _Canary) -> CanaryRecord:
        """A canary's record from Git and the forge alone (no record, or a changed canary section)."""
        history: list[CanaryStep] = []
        rolled_back = False
        try:
            if self._merged_prs is None:
                self._merged_prs = self.forge.list("merged")
            merged = [pr for pr in self._merged_prs if pr.branch == c.branch and pr.base == self.base]
        except ForgeError as exc:
            log.warning("canary %s: cannot list merged pull requests (%s); history starts empty", c.name, exc)
            merged = []
        for pr in reversed(merged):  # oldest first
            note = _marker_note(pr.body)
            if note is None or note.get("spec") != c.spec:
                continue
            weight = int(note.get("weight", 0))
            rolled_back = weight == 0 and not note.get("restart")
            history.append(CanaryStep(step=_index(c.canary.steps, weight), weight=weight, pr=pr.number,
                                      result="rolled-back" if weight == 0 else "pending",
                                      reason=str(note.get("why") or "")))
        base = max(c.base_at, 0)
        phase: CanaryPhase = "rolled-back" if rolled_back and base == 0 else "waiting" if base == 0 else "measuring"
        return CanaryRecord(env=self.env, namespace=c.unit.namespace, service=c.unit.service,
                            stable=c.canary.stable, to=c.canary.to, spec_hash=c.spec, phase=phase,
                            step=_index(c.canary.steps, base), steps=list(c.canary.steps), weight=base,
                            history=history, reason="rebuilt from the environment repository")

    def _save(self, rec: CanaryRecord) -> None:
        if self.records is None:
            return
        if self._loaded.get(rec.key) == rec.model_dump(exclude={"updated_at"}):
            return  # nothing moved: no write, so API snapshots are not rebuilt on every pass
        rec.updated_at = self.now()
        self._loaded[rec.key] = rec.model_dump(exclude={"updated_at"})
        try:
            self.records.save_canary(rec)
        except redis.RedisError as exc:
            log.warning("could not record canary %s (%s); Git still holds its step", rec.key, exc)

    def _save_reason(self, c: _Canary, reason: str) -> None:
        try:
            rec = self._load(c)
        except Exception:  # noqa: BLE001 - reporting must not raise
            return
        rec.reason = reason
        self._save(rec)

    def _forget_gone(self) -> None:
        """Records of canaries this environment no longer has (section removed, blueprint deleted)."""
        if self.records is None:
            return
        live = {(c.unit.namespace, c.unit.service) for c in self.canaries}
        try:
            for rec in list(self.records.iter_canaries()):
                if rec.env == self.env and (rec.namespace, rec.service) not in live:
                    self.records.delete_canary(rec.env, rec.namespace, rec.service)
        except redis.RedisError:
            pass

    def _command(self, c: _Canary) -> str | None:
        if self.records is None:
            return None
        try:
            return self.records.take_canary_command(self.env, c.unit.namespace, c.unit.service)
        except redis.RedisError:
            return None

    # the state machine

    def _one(self, c: _Canary) -> _Steps:
        rec = self._load(c)
        if rec.weight != max(c.base_at, 0):  # the base moved (a person merged a step): a new window
            rec.failures, rec.healthy_since = 0, None
            if rec.phase == "awaiting-approval":
                rec.phase = "progressing"
        rec.weight = max(c.base_at, 0)
        rec.step = _index(c.canary.steps, rec.weight)
        command = self._command(c)
        if command == "retry" and rec.phase == "rolled-back":
            rec.phase, rec.failures, rec.healthy_since = "waiting", 0, None
            rec.history.append(CanaryStep(step=-1, weight=0, result="pending", reason="retried by a person",
                                          at=self.now()))
        elif command == "pause" and rec.phase not in _TERMINAL:
            rec.phase, rec.reason = "paused", "paused by a person; resume to continue"
            self._save(rec)
            return
        elif command == "resume" and rec.phase == "paused":
            rec.phase, rec.healthy_since = "progressing", None  # a resumed step measures a fresh window
        elif command == "abort" and rec.phase != "rolled-back":
            yield from self._roll_back(c, rec, "aborted by a person", rec.gates, result="aborted")
            return
        if rec.phase == "paused":
            self._save(rec)
            return

        if c.pr is not None and c.pr_weight is not None and c.pr_weight != c.base_weight:
            yield from self._pending_pr(c, rec, promote=command == "promote")
            return
        if rec.phase == "rolled-back":
            rec.reason = rec.reason or "rolled back; change the canary section or retry to start again"
            self._save(rec)
            return
        if c.base_at == -1:  # the base runs the previous `to`: back to stable first
            yield from self._roll_back(c, rec, str(self._note(c, 0)["why"]), [], restart=True)
            return
        if command == "promote" and rec.weight < 100:
            yield from self._open_step(c, rec, 100, previous=None, force_merge=True)
            return
        if rec.weight == 0:
            yield from self._open_step(c, rec, c.canary.steps[0], previous=None)
            return
        if rec.phase == "promoted":
            rec.reason = f"{c.canary.to} serves 100%"
            self._save(rec)
            return
        yield from self._measure_step(c, rec)

    def _pending_pr(self, c: _Canary, rec: CanaryRecord, *, promote: bool) -> _Steps:
        assert c.pr is not None and c.pr_weight is not None
        pr = c.pr
        if promote and c.pr_weight not in (0, 100):
            yield from self._open_step(c, rec, 100, previous=c.pr_note.get("previous") if c.pr_note else None,
                                       force_merge=True)
            return
        rollback = c.pr_weight == 0
        settle = c.pr_note is not None and c.pr_note.get("kind") == "settle"
        auto = (c.canary.rollback if rollback else c.canary.approval) == "auto" or promote or settle
        if not auto:
            rec.phase = "rolled-back" if rollback else "awaiting-approval"
            rec.reason = (f"{'rollback ' if rollback else ''}pull request #{pr.number} ({c.pr_weight}%) waits "
                          "for a person to merge it")
            self._history(rec, c.pr_weight, pr.number, "pending")
            self._save(rec)
            return
        restart = rollback and c.base_at == -1  # clears the previous `to`: this canary starts next
        weight = c.pr_weight
        merged = yield from self._merge_fresh(c, pr, weight, c.pr_note or self._note(c, weight))
        self._merged(c, rec, weight, merged, rollback=rollback)
        if restart:
            rec.phase, rec.reason = "waiting", f"pull request #{merged.number} cleared the previous canary; starting"
            self._save(rec)

    def _merge(self, pr: PullRequest) -> PullRequest:
        try:
            merged = self.forge.merge(pr.number)
        except ForgeError:
            merged = self.forge.get(pr.number)  # a concurrent pass merged it first
            if merged.state != "merged":
                raise
        self._merged_prs = None
        if self._batch_base is None:  # a batch fetches once after all its merges
            self.repo.fetch()
        return merged

    def _merge_fresh(self, c: _Canary, pr: PullRequest, weight: int,
                     note: Note) -> Generator[_Proposal, SyncReport, PullRequest]:
        """Merge `pr`; when the forge refuses it and its head lacks the base tip (a base that merges only
        up-to-date branches: GitHub's strict status checks, GitLab's fast-forward merges), propose the step
        again with its branch rebuilt on the current base (the batch's next round) and merge that. Once
        per canary per pass: a second refusal is the canary's reason, the next pass tries again."""
        try:
            return self._merge(pr)
        except ForgeError:
            if c.unit.folder in self._refreshed or not self._behind_base(c, pr):
                raise
        self._refreshed.add(c.unit.folder)
        fresh = yield from self._propose(c, weight, note, refresh=True)
        if fresh is None:
            raise ForgeError(f"pull request #{pr.number} could not be rebuilt on the moved base branch "
                             f"{self.base!r} (see the sync job's warnings); the next pass retries")
        c.pr = fresh
        return self._merge(fresh)

    def _behind_base(self, c: _Canary, pr: PullRequest) -> bool:
        """The PR's head does not contain the base tip (fetched now: the batch's merges moved it)."""
        if not self._fetched():
            return False
        base, head = self.repo.tip(self.base), self.repo.tip(c.branch)
        if pr.head_sha:
            try:
                head = pygit2.Oid(hex=pr.head_sha)
            except ValueError:
                pass
        if base is None or head is None or head not in self.repo.repo:
            return False
        return head != base and not self.repo.repo.descendant_of(head, base)

    def _merged(self, c: _Canary, rec: CanaryRecord, weight: int, pr: PullRequest, *, rollback: bool) -> None:
        c.base_version, c.base_weight = (c.canary.to if weight else None), weight
        c.pr, c.pr_weight, c.pr_note = None, None, None
        rec.weight, rec.step = weight, _index(c.canary.steps, weight)
        rec.failures, rec.healthy_since = 0, None
        self._history(rec, weight, pr.number, "rolled-back" if rollback else "pending")
        if rollback:
            rec.phase = "rolled-back"
            rec.reason = f"rolled back by pull request #{pr.number}; change the canary section or retry"
        else:
            rec.phase = "progressing"
            rec.reason = f"pull request #{pr.number} merged: waiting for Argo CD to run it"
        self._save(rec)

    def _history(self, rec: CanaryRecord, weight: int, number: int | None, result: str) -> None:
        last = rec.history[-1] if rec.history else None
        if last is not None and last.pr == number and number is not None:
            last.result = result  # type: ignore[assignment]
            return
        rec.history.append(CanaryStep(step=_index(rec.steps, weight), weight=weight, pr=number,
                                      result=result, at=self.now()))  # type: ignore[arg-type]

    def _open_step(self, c: _Canary, rec: CanaryRecord, weight: int, *,
                   previous: Mapping[str, Any] | None, force_merge: bool = False) -> _Steps:
        if not c.in_base:
            rec.phase = "waiting"
            rec.reason = (f"{c.name} is not in the environment repository's base yet: the canary starts once "
                          f"its first pull request{f' #{c.pr.number}' if c.pr else ''} is merged")
            self._save(rec)
            return
        if c.pr is not None and c.pr_weight == c.base_weight:  # a blueprint edit in review: a step must not
            # carry it past its reviewer
            rec.phase = "waiting"
            rec.reason = (f"pull request #{c.pr.number} (a blueprint change, not a canary step) waits for review; "
                          f"the {weight}% step opens once it is merged or closed")
            self._save(rec)
            return
        note = self._note(c, weight, previous=previous)
        pr = yield from self._propose(c, weight, note)
        if pr is None:
            rec.reason = f"could not open the pull request for {weight}% (see the sync job's warnings)"
            self._save(rec)
            return
        c.pr, c.pr_weight, c.pr_note = pr, weight, note
        if self._base_weight(c) == (c.canary.to, weight):  # a writer without the lock got there first
            if pr.state == "open":
                self.forge.close(pr.number, comment=f"meshgen: the base already sends {weight}% to {c.canary.to}")
            return
        if c.canary.approval == "auto" or force_merge:
            merged = yield from self._merge_fresh(c, pr, weight, note)
            self._merged(c, rec, weight, merged, rollback=False)
            return
        rec.phase = "awaiting-approval"
        rec.reason = f"pull request #{pr.number} ({weight}%) waits for a person to merge it"
        self._history(rec, weight, pr.number, "pending")
        self._save(rec)

    def _base_weight(self, c: _Canary) -> tuple[str | None, int]:
        base = self._batch_base
        if base is None:
            self.repo.fetch()
            base = self.repo.commit_at(self.base)
        return read_weight(managed_files(self.repo.repo, base.tree, c.unit.folder).values()) if base else (None, 0)

    def _propose(self, c: _Canary, weight: int, note: Note, *,
                 refresh: bool = False) -> Generator[_Proposal, SyncReport, PullRequest | None]:
        """This canary at `weight` in the pass's next re-sync (`reconcile` batches them): its branch's PR is
        the step's PR (`refresh`: rebuilt on the current base even if its head still merges cleanly)."""
        report = yield _Proposal(c, weight, note, refresh)
        result = next((r for r in report.results if r.branch == c.branch), None)
        if result is None or result.number is None or result.action in ("closed", "rejected"):
            if result is not None and result.action == "rejected":
                self.warnings.append(f"{self.env}: canary {c.name}: its {weight}% pull request #{result.number} "
                                     "was closed by a person; the canary waits")
            return None
        return self.forge.get(result.number)

    def _roll_back(self, c: _Canary, rec: CanaryRecord, why: str, gates: Sequence[GateValue],
                   *, restart: bool = False, result: str = "failed") -> _Steps:
        note = self._note(c, 0, why=why, previous=_previous(rec, result, why, gates) if gates else None)
        settle = note["kind"] == "settle"  # the previous `to` is `stable` now: same traffic, annotations go
        if restart:
            note["restart"] = True  # rolls back the previous `to`: not this canary's rollback
        rec.gates = list(gates)
        pr = yield from self._propose(c, 0, note)
        if pr is None and c.base_weight == 0:  # only an unmerged step PR to drop: the sync closed it
            rec.phase, rec.reason = "rolled-back", f"{why}; the base still serves {c.canary.stable} at 100%"
            self._history(rec, 0, None, "rolled-back")
            self._save(rec)
            return
        if pr is None:
            rec.reason = f"could not open the rollback pull request ({why})"
            self._save(rec)
            return
        if c.canary.rollback == "auto" or settle:
            merged = yield from self._merge_fresh(c, pr, 0, note)
            self._merged(c, rec, 0, merged, rollback=True)
            if restart:
                rec.phase, rec.reason = "waiting", f"{why}: rolled back by #{merged.number}; starting {c.canary.to}"
                self._save(rec)
            else:
                rec.reason = f"rolled back by pull request #{merged.number}: {why}"
                self._save(rec)
            return
        rec.phase = "rolled-back"
        rec.reason = f"rollback pull request #{pr.number} waits for a person to merge it: {why}"
        self._history(rec, 0, pr.number, "rolled-back")
        self._save(rec)

    def _measure_step(self, c: _Canary, rec: CanaryRecord) -> _Steps:
        weight = rec.weight
        merge_sha = self._step_commit(c, rec)
        healthy, why, since = self._argo(c, merge_sha)
        if not healthy:
            rec.phase, rec.reason, rec.healthy_since = "progressing", why, None
            self._save(rec)
            return
        now = self.now()
        if rec.healthy_since is None:
            # Argo CD's finishedAt, but never before meshgen saw the step merged: a window never
            # reaches back into the previous step's traffic.
            merged_at = max((s.at for s in rec.history if s.weight == weight), default=now)
            rec.healthy_since = min(max(since if since is not None else now, merged_at), now)
        interval = c.canary.interval.seconds
        left = rec.healthy_since + interval - now
        if left > 0:
            rec.phase = "measuring"
            ends = datetime.fromtimestamp(rec.healthy_since + interval, UTC).strftime("%H:%M:%S UTC")
            rec.reason = f"{weight}% is live and healthy; measuring over {c.canary.interval}, until {ends}"
            self._save(rec)
            return
        try:
            prometheus = prometheus_for(self.config_root, self.config, self.env)
        except PrometheusError as exc:
            rec.phase, rec.reason = "inconclusive", f"waiting: {exc}"
            self._save(rec)
            return
        if prometheus is None:
            rec.phase, rec.reason = "inconclusive", (
                f"no `prometheus` for environment {self.env} in meshgen.yaml: the gates cannot be measured; "
                "add prometheus.url (or environments.<env>.prometheus)")
            self._save(rec)
            return
        try:
            result = measure(prometheus, self._target(c), self._gates(c), min_requests=c.canary.min_requests,
                             interval=interval, at=now)
        except PrometheusError as exc:
            rec.phase, rec.reason = "inconclusive", f"waiting: {exc}"
            self._save(rec)
            return
        rec.gates = [GateValue(name=g.name, value=g.value, threshold=g.threshold, ok=g.ok, at=now)
                     for g in result.gates]
        if result.outcome == "inconclusive":
            rec.phase, rec.reason = "inconclusive", result.reason
            self._save(rec)
            return
        if result.outcome == "fail":
            rec.failures += 1
            if rec.failures > c.canary.failure_limit:
                self._step_result(rec, "failed", result)
                yield from self._roll_back(c, rec, _why(result), rec.gates)
                return
            rec.phase = "measuring"
            rec.reason = (f"{result.reason} (failure {rec.failures} of at most {c.canary.failure_limit}); "
                          "measuring a new window")
            rec.healthy_since = now
            self._save(rec)
            return
        self._step_result(rec, "passed", result)
        if weight >= 100:
            rec.phase, rec.reason = "promoted", f"{c.canary.to} serves 100%: {result.reason}"
            self._step_result(rec, "promoted", result)
            self._save(rec)
            return
        following = next(s for s in c.canary.steps if s > weight)
        yield from self._open_step(c, rec, following, previous=_previous(rec, "passed", result.reason, rec.gates))

    def _step_result(self, rec: CanaryRecord, result: str, m: Measurement) -> None:
        for step in reversed(rec.history):
            if step.weight == rec.weight:
                step.result, step.reason = result, m.reason  # type: ignore[assignment]
                step.gates = list(rec.gates)
                return
        rec.history.append(CanaryStep(step=rec.step, weight=rec.weight, result=result,  # type: ignore[arg-type]
                                      reason=m.reason, gates=list(rec.gates), at=self.now()))

    def _step_commit(self, c: _Canary, rec: CanaryRecord) -> str:
        """The merge commit that set the base's weight (the record's, else the forge's, else the base tip)."""
        for step in reversed(rec.history):
            if step.weight == rec.weight and step.pr is not None:
                sha = _merge_sha(self.forge, step.pr)
                if sha:
                    return sha
                break
        tip = self.repo.tip(self.base)
        return str(tip) if tip else ""

    def _target(self, c: _Canary) -> Target:
        bp = c.blueprint
        labels = {**bp.workload_labels, **dict(bp.versions.get(c.canary.to) or {})}
        dataplane = mesh(c.mesh).dataplane(self.config)
        return Target(mesh=c.mesh, namespace=bp.namespace, service=bp.service, version=c.canary.to,
                      pod_labels=labels, dataplane=dataplane)

    def _gates(self, c: _Canary) -> list[Gate]:
        g = c.canary.gates
        interval = c.canary.interval.seconds
        gates = default_gates(self._target(c), interval, success_rate=g.success_rate,
                              latency_p99_ms=g.latency_p99.seconds * 1000 if g.latency_p99 is not None else None)
        for custom in g.custom:
            gates.append(Gate(custom.name, custom.query, min=custom.min, max=custom.max))
        return gates

    # Argo CD

    def _argo(self, c: _Canary, sha: str) -> tuple[bool, str, float | None]:
        """(the step runs and is healthy, why not, when Argo CD finished syncing it)."""
        from meshgen.argocd.poller import ArgoKeys, poll_interval
        from meshgen.argocd.source import ArgoCDError, Locator, make_source, selector_matches
        from meshgen.records import PRRef, UnitRecord
        from meshgen.rollout import app_facts, decide

        cfg = self.config.argocd
        if cfg is None:
            return False, ("meshgen.yaml has no `argocd` section: meshgen cannot see the step run in the "
                           "cluster, so it does not measure it; add argocd"), None
        locator = Locator.from_config(cfg)
        u = c.unit
        name = locator.name_for(self.env, u.namespace, u.service, u.team)
        selector = locator.selector_for(self.env, u.namespace, u.service, u.team)
        app: dict[str, Any] | None = None
        if self.records is not None and selector is None:
            try:
                raw = self.records.client.get(ArgoKeys(self.records.prefix).app(name))
                cached = json.loads(raw) if raw else None
            except (redis.RedisError, ValueError):
                cached = None
            if isinstance(cached, dict) and self.now() - float(cached.get("fetched_at", 0)) <= \
                    STALE_POLLS * poll_interval(self.config):
                app = cached
        if app is None:
            try:
                if self._argo_source is None:
                    self._argo_source = make_source(cfg, self.settings)
                source = self._argo_source
                if selector is None:
                    app = source.get(name)
                else:
                    app = next((a for a in source.list(selector)
                                if selector_matches(selector, (a.get("metadata") or {}).get("labels") or {})),
                               None)
            except (ArgoCDError, OSError, ValueError) as exc:
                return False, f"waiting for Argo CD: {exc}", None
        if app is None:
            return False, f"no Argo CD application {name} found; check argocd.nameTemplate in meshgen.yaml", None
        facts = app_facts(app)
        unit = UnitRecord(env=self.env, namespace=u.namespace, service=u.service, up_to_date=True,
                          pr=PRRef(number=0, url="", state="merged", branch=c.branch, head_sha=sha, merge_sha=sha))
        decision = decide(unit, facts, contains=self._contains, app_name=name,
                          env_repo_url=self.config.env_repo.url)
        if decision.state != "healthy":
            return False, f"waiting for Argo CD: {decision.reason}", None
        return True, decision.reason, _timestamp(facts.finished_at)

    def _contains(self, descendant: str, ancestor: str) -> bool | None:
        if descendant == ancestor:
            return True
        try:
            d, a = pygit2.Oid(hex=descendant), pygit2.Oid(hex=ancestor)
            repo = self.repo.repo
            if d not in repo or a not in repo:
                return None
            return bool(repo.descendant_of(d, a))
        except (ValueError, pygit2.GitError):
            return None


def _next_batch(waiting: list[tuple[_Steps, _Proposal]]
                ) -> tuple[list[tuple[_Steps, _Proposal]], list[tuple[_Steps, _Proposal]]]:
    """(the next re-sync's proposals, the rest). A branch rebuilt on the base for an up-to-date-only base
    (`refresh`) goes alone, after the others: rebuilt with another, the one merged second is behind again."""
    plain = [w for w in waiting if not w[1].refresh]
    if plain:
        return plain, [w for w in waiting if w[1].refresh]
    return waiting[:1], waiting[1:]


def _merge_sha(forge: Forge, number: int) -> str | None:
    try:
        pr = forge.get(number)
    except ForgeError:
        return None
    return pr.merge_sha if pr.state == "merged" else None


def _index(steps: Sequence[int], weight: int) -> int:
    """Index of the step a weight is at (-1: 0%); a weight between steps counts as the step below it."""
    return max((i for i, s in enumerate(steps) if s <= weight), default=-1)


def _marker_note(body: str) -> Note | None:
    found = None
    for found in _CANARY_MARKER.finditer(body or ""):
        pass
    if found is None:
        return None
    try:
        note = json.loads(found.group(1))
    except ValueError:
        return None
    return note if isinstance(note, dict) else None


def _why(m: Measurement) -> str:
    """`successRate 80 < 99`: the failing gates, for a rollback's title."""
    parts = []
    for g in m.failed:
        value = "no data" if g.value is None else f"{g.value:.2f}".rstrip("0").rstrip(".")
        op = "<" if g.threshold.startswith(">=") else ">" if g.threshold.startswith("<=") else "outside"
        bound = g.threshold.split(" ", 1)[-1] if op != "outside" else g.threshold
        parts.append(f"{g.name} {value} {op} {bound}")
    return ", ".join(parts) or m.reason


def _previous(rec: CanaryRecord, result: str, reason: str, gates: Sequence[GateValue]) -> Note:
    return {"weight": rec.weight, "result": result, "reason": reason,
            "gates": [{"name": g.name, "value": None if g.value is None else round(g.value, 4),
                       "threshold": g.threshold, "ok": g.ok} for g in gates]}


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
