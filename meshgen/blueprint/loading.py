"""Loading a blueprints repository: meshgen.yaml, every blueprint, overlays, positions.

Each file is processed on its own (`load_file`), so the work can be cached by content
hash and spread over processes; everything that needs the whole fleet lives in
meshgen.blueprint.analysis and works on the small `facts` each file yields.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from meshgen.blueprint.base import Strict, describe_value, excerpt
from meshgen.blueprint.config import Config
from meshgen.blueprint.model import (
    KINDS,
    IngressBlueprint,
    MeshBlueprint,
    NamespaceBlueprint,
    ServiceBlueprint,
)
from meshgen.blueprint.yamlsource import MAX_FILE_BYTES, Document, YAMLSourceError, load_document
from meshgen.diagnostics import BlueprintError, Diagnostic, format_path
from meshgen.render.registry import MESHES

CONFIG_FILE = "meshgen.yaml"
BLUEPRINTS_DIR = "blueprints"
SUFFIXES = (".yaml", ".yml")

FieldPath = tuple[str | int, ...]

MAX_MESSAGE_CHARS = 600
"""Longest validation message kept: enough for a list of valid keys, too short to carry a file."""


@dataclass(frozen=True)
class Instance:
    """One blueprint as it applies to one environment (overlay applied)."""

    env: str
    mesh: str
    team: str | None
    source: str  # repository-relative path of the blueprint
    blueprint: ServiceBlueprint | NamespaceBlueprint | MeshBlueprint | IngressBlueprint
    overlay_keys: frozenset[str] = frozenset()  # top-level keys that came from environments.<env>

    @property
    def kind(self) -> str:
        return self.blueprint.kind


@dataclass
class LoadedFile:
    """What one blueprint file yields: its instances per environment, or its errors."""

    path: str
    digest: str
    instances: list[Instance] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    document: Document | None = None
    # When the file does not validate: the blueprint with the faulty keys left out, one instance
    # per environment, so the checks that need a whole blueprint still report their findings.
    salvaged: list[Instance] = field(default_factory=list)

    def locate(self, path: FieldPath) -> tuple[int, int]:
        return self.document.position(path) if self.document is not None else (1, 1)

    def diag(self, path: FieldPath, message: str, *, severity: str = "error", code: str = "") -> Diagnostic:
        line, col = self.locate(path)
        return Diagnostic(self.path, line, col, format_path(path), message, severity, code)  # type: ignore[arg-type]


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- meshgen.yaml ---------------------------------------------------------------------------


def load_config(root: Path) -> tuple[Config, str]:
    """Read and validate ROOT/meshgen.yaml. Raises BlueprintError with every problem."""
    path = root / CONFIG_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BlueprintError(
            [Diagnostic(str(path), 1, 1, "", f"no {CONFIG_FILE} here; run meshgen in a blueprints repository "
                        f"(a folder with {CONFIG_FILE} and {BLUEPRINTS_DIR}/) or pass its path")]
        ) from None
    rel = CONFIG_FILE
    try:
        doc = load_document(raw)
    except YAMLSourceError as exc:
        raise BlueprintError([Diagnostic(rel, exc.line, exc.column, "", exc.message)]) from None
    try:
        return Config.model_validate(doc.data if doc.data is not None else {}), digest_bytes(raw)
    except ValidationError as exc:
        raise BlueprintError(_validation_diagnostics(rel, doc, exc)) from None


# --- discovery -------------------------------------------------------------------------------


StatKey = tuple[int, int, int]  # mtime_ns, size, inode: changes when a file is written


def scan(root: Path) -> dict[str, StatKey]:
    """Every blueprint file under ROOT/blueprints/ with its stat key, sorted by path.

    One pass with scandir (the entry hands out its stat); hidden files and folders are skipped.
    Discovery order never matters: callers get the sorted paths.
    """
    found: dict[str, StatKey] = {}

    def walk(folder: str, rel: str) -> None:
        try:
            it = os.scandir(folder)
        except FileNotFoundError:
            return
        with it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, f"{rel}{e.name}/")
                elif e.name.endswith(SUFFIXES):
                    # A symlink is listed, and judged (and refused if it leaves ROOT) by read_blueprint.
                    try:
                        st = e.stat()
                    except OSError:  # a dangling link
                        st = e.stat(follow_symlinks=False)
                    found[f"{rel}{e.name}"] = (st.st_mtime_ns, st.st_size, st.st_ino)

    walk(str(root / BLUEPRINTS_DIR), f"{BLUEPRINTS_DIR}/")
    return dict(sorted(found.items()))


def discover(root: Path) -> list[str]:
    """Repository-relative paths of every blueprint file, sorted."""
    return list(scan(root))


# --- one file ----------------------------------------------------------------------------------


def load_file(
    root: Path,
    rel: str,
    config: Config,
    *,
    env: str | None = None,
    mesh: str | None = None,
    data: bytes | None = None,
) -> LoadedFile:
    """Parse and validate one blueprint and resolve it for each environment it applies to."""
    if data is None:
        try:
            data = read_blueprint(root, rel)
        except YAMLSourceError as exc:
            return LoadedFile(rel, "", diagnostics=[Diagnostic(rel, 1, 1, "", exc.message)])
    raw = data
    result = LoadedFile(rel, digest_bytes(raw))
    try:
        doc = load_document(raw)
    except YAMLSourceError as exc:
        result.diagnostics.append(Diagnostic(rel, exc.line, exc.column, "", exc.message))
        return result
    result.document = doc
    if not isinstance(doc.data, dict):
        result.diagnostics.append(
            # The type only, never the value: the whole file is this value.
            result.diag((), "a blueprint is a mapping of keys such as `service:` and `namespace:`, got "
                        f"{_kind_of(doc.data)}")
        )
        return result
    kind = doc.data.get("kind", "Service")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        result.diagnostics.append(
            result.diag(("kind",), f"unknown kind {excerpt(kind)}{_suggest(str(kind), list(KINDS))} (valid kinds: {', '.join(KINDS)})")
        )
        return result
    try:
        blueprint = model.model_validate(doc.data)
    except ValidationError as exc:
        result.diagnostics.extend(_validation_diagnostics(rel, doc, exc))
        salvaged = _salvage(model, doc.data, exc)
        if salvaged is not None:
            known = _known_mesh(result, ("mesh",), getattr(salvaged, "mesh", None))
            for env_name in _target_environments(LoadedFile(rel, ""), salvaged, config, env):
                env_mesh = mesh or (known and getattr(salvaged, "mesh", None)) or config.environments[env_name].mesh
                result.salvaged.append(Instance(env_name, env_mesh, getattr(salvaged, "team", None), rel, salvaged))
        return result
    base_known = _known_mesh(result, ("mesh",), getattr(blueprint, "mesh", None))
    envs = _target_environments(result, blueprint, config, env)
    # Overlays are checked for every environment they name, even when rendering one.
    resolved_envs = {name: _apply_overlay(result, blueprint, doc.data, name)
                     for name in _overlay_envs(blueprint, config, envs)}
    for env_name in envs:
        resolved = resolved_envs[env_name]
        if resolved is None:
            continue
        bp, overlay_keys = resolved
        allowed, team = _resolve_team(result, bp, config)
        if not allowed:
            continue
        known = _known_mesh(result, ("environments", env_name, "mesh"), bp.mesh) if "mesh" in overlay_keys \
            else base_known
        env_mesh = mesh or (known and getattr(bp, "mesh", None)) or config.environments[env_name].mesh
        # With an unknown mesh the blueprint is only checked further, never rendered.
        (result.instances if known else result.salvaged).append(Instance(env_name, env_mesh, team, rel, bp, overlay_keys))
    return result


def _known_mesh(result: LoadedFile, path: FieldPath, name: Any) -> bool:
    """Whether a blueprint's `mesh:` names a registered mesh (or none); if not, the error at its line.

    Checked here rather than in the model: the mesh registry sits above meshgen.blueprint.model."""
    if name is None or name in MESHES:
        return True
    names = [repr(n) for n in MESHES]
    choices = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    result.diagnostics.append(result.diag(path, f"{describe_value(name)} is not allowed; input should be {choices}"))
    return False


def read_blueprint(root: Path, rel: str) -> bytes:
    """The bytes of ROOT/REL, refusing what a blueprint file cannot be before reading it: a symlink
    leading out of ROOT (it would print or render a file the author may not read), anything but a
    regular file (a FIFO blocks forever), a file over MAX_FILE_BYTES. Raises YAMLSourceError."""
    path = root / rel
    if os.path.islink(path):
        real, base = os.path.realpath(path), os.path.realpath(root)
        if os.path.commonpath([real, base]) != base:
            raise YAMLSourceError("this blueprint is a symbolic link to a file outside the repository; refused "
                                  "(replace the link with the file itself)")
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)), "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise YAMLSourceError("not a regular file; a blueprint is a YAML file")
            if st.st_size > MAX_FILE_BYTES:
                raise YAMLSourceError(f"file is {st.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit for a "
                                      "blueprint; split it into several blueprints")
            return fh.read(MAX_FILE_BYTES + 1)  # the limit holds even if the file grows meanwhile
    except OSError as exc:
        raise YAMLSourceError(f"cannot read this file ({exc.strerror}); check that it exists and is readable") from None


def _kind_of(value: Any) -> str:
    if isinstance(value, str):
        return f"a single text value ({len(value)} characters)"
    return describe_value(value)


def _salvage(model: type[Strict], data: dict[str, Any], exc: ValidationError, tries: int = 4) -> Any:
    """The blueprint without the keys that failed validation, or None when that leaves none.

    A misspelt key or a wrong weight must not hide an undeclared version elsewhere in the same
    file: the per-blueprint checks run on what is left. Only used to find more errors, never rendered.
    """
    pruned = copy.deepcopy(data)
    for _ in range(tries):
        paths = {_user_path(pruned, tuple(err["loc"])) for err in exc.errors(include_url=False)}
        if not paths or () in paths:
            return None
        if any(isinstance(p[-1], int) for p in paths):
            return None  # dropping a list item would shift the positions later findings point at
        for path in paths:
            parent: Any = pruned
            for part in path[:-1]:
                parent = parent[part]
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
        try:
            return model.model_validate(pruned)
        except ValidationError as again:
            exc = again
    return None


def _target_environments(
    result: LoadedFile, blueprint: Strict, config: Config, only: str | None
) -> list[str]:
    names = list(config.environments)
    listed = getattr(blueprint, "environments", None)
    if listed is not None:
        for env_name in listed:
            if env_name not in config.environments:
                result.diagnostics.append(
                    result.diag(
                        ("environments", env_name),
                        f"environment {excerpt(env_name)} is not in meshgen.yaml{_suggest(env_name, names)} "
                        f"(environments: {', '.join(names)})",
                    )
                )
        names = [n for n in names if n in listed]
    if only is not None:
        names = [n for n in names if n == only]
    return names


def _overlay_envs(blueprint: Strict, config: Config, envs: list[str]) -> list[str]:
    listed = getattr(blueprint, "environments", None) or {}
    return sorted(set(envs) | {e for e in listed if e in config.environments})


def _suggest(word: str, choices: list[str]) -> str:
    guess = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f", did you mean {guess[0]!r}?" if guess else ""


def _apply_overlay(
    result: LoadedFile, blueprint: Strict, data: dict[str, Any], env: str
) -> tuple[Any, frozenset[str]] | None:
    """The blueprint with `environments.<env>` replacing whole top-level keys (no deep merge)."""
    if not isinstance(blueprint, ServiceBlueprint) or not blueprint.environments:
        return blueprint, frozenset()
    overlay = blueprint.environments.get(env)
    if not overlay:
        return blueprint, frozenset()
    merged = {k: v for k, v in data.items() if k != "environments"}
    merged.update(overlay)
    try:
        resolved = ServiceBlueprint.model_validate(merged)
    except ValidationError as exc:
        assert result.document is not None
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc and loc[0] in overlay:
                result.diagnostics.append(_one_diagnostic(result.path, result.document, ("environments", env, *loc), err))
            # errors outside the overlay were already reported by the base validation
        return None
    return resolved, frozenset(overlay)


def _resolve_team(result: LoadedFile, bp: Any, config: Config) -> tuple[bool, str | None]:
    """(may it write into its namespace, the team it writes as); the reason is added as a diagnostic."""
    team = getattr(bp, "team", None)
    namespace = getattr(bp, "namespace", None)
    if isinstance(bp, MeshBlueprint):
        return _resolve_mesh_team(result, team, config)
    if not config.teams or namespace is None:
        return True, team
    if team is not None:
        if team not in config.teams:
            result.diagnostics.append(result.diag(("team",), f"team {team!r} is not in meshgen.yaml (teams: {', '.join(config.teams)})"))
            return False, None
        owned = config.teams[team].namespaces
        if namespace not in owned:
            owners = config.namespace_owner(namespace)
            hint = f"it belongs to {', '.join(owners)}" if owners else "no team owns it"
            result.diagnostics.append(
                result.diag(("namespace",),
                            f"team {team!r} does not own namespace {namespace!r} ({hint}); "
                            f"{team} owns: {', '.join(owned) or 'nothing'}")
            )
            return False, None
        return True, team
    owners = config.namespace_owner(namespace)
    if len(owners) == 1:
        return True, owners[0]
    if not owners:
        result.diagnostics.append(
            result.diag(("namespace",), f"namespace {namespace!r} belongs to no team in meshgen.yaml; "
                        "add it to a team's namespaces, or set `team:` to a team that owns it")
        )
    else:
        result.diagnostics.append(
            result.diag(("namespace",), f"namespace {namespace!r} is shared by teams {', '.join(owners)}; set `team:`")
        )
    return False, None


def _resolve_mesh_team(result: LoadedFile, team: str | None, config: Config) -> tuple[bool, str | None]:
    """`kind: Mesh` changes every service of the mesh: only a team with `mesh: true` writes it."""
    if not config.teams:
        return True, team
    allowed = config.mesh_teams()
    listing = ", ".join(allowed) if allowed else "none yet; give the platform team `mesh: true` in meshgen.yaml"
    if team is None:
        result.diagnostics.append(result.diag(
            ("kind",), f"a kind: Mesh blueprint sets mesh-wide settings and needs `team:`, a team with "
                       f"`mesh: true` in meshgen.yaml (teams that may: {listing})"))
        return False, None
    if team not in allowed:
        why = "is not in meshgen.yaml" if team not in config.teams else "does not have `mesh: true` in meshgen.yaml"
        result.diagnostics.append(result.diag(
            ("team",), f"team {team!r} {why}; only the platform team writes kind: Mesh (teams that may: {listing})"))
        return False, None
    return True, team


# --- pydantic errors to diagnostics ------------------------------------------------------------

# Pydantic's type errors in the words of a YAML file (a "tuple" is a list to the person writing it).
_EXPECTED = {
    "tuple_type": "a list (one `- item` per entry)",
    "list_type": "a list (one `- item` per entry)",
    "set_type": "a list (one `- item` per entry)",
    "dict_type": "a mapping of `key: value` entries",
    "model_type": "a mapping of `key: value` entries",
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _validation_diagnostics(rel: str, doc: Document, exc: ValidationError) -> list[Diagnostic]:
    return [_one_diagnostic(rel, doc, tuple(err["loc"]), err) for err in exc.errors(include_url=False)]


def _one_diagnostic(rel: str, doc: Document, loc: FieldPath, err: Any) -> Diagnostic:
    path = _user_path(doc.data, loc)
    line, col = doc.position(path)
    kind = err["type"]
    msg = err["msg"]
    if kind == "missing":
        msg = f"required key {path[-1]!r} is missing" if path else "required key missing"
    elif kind in ("literal_error", "enum"):
        msg = f"{describe_value(err.get('input'))} is not allowed; {msg[0].lower()}{msg[1:]}"
    elif kind in _EXPECTED:
        msg = f"expected {_EXPECTED[kind]}, got {describe_value(err.get('input'))}"
    elif kind.endswith(("_type", "_parsing")):
        msg = f"{msg[0].lower()}{msg[1:]}, got {describe_value(err.get('input'))}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if len(msg) > MAX_MESSAGE_CHARS:  # a validator quoted a long value: keep the error, not the value
        msg = msg[:MAX_MESSAGE_CHARS] + f"... (message cut at {MAX_MESSAGE_CHARS} characters)"
    return Diagnostic(rel, line, col, format_path(path), msg)


def _user_path(data: Any, loc: FieldPath) -> FieldPath:
    """Keep the parts of a pydantic location that exist in the user's document.

    Validators normalise short forms, so locations can name things the user never wrote
    (`to[0].version` for `to: v2`) or pydantic's internal union tags. The path shown is the
    real part, plus a final missing key.
    """
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:  # noqa: SIM114 - two branches, so mypy narrows `part`
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and i == len(loc) - 1 and "[" not in part:
            out.append(part)  # a missing key, named
            break
        elif isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool", "list", "dict"}):
            continue  # pydantic's union/function tags
        else:
            break
    return tuple(out)


# --- the whole repository ------------------------------------------------------------------------
