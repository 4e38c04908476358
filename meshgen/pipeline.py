"""Blueprints repository in, rendered files out: load, check, render, lay out.

Nothing is written here. `render_repository` either returns every rendered file with the
warnings, or raises BlueprintError with every error of the run, so a caller can never
write half a result.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from meshgen.blueprint.analysis import Facts, check_fleet, check_instance, facts_for
from meshgen.blueprint.config import Config
from meshgen.blueprint.loading import Instance, LoadedFile, discover, load_config, load_file
from meshgen.blueprint.model import MeshBlueprint, NamespaceBlueprint, ServiceBlueprint
from meshgen.diagnostics import BlueprintError, Diagnostic
from meshgen.gitops.units import MESH_SERVICE as MESH_FOLDER
from meshgen.gitops.units import NAMESPACE_SERVICE as NAMESPACE_FOLDER
from meshgen.gitops.units import Unit
from meshgen.render import renderer_class
from meshgen.render.base import Capability, RenderContext, Resource
from meshgen.render.features import used_features, used_mesh_features, used_namespace_features
from meshgen.render.yamlout import dump


@dataclass
class RenderResult:
    config: Config
    units: list[Unit] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def files(self) -> dict[str, bytes]:
        return {f"{u.folder}/{name}": data for u in self.units for name, data in u.files.items()}


@dataclass
class FileOutcome:
    """Everything one blueprint file contributes; what the cache keeps per content hash."""

    path: str
    digest: str
    diagnostics: list[Diagnostic]
    facts: list[Facts]
    units: list[Unit]


def render_file(root: Path, rel: str, config: Config, *, env: str | None, mesh: str | None,
                data: bytes | None = None) -> FileOutcome:
    """Load, check and render one blueprint for every environment it applies to."""
    loaded = load_file(root, rel, config, env=env, mesh=mesh, data=data)
    diagnostics = list(loaded.diagnostics)
    facts: list[Facts] = []
    units: list[Unit] = []
    if any(d.severity == "error" for d in diagnostics):
        return FileOutcome(rel, loaded.digest, diagnostics, facts, units)
    for inst in loaded.instances:
        diagnostics.extend(check_instance(loaded, inst))
        facts.append(facts_for(loaded, inst))
        skipped, notes = _unsupported(loaded, inst, config, diagnostics)
        if any(d.severity == "error" for d in diagnostics):
            continue
        units.append(_render_instance(inst, config, skipped, notes))
    if any(d.severity == "error" for d in diagnostics):
        units = []
    return FileOutcome(rel, loaded.digest, diagnostics, facts, units)


def _unsupported(
    loaded: LoadedFile, inst: Instance, config: Config, diagnostics: list[Diagnostic]
) -> tuple[frozenset[str], tuple[str, ...]]:
    """Apply `unsupported: error|warn` to the features this mesh cannot express."""
    caps = _capabilities(inst.mesh, config)
    bp = inst.blueprint
    if isinstance(bp, ServiceBlueprint):
        used = used_features(bp)
    elif isinstance(bp, NamespaceBlueprint):
        used = used_namespace_features(bp)
    else:
        used = used_mesh_features(bp)
    skipped: set[str] = set()
    notes: list[str] = []
    flavour = renderer_class(inst.mesh).flavours(config)
    partial_seen: set[str] = set()
    for feature, path in used:
        cap = caps.get(feature)
        if cap is None or cap.support == "full":
            continue
        real = ("environments", inst.env, *path) if path and path[0] in inst.overlay_keys else path
        if cap.support == "partial":
            # Expressed, but not all of it: never an error, never silent. Once per feature and file.
            if feature not in partial_seen:
                partial_seen.add(feature)
                d = loaded.diag(real, _message(flavour, feature, cap, "partial"), severity="warning")
                diagnostics.append(d)
                notes.append(f"{d.path}: {d.message}")
            continue
        if config.unsupported == "error":
            diagnostics.append(loaded.diag(real, _message(flavour, feature, cap, "error")))
        else:
            skipped.add(feature)
            d = loaded.diag(real, _message(flavour, feature, cap, "skipped"), severity="warning")
            diagnostics.append(d)
            notes.append(f"{d.path}: {d.message}")
    return frozenset(skipped), tuple(notes)


_MESSAGES: dict[tuple[str, str, str], str] = {}


def _message(flavour: str, feature: str, cap: Capability, kind: str) -> str:
    """The text of an unsupported/partial finding. One string object per (flavour, feature, kind):
    thousands of services share it, so pickling a chunk of results sends it once."""
    key = (flavour, feature, kind)
    text = _MESSAGES.get(key)
    if text is None:
        if kind == "partial":
            text = f"{flavour} expresses this only in part: {cap.note}"
        else:
            reason = f"{flavour} cannot express this: {cap.note}" if cap.note else f"{flavour} cannot express this"
            text = reason + (" (meshgen.yaml `unsupported: warn` renders without it)" if kind == "error"
                             else "; rendered without it")
        text = _MESSAGES[key] = text
    return text


_CAPS: dict[tuple[str, int], tuple[Config, dict[str, Capability]]] = {}
_CAPS_KEPT = 8  # configs in use at once: one per run; a long-running worker loads a new one per sync


def _capabilities(mesh: str, config: Config) -> dict[str, Capability]:
    """A renderer's declarations for these settings, computed once per run, not per blueprint.

    Keyed by identity, and the entry keeps its config alive, so a later config can never
    reuse a freed one's id and be handed stale declarations; the cache stays small.
    """
    key = (mesh, id(config))
    entry = _CAPS.get(key)
    if entry is None or entry[0] is not config:
        if len(_CAPS) >= _CAPS_KEPT:
            _CAPS.clear()
        entry = _CAPS[key] = (config, dict(renderer_class(mesh).capabilities(config)))
    return entry[1]


def _render_instance(inst: Instance, config: Config, skipped: frozenset[str], notes: tuple[str, ...]) -> Unit:
    renderer = renderer_class(inst.mesh)()
    ctx = RenderContext(config=config, env=inst.env, mesh=inst.mesh, blueprint_path=inst.source,
                        team=inst.team, skipped=skipped)
    env_path = config.env_path(inst.env)
    bp = inst.blueprint
    if isinstance(bp, ServiceBlueprint):
        resources = renderer.render_service(bp, ctx)
        namespace, service = bp.namespace, bp.service
        folder = f"{env_path}/{bp.namespace}/{bp.service}"
    elif isinstance(bp, NamespaceBlueprint):
        resources = renderer.render_namespace(bp, ctx)
        namespace, service = bp.namespace, NAMESPACE_FOLDER
        folder = f"{env_path}/{bp.namespace}/{NAMESPACE_FOLDER}"
    else:
        assert isinstance(bp, MeshBlueprint)
        resources = renderer.render_mesh(bp, ctx)
        namespace, service = "", MESH_FOLDER
        folder = f"{env_path}/{MESH_FOLDER}"
    return Unit(inst.env, namespace, service, inst.team, folder, _files(resources, folder), (*notes, *ctx.notes),
                inst.source)


def _files(resources: Iterable[Resource], folder: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for res in resources:
        name = f"{res.kind.lower()}-{res.name}.yaml"
        if name in files:
            raise RuntimeError(f"renderer produced two {res.kind} named {res.name} in {folder}; this is a meshgen bug")
        files[name] = dump(res.body).encode()
    return dict(sorted(files.items()))


def render_repository(root: Path, *, env: str | None = None, mesh: str | None = None,
                      config_root: Path | None = None) -> RenderResult:
    """Render every blueprint under ROOT. Raises BlueprintError with all errors of the run.

    `config_root`: read meshgen.yaml from there instead of ROOT (a blueprints checkout rendered
    with the meshgen.yaml of MESHGEN_ROOT, see meshgen.gitops.sync)."""
    config, _ = load_config(config_root if config_root is not None else root)
    check_selection(config, env, mesh)
    return assemble(config, render_files(root, discover(root), config, env=env, mesh=mesh))


PARALLEL_MIN_FILES = 500
"""Below this, starting worker processes costs more than it saves."""


def render_files(root: Path, rels: list[str], config: Config, *, env: str | None, mesh: str | None) -> list[FileOutcome]:
    """Render files in order, spread over the machine's cores when there are many.

    Workers are forked (they inherit the imported modules and the validated config, so they
    start in milliseconds), which is only safe from a single-threaded process: a lock held by
    another thread at fork time stays held in the child. The worker (lock heartbeat) and
    `meshgen up` (web server) therefore render in-process.
    """
    workers = min(len(os.sched_getaffinity(0)), 8)
    if len(rels) < PARALLEL_MIN_FILES or workers < 2 or threading.active_count() > 1:
        return [render_file(root, rel, config, env=env, mesh=mesh) for rel in rels]
    # Contiguous chunks keep results in input order; a few per worker balance uneven files.
    size = max(1, len(rels) // (workers * 4))
    chunks = [rels[i:i + size] for i in range(0, len(rels), size)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_init_worker, initargs=(root, config, env, mesh)) as pool:
        return [outcome for chunk in pool.map(_render_chunk, chunks) for outcome in chunk]


_WORKER: tuple[Path, Config, str | None, str | None] | None = None


def _init_worker(root: Path, config: Config, env: str | None, mesh: str | None) -> None:
    global _WORKER
    _WORKER = (root, config, env, mesh)


def _render_chunk(rels: list[str]) -> list[FileOutcome]:
    assert _WORKER is not None
    root, config, env, mesh = _WORKER
    return [render_file(root, rel, config, env=env, mesh=mesh) for rel in rels]


def check_selection(config: Config, env: str | None, mesh: str | None) -> None:
    """Refuse an --env that meshgen.yaml does not define."""
    if env is not None and env not in config.environments:
        raise BlueprintError([Diagnostic("meshgen.yaml", 1, 1, "environments",
                                         f"--env {env}: no such environment (environments: {', '.join(config.environments)})")])


def assemble(config: Config, outcomes: Iterable[FileOutcome]) -> RenderResult:
    """Join per-file outcomes, run the fleet checks, and fail with every error if any."""
    outcomes = sorted(outcomes, key=lambda o: o.path)
    diagnostics = [d for o in outcomes for d in o.diagnostics]
    diagnostics.extend(check_fleet([f for o in outcomes for f in o.facts]))
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        raise BlueprintError(diagnostics)
    units = sorted((u for o in outcomes for u in o.units), key=lambda u: u.folder)
    return RenderResult(config, units, sorted(set(d for d in diagnostics if d.severity == "warning")))
