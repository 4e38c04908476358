"""Blueprints repository in, rendered files out: load, check, render, lay out.

`render_repository` either returns every rendered file with the warnings, or raises
BlueprintError with every error of the run, so a caller can never write half a result.
A `render_batch` writes only what its caller asks for, after the caller has seen every
diagnostic.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import threading
import traceback
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from meshgen.blueprint.analysis import Facts, check_application_names, check_fleet, check_instance, facts_for
from meshgen.blueprint.config import Config
from meshgen.blueprint.loading import Instance, LoadedFile, discover, load_config, load_file
from meshgen.blueprint.model import IngressBlueprint, MeshBlueprint, NamespaceBlueprint, ServiceBlueprint
from meshgen.bootstrap import application_names
from meshgen.diagnostics import BlueprintError, Diagnostic, DiagnosticRow, to_rows
from meshgen.files import OutputWriter, output_digest
from meshgen.render import registry
from meshgen.render.base import Capability, RenderContext, RenderError, Resource
from meshgen.render.features import (
    used_features,
    used_ingress_features,
    used_mesh_features,
    used_namespace_features,
)
from meshgen.render.yamlout import dump
from meshgen.units import MESH_SERVICE as MESH_FOLDER
from meshgen.units import NAMESPACE_SERVICE as NAMESPACE_FOLDER
from meshgen.units import Unit


@dataclass(frozen=True)
class Blocked:
    """A unit a failing blueprint would render (partial rendering): it is left exactly as it is."""

    env: str
    namespace: str  # "" for the mesh-wide unit
    service: str  # or _namespace / _mesh
    file: str
    error: str  # the file's first error, `file:line:col: path: message`


@dataclass
class RenderResult:
    config: Config
    units: list[Unit] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    # Partial rendering only (`render_repository(partial=True)`): what did not render, and why.
    errors: list[Diagnostic] = field(default_factory=list)
    failed_files: dict[str, str] = field(default_factory=dict)  # blueprint path -> its first error
    blocked: list[Blocked] = field(default_factory=list)

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
    # (env, namespace, service) a file that failed to load still names, read leniently (blast radius)
    claims: list[tuple[str, str, str]] = field(default_factory=list)


def render_file(root: Path, rel: str, config: Config, *, env: str | None, mesh: str | None,
                data: bytes | None = None, outputs: bool = True) -> FileOutcome:
    """Load, check and render one blueprint for every environment it applies to.

    `outputs=False`: the same diagnostics and facts, but no units (the resources are still built,
    since building them is what finds a mesh's limits, only not serialized): what `meshgen plan`
    needs of the files a change leaves alone."""
    loaded = load_file(root, rel, config, env=env, mesh=mesh, data=data)
    diagnostics = list(loaded.diagnostics)
    facts: list[Facts] = []
    units: list[Unit] = []
    if any(d.severity == "error" for d in diagnostics):
        # Nothing is rendered, but the checks of whatever did validate still run: every error of
        # a file is reported in one run, not only the first kind found.
        for inst in loaded.salvaged or loaded.instances:
            diagnostics.extend(check_instance(loaded, inst))
        return FileOutcome(rel, loaded.digest, list(dict.fromkeys(diagnostics)), facts, units,
                           _claims(loaded, config, env))
    for inst in loaded.instances:
        diagnostics.extend(check_instance(loaded, inst))
        facts.append(facts_for(loaded, inst))
        skipped, notes = _unsupported(loaded, inst, config, diagnostics)
        if any(d.severity == "error" for d in diagnostics):
            continue
        try:
            units.append(_render_instance(inst, config, skipped, notes, outputs=outputs))
        except RenderError as exc:  # a limit of the target mesh: the blueprint's error, with its line
            diagnostics.append(loaded.diag(_field_path(inst, exc.path),
                                           f"{registry.mesh(inst.mesh).renderer.flavours(config)}: {exc.message}"))
    if any(d.severity == "error" for d in diagnostics) or not outputs:
        units = []
    return FileOutcome(rel, loaded.digest, diagnostics, facts, units)


def _field_path(inst: Instance, path: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Where a field of this instance is written: under `environments.<env>` when an overlay set it."""
    return ("environments", inst.env, *path) if path and path[0] in inst.overlay_keys else path


_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _claims(loaded: LoadedFile, config: Config, env: str | None) -> list[tuple[str, str, str]]:
    """The units a blueprint that failed validation still names (`kind`, `namespace`, `service` read
    leniently), so a sync can mark them render-failed instead of not knowing them. Names that are not
    DNS-1123 labels are ignored: they could never be folders."""
    data = loaded.document.data if loaded.document is not None else None
    if not isinstance(data, dict):
        return []
    kind, ns, svc = data.get("kind", "Service"), data.get("namespace"), data.get("service")
    envs = [e for e in config.environments if env in (None, e)]
    if kind == "Mesh":
        return [(e, "", MESH_FOLDER) for e in envs]
    if not isinstance(ns, str) or not _LABEL.match(ns):
        return []
    if kind == "Namespace":
        return [(e, ns, NAMESPACE_FOLDER) for e in envs]
    if kind == "Service" and isinstance(svc, str) and _LABEL.match(svc):
        return [(e, ns, svc) for e in envs]
    return []


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
    elif isinstance(bp, IngressBlueprint):
        used = used_ingress_features(bp)
    else:
        used = used_mesh_features(bp)
    skipped: set[str] = set()
    notes: list[str] = []
    flavour = registry.mesh(inst.mesh).renderer.flavours(config)
    partial_seen: set[str] = set()
    for feature, path in used:
        cap = caps.get(feature)
        if cap is None or cap.support == "full":
            continue
        real = _field_path(inst, path)
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
        _MESSAGES[key] = text
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
        entry = _CAPS[key] = (config, dict(registry.mesh(mesh).renderer.capabilities(config)))
    return entry[1]


def _render_instance(inst: Instance, config: Config, skipped: frozenset[str], notes: tuple[str, ...], *,
                     outputs: bool = True) -> Unit:
    renderer = registry.mesh(inst.mesh).renderer()
    ctx = RenderContext(config=config, env=inst.env, mesh=inst.mesh, blueprint_path=inst.source,
                        team=inst.team, skipped=skipped)
    env_path = config.env_path(inst.env)
    bp = inst.blueprint
    if isinstance(bp, ServiceBlueprint):
        resources = renderer.render_service(bp, ctx)
        namespace, service = bp.namespace, bp.service
        folder = f"{env_path}/{bp.namespace}/{bp.service}"
    elif isinstance(bp, IngressBlueprint):
        resources = renderer.render_ingress(bp, ctx)
        namespace, service = bp.namespace, bp.name
        folder = f"{env_path}/{bp.namespace}/{bp.name}"
    elif isinstance(bp, NamespaceBlueprint):
        resources = renderer.render_namespace(bp, ctx)
        namespace, service = bp.namespace, NAMESPACE_FOLDER
        folder = f"{env_path}/{bp.namespace}/{NAMESPACE_FOLDER}"
    else:
        assert isinstance(bp, MeshBlueprint)
        resources = renderer.render_mesh(bp, ctx)
        namespace, service = "", MESH_FOLDER
        folder = f"{env_path}/{MESH_FOLDER}"
    files = _files(resources, folder) if outputs else {}
    return Unit(inst.env, namespace, service, inst.team, folder, files, (*notes, *ctx.notes),
                inst.source)


def render_at_weight(root: Path, config: Config, unit: Unit, weight: int) -> Unit:
    """`unit` (a rendered Service with a canary) re-rendered with its canary at `weight` (meshgen.canary).

    The objects the split changes carry the canary annotations (meshgen.canary.steps.annotate);
    weight 0 is `unit` itself. Raises BlueprintError when the blueprint no longer renders the same way
    (it changed on disk since `unit` was rendered): the caller keeps what it has.
    """
    from meshgen.canary.steps import annotate, with_weight

    if weight == 0:
        return unit
    loaded = load_file(root, unit.blueprint_path, config, env=unit.env)
    diagnostics = list(loaded.diagnostics)
    for inst in loaded.instances:
        bp = inst.blueprint
        if inst.env != unit.env or not isinstance(bp, ServiceBlueprint) or bp.canary is None \
                or (bp.namespace, bp.service) != (unit.namespace, unit.service):
            continue
        skipped, _notes = _unsupported(loaded, inst, config, diagnostics)
        if any(d.severity == "error" for d in diagnostics):
            break
        renderer = registry.mesh(inst.mesh).renderer()

        # Called twice right below, in this iteration: the loop variables it reads cannot have moved on.
        def resources(blueprint: ServiceBlueprint) -> list[Resource]:
            ctx = RenderContext(config=config, env=inst.env, mesh=inst.mesh,  # noqa: B023
                                blueprint_path=inst.source, team=inst.team, skipped=skipped)  # noqa: B023
            return list(renderer.render_service(blueprint, ctx))  # noqa: B023

        moved = annotate(resources(with_weight(bp, weight)), resources(bp), bp.canary.to, weight)
        files = _files(moved, unit.folder)
        return Unit(unit.env, unit.namespace, unit.service, unit.team, unit.folder, files, unit.warnings,
                    unit.blueprint_path)
    raise BlueprintError(diagnostics or [Diagnostic(unit.blueprint_path, 1, 1, "canary",
                                                    f"{unit.display_name} has no canary to render any more")])


def _files(resources: Iterable[Resource], folder: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for res in resources:
        name = f"{res.kind.lower()}-{res.name}.yaml"
        if name in files:
            raise RuntimeError(f"renderer produced two {res.kind} named {res.name} in {folder}; this is a meshgen bug")
        files[name] = dump(res.body).encode()
    return dict(sorted(files.items()))


def render_repository(root: Path, *, env: str | None = None, mesh: str | None = None,
                      config_root: Path | None = None, partial: bool = False) -> RenderResult:
    """Render every blueprint under ROOT. Raises BlueprintError with all errors of the run.

    `config_root`: read meshgen.yaml from there instead of ROOT (a blueprints checkout rendered
    with the meshgen.yaml of MESHGEN_ROOT, see meshgen.gitops.sync).

    `partial` (the syncs): a blueprint that fails to load, check or render, or that conflicts with
    another (both sides), only drops its own units, listed in `blocked`, with the errors in
    `errors`; everything else is returned. meshgen.yaml errors still raise."""
    config, _ = load_config(config_root if config_root is not None else root)
    check_selection(config, env, mesh)
    return assemble(config, render_files(root, discover(root), config, env=env, mesh=mesh), partial=partial)


PARALLEL_MIN_FILES = 500
"""Below this, starting worker processes costs more than it saves."""


class Summary(NamedTuple):
    """One rendered blueprint file without its output contents: what a batch reports before
    anything is written, and what the render cache keeps."""

    path: str
    digest: str
    diagnostics: tuple[DiagnosticRow, ...]  # see meshgen.diagnostics.from_rows
    facts: tuple[Facts, ...]
    units: int
    files: int
    # "<hex content hash> <output path>" lines (see encode_outputs): made where the file was
    # rendered, decoded only where an earlier render of the same file has to be compared with it
    outputs: str


def encode_outputs(files: Iterable[tuple[str, bytes]]) -> str:
    """Output paths with their content hashes as text: plain data in the render cache, never
    code (the cache is read back from disk), and compared as one string when nothing changed.
    Output paths are built from DNS labels and folder names checked on load: never a newline."""
    return "\n".join(f"{output_digest(data).hex()} {rel_out}" for rel_out, data in files)


def output_hashes(outputs: str) -> dict[str, bytes]:
    """A Summary's `outputs`: output path -> content hash."""
    return {line[33:]: bytes.fromhex(line[:32]) for line in outputs.split("\n") if line}


_Held = dict[str, list[tuple[str, bytes]]]  # blueprint path -> (output path, content) it produced


def _summarize(outcome: FileOutcome, held: _Held) -> Summary:
    files = held[outcome.path] = [(f"{unit.folder}/{name}", data)
                                  for unit in outcome.units for name, data in unit.files.items()]
    outputs = encode_outputs(files)
    return Summary(outcome.path, outcome.digest, to_rows(outcome.diagnostics), tuple(outcome.facts),
                   len(outcome.units), len(files), outputs)


class Batch(Protocol):
    """Blueprint files rendered and held, in input order: look at `summaries` (diagnostics,
    facts, output hashes), then write the outputs you want."""

    @property
    def summaries(self) -> list[Summary]:
        """One per blueprint file, in input order."""

    def write(self, out: Path, blueprints: Iterable[str], unchanged: Collection[str] = ()) -> None:
        """Write under OUT every output of these blueprint files, except the output paths
        in `unchanged`."""


def _spread_over(rels: list[str], jobs: int | None) -> int:
    """How many worker processes to render these files with; 1 means in this process.

    Workers are forked (they inherit the imported modules and the validated config, so they
    start in milliseconds), which is only safe from a single-threaded process: a lock held by
    another thread at fork time stays held in the child. The worker (lock heartbeat) and
    `meshgen up` (web server) therefore render in-process.
    """
    if len(rels) < PARALLEL_MIN_FILES or threading.active_count() > 1:
        return 1
    return jobs if jobs is not None else min(len(os.sched_getaffinity(0)), 8)


@contextmanager
def render_batch(root: Path, rels: list[str], config: Config, *, env: str | None, mesh: str | None,
                 jobs: int | None = None) -> Iterator[Batch]:
    """Render files, spread over `jobs` processes (default: the CPUs this process may use, at
    most 8) when there are many; with `jobs=1`, or few files, in this process.

    A spread batch keeps each rendered file in the process that rendered it until the caller,
    having seen every diagnostic, asks for it to be written: the writing is spread too, and an
    error anywhere still means nothing is written.
    """
    workers = _spread_over(rels, jobs)
    if workers < 2:
        yield _LocalBatch([render_file(root, rel, config, env=env, mesh=mesh) for rel in rels])
        return
    batch = _ForkedBatch(root, rels, config, env, mesh, workers, hold=True)
    try:
        yield batch
    finally:
        batch.close()


def render_files(root: Path, rels: list[str], config: Config, *, env: str | None, mesh: str | None) -> list[FileOutcome]:
    """Render files in order, with their full outcomes (spread over the machine's cores when
    there are many)."""
    workers = _spread_over(rels, None)
    if workers < 2:
        return [render_file(root, rel, config, env=env, mesh=mesh) for rel in rels]
    batch = _ForkedBatch(root, rels, config, env, mesh, workers, hold=False)
    batch.close()
    return batch.results


class Blob(NamedTuple):
    """A blueprint file given by its bytes (e.g. read from a git revision) rather than on disk."""

    rel: str
    data: bytes
    outputs: bool  # False: diagnostics and facts only (see render_file)


def render_blobs(root: Path, blobs: list[Blob], config: Config, *, env: str | None) -> list[FileOutcome]:
    """render_file for each blob, in order; spread over forked processes when there are many
    (what `meshgen plan` runs on a cold cache)."""
    workers = _spread_over([b.rel for b in blobs], None)
    saved = gc.get_threshold()
    gc.set_threshold(10_000, 20, 20)  # see _serve: short-lived dicts, no cycles
    try:
        if workers < 2:
            return [_render_blob(root, config, env, b) for b in blobs]
        size = max(1, min(200, len(blobs) // (workers * 4)))
        chunks = [blobs[i:i + size] for i in range(0, len(blobs), size)]
        # Forked (see _spread_over): the workers inherit the modules and the config, no re-import.
        with multiprocessing.get_context("fork").Pool(workers, _blob_worker, (root, config, env)) as pool:
            return [o for done in pool.imap(_render_blob_chunk, chunks) for o in done]
    finally:
        gc.set_threshold(*saved)


def _render_blob(root: Path, config: Config, env: str | None, blob: Blob) -> FileOutcome:
    return render_file(root, blob.rel, config, env=env, mesh=None, data=blob.data, outputs=blob.outputs)


_BLOB_WORKER: tuple[Path, Config, str | None] | None = None


def _blob_worker(root: Path, config: Config, env: str | None) -> None:
    global _BLOB_WORKER
    _BLOB_WORKER = (root, config, env)


def _render_blob_chunk(blobs: list[Blob]) -> list[FileOutcome]:
    assert _BLOB_WORKER is not None
    return [_render_blob(*_BLOB_WORKER, b) for b in blobs]


def _write(out: Path, outputs: Iterable[list[tuple[str, bytes]]], unchanged: Collection[str]) -> None:
    writer = OutputWriter(out)
    for files in outputs:
        for rel_out, data in files:
            if rel_out not in unchanged:
                writer.write(rel_out, data)


class _LocalBatch:
    def __init__(self, outcomes: list[FileOutcome]) -> None:
        self._held: _Held = {}
        self.summaries = [_summarize(o, self._held) for o in outcomes]

    def write(self, out: Path, blueprints: Iterable[str], unchanged: Collection[str] = ()) -> None:
        _write(out, (self._held[rel] for rel in blueprints), unchanged)


class _ForkedBatch:
    """Forked workers take chunks of files in turn and send back what they rendered, in
    `results` (input order): with `hold`, summaries, the workers keeping the files until
    `write`; without, the full outcomes."""

    def __init__(self, root: Path, rels: list[str], config: Config, env: str | None, mesh: str | None,
                 workers: int, *, hold: bool) -> None:
        mp = multiprocessing.get_context("fork")
        # Contiguous chunks keep results in input order. Small ones, so that no worker idles
        # long at the end while another finishes a big one (a chunk of 1,000 blueprints
        # takes a second or more); each costs one message.
        size = max(1, min(200, len(rels) // (workers * 4)))
        chunks = [rels[i:i + size] for i in range(0, len(rels), size)]
        next_chunk = mp.Value("i", 0)
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        self._holder: dict[str, int] = {}  # blueprint path -> index of the worker holding its outputs
        try:
            for _ in range(workers):
                mine, theirs = mp.Pipe()
                self._conns.append(mine)
                proc = mp.Process(target=_serve, daemon=True,
                                  args=(theirs, list(self._conns), chunks, next_chunk, hold, root, config, env, mesh))
                proc.start()
                theirs.close()
                self._procs.append(proc)
            by_chunk: dict[int, list[Any]] = {}
            rendering = set(range(workers))
            while rendering:
                for conn in wait([self._conns[w] for w in rendering]):
                    w = self._conns.index(conn)  # type: ignore[arg-type]
                    msg = self._recv(w)
                    if msg[0] == "rendered":
                        rendering.discard(w)
                        continue
                    _, idx, results = msg
                    by_chunk[idx] = results
                    for rel in chunks[idx]:
                        self._holder[rel] = w
            self.results = [r for idx in sorted(by_chunk) for r in by_chunk[idx]]
        except BaseException:
            self.close()
            raise

    @property
    def summaries(self) -> list[Summary]:
        return self.results

    def write(self, out: Path, blueprints: Iterable[str], unchanged: Collection[str] = ()) -> None:
        orders: list[list[str]] = [[] for _ in self._conns]
        for rel in blueprints:
            orders[self._holder[rel]].append(rel)
        skip = set(unchanged)
        for conn, order in zip(self._conns, orders):
            conn.send(("write", out, order, skip))
        for w in range(len(self._conns)):
            self._recv(w)

    def _recv(self, w: int) -> tuple[Any, ...]:
        try:
            msg: tuple[Any, ...] = self._conns[w].recv()
        except EOFError:
            proc = self._procs[w]
            proc.join(5)
            raise RuntimeError(f"render worker {proc.pid} exited unexpectedly (exit code {proc.exitcode}); "
                               "this is a meshgen bug or the machine ran out of memory") from None
        if msg[0] == "failed":
            exc: BaseException = msg[1]
            exc.add_note(f"in render worker {self._procs[w].pid}:\n{msg[2]}")
            raise exc
        return msg

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close",))
            except OSError:
                pass  # already gone
            conn.close()
        for proc in self._procs:
            proc.join(10)
            if proc.exitcode is None:
                proc.kill()
                proc.join()


def _serve(conn: Connection, parent_ends: list[Connection], chunks: list[list[str]], next_chunk: Any,
           hold: bool, root: Path, config: Config, env: str | None, mesh: str | None) -> None:
    """A render worker: render chunks until none are left, then write on request."""
    for end in parent_ends:  # so that this worker's pipe closes when the parent goes away
        end.close()
    # Rendering allocates tens of thousands of short-lived dicts per chunk and leaves no
    # cycles behind; at the default threshold (700) the young-generation collections take
    # about a fifth of a worker's time. This process exits when the batch is done.
    gc.set_threshold(10_000, 20, 20)
    try:
        held: _Held = {}
        while True:
            with next_chunk.get_lock():
                idx = next_chunk.value
                next_chunk.value = idx + 1
            if idx >= len(chunks):
                break
            done = [render_file(root, rel, config, env=env, mesh=mesh) for rel in chunks[idx]]
            conn.send(("chunk", idx, [_summarize(o, held) for o in done] if hold else done))
            # What this worker holds only grows and holds no cycles: keep the cyclic GC from
            # scanning it again and again (as render_to_dir does for the cache).
            gc.freeze()
        conn.send(("rendered",))
        while True:
            order = conn.recv()
            if order[0] != "write":
                return
            _write(order[1], (held[rel] for rel in order[2]), order[3])
            conn.send(("written",))
    except EOFError:
        return  # the parent went away
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        detail = traceback.format_exc()
        for report in (exc, RuntimeError(repr(exc))):  # the second if the first cannot be pickled
            try:
                conn.send(("failed", report, detail))
                return
            except OSError:
                return  # the parent stopped listening (another worker failed first): nobody to tell
            except Exception:  # noqa: BLE001, S112 - the report could not be pickled: send the plain one
                continue


def application_name_errors(root: Path, config: Config) -> list[Diagnostic]:
    """Folders whose Argo CD Applications would share a name, from the blueprints alone (no render):
    what `bootstrap argocd` checks before printing ApplicationSets."""
    names = application_names(config)
    if names is None:
        return []
    facts: list[Facts] = []
    for rel in discover(root):
        loaded = load_file(root, rel, config)
        facts.extend(facts_for(loaded, inst) for inst in loaded.instances)
    return check_application_names(facts, *names)


def check_selection(config: Config, env: str | None, mesh: str | None) -> None:
    """Refuse an --env that meshgen.yaml does not define."""
    if env is not None and env not in config.environments:
        raise BlueprintError([Diagnostic("meshgen.yaml", 1, 1, "environments",
                                         f"--env {env}: no such environment (environments: {', '.join(config.environments)})")])


def assemble(config: Config, outcomes: Iterable[FileOutcome], *, partial: bool = False) -> RenderResult:
    """Join per-file outcomes, run the fleet checks, and fail with every error if any (unless `partial`)."""
    outcomes = sorted(outcomes, key=lambda o: o.path)
    diagnostics = [d for o in outcomes for d in o.diagnostics]
    diagnostics.extend(check_fleet([f for o in outcomes for f in o.facts], application_names(config)))
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors and not partial:
        raise BlueprintError(diagnostics)
    failed: dict[str, str] = {}
    for d in sorted(errors):
        failed.setdefault(d.file, str(d))
    units = sorted((u for o in outcomes if o.path not in failed for u in o.units), key=lambda u: u.folder)
    blocked = sorted({
        *(Blocked(f.env, *_unit_key(f), o.path, failed[o.path]) for o in outcomes if o.path in failed for f in o.facts),
        *(Blocked(e, ns, svc, o.path, failed[o.path]) for o in outcomes if o.path in failed and not o.facts
          for e, ns, svc in o.claims),
    }, key=lambda b: (b.env, b.namespace, b.service, b.file))
    return RenderResult(config, units, sorted({d for d in diagnostics if d.severity == "warning"}),
                        errors=sorted(errors), failed_files=failed, blocked=blocked)


def _unit_key(f: Facts) -> tuple[str, str]:
    """(namespace, service) of the unit a blueprint's facts describe."""
    if f.kind == "Namespace":
        return f.namespace, NAMESPACE_FOLDER
    if f.kind == "Mesh":
        return "", MESH_FOLDER
    return f.namespace, f.service
