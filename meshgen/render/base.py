"""The one small interface every mesh renderer implements, and what it hands back.

A renderer turns one resolved blueprint into Kubernetes resources (plain dicts). It
declares, per blueprint feature, how well its mesh can express it; the capability matrix
(`meshgen capabilities`) and the unsupported-feature check are both generated from those
declarations, so the table cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from meshgen.blueprint.base import Strict
from meshgen.blueprint.model import IngressBlueprint, MeshBlueprint, NamespaceBlueprint, ServiceBlueprint

if TYPE_CHECKING:  # meshgen.yaml's Config is built from the mesh registry, above this layer
    from meshgen.blueprint.config import Config

Support = Literal["full", "partial", "none"]

MANAGED_BY = "app.kubernetes.io/managed-by"
SERVICE_LABEL = "meshgen.dev/service"
TEAM_LABEL = "meshgen.dev/team"
SOURCE_ANNOTATION = "meshgen.dev/blueprint"


@dataclass(frozen=True)
class Capability:
    """How a mesh expresses one blueprint feature, and what is lost when it cannot."""

    support: Support
    note: str = ""


@dataclass(frozen=True)
class Resource:
    """One rendered Kubernetes object. `body` holds apiVersion, kind, metadata, spec, ..."""

    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        ns = self.body["metadata"].get("namespace")
        return str(ns) if ns is not None else None


class RenderError(Exception):
    """The blueprint asks for something a renderer cannot write (e.g. more HTTPRoute rules than
    Gateway API allows). `path` is the field path in the blueprint; the pipeline turns this into
    a file:line:column diagnostic, like any other blueprint error."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across render worker processes
        return (type(self), (self.path, self.message))


@dataclass
class RenderContext:
    """What a renderer knows besides the blueprint: environment, settings and provenance."""

    config: Config
    env: str
    mesh: str
    blueprint_path: str  # repository-relative, e.g. blueprints/payments/api-service.yaml
    team: str | None = None
    # Versions of other services in the same environment, for cross-service subsets:
    # (namespace, service) -> version names. Renderers may ignore it.
    fleet_versions: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # Features skipped because the mesh cannot express them (`unsupported: warn`).
    skipped: frozenset[str] = frozenset()
    # What the renderer wants reviewers to do by hand (e.g. annotate an object meshgen does
    # not own); the pipeline adds these to the unit's notes, which reach the pull request.
    notes: list[str] = field(default_factory=list)


class Renderer(Protocol):
    """A mesh renderer. One module per mesh: render/istio.py, render/linkerd/."""

    mesh: ClassVar[str]

    @classmethod
    def flavours(cls, config: Config) -> str:
        """A short name for the flavour the settings select, e.g. `2.18 httproute+annotations`."""

    @classmethod
    def capabilities(cls, config: Config) -> Mapping[str, Capability]:
        """Support per feature key (see meshgen.render.features.FEATURES) for these settings."""

    def render_service(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
        """Resources for one service in one environment. Features in ctx.skipped are left out."""

    def render_ingress(self, ing: IngressBlueprint, ctx: RenderContext) -> list[Resource]:
        """kind: Ingress: edge routes for its hosts, bound to the gateway only."""

    def render_namespace(self, ns: NamespaceBlueprint, ctx: RenderContext) -> list[Resource]:
        """Namespace-wide resources (default mTLS, default-deny)."""

    def render_mesh(self, mesh: MeshBlueprint, ctx: RenderContext) -> list[Resource]:
        """Mesh-wide resources (telemetry defaults, mesh-wide mTLS, control-plane scraping)."""


def metadata(
    name: str,
    namespace: str | None,
    ctx: RenderContext,
    *,
    service: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Standard metadata: name, namespace, meshgen's labels and the provenance annotation.

    Keys come out in a fixed order so the YAML reads the same in every file.
    """
    all_labels: dict[str, str] = {MANAGED_BY: "meshgen"}
    if service is not None:
        all_labels[SERVICE_LABEL] = service
    if ctx.team:
        all_labels[TEAM_LABEL] = ctx.team
    if labels:
        all_labels.update(labels)
    all_annotations: dict[str, str] = {SOURCE_ANNOTATION: ctx.blueprint_path}
    if annotations:
        all_annotations.update(annotations)
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = all_labels
    meta["annotations"] = all_annotations
    return meta


def resource(api_version: str, kind: str, meta: dict[str, Any], **rest: Any) -> Resource:
    """A resource with keys in the order people write them: apiVersion, kind, metadata, spec."""
    body: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    body.update(rest)
    return Resource(body)


# --- one mesh: what it registers (meshgen.render.registry) ----------------------------------------

S = TypeVar("S", bound=Strict)
FieldPath = tuple[str | int, ...]


def settings_section(config: Config, mesh: str, model: type[S]) -> S:
    """The `<mesh>:` section of meshgen.yaml as its settings model: what each mesh's typed accessor
    returns (Config's mesh sections are generated from the registry, so mypy cannot see them)."""
    section = config.mesh_section(mesh)
    if not isinstance(section, model):
        raise TypeError(f"meshgen.yaml section {mesh!r} is a {type(section).__name__}, not a {model.__name__}")
    return section


class MeasuredVersion(Protocol):
    """The version a canary measures (meshgen.canary.gates.Target)."""

    @property
    def namespace(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def version(self) -> str: ...  # the name in the blueprint's `versions`
    @property
    def version_value(self) -> str: ...  # the pods' `version` label, else the version name
    @property
    def pod_labels(self) -> Mapping[str, str]: ...  # workload + version labels of its pods
    @property
    def dataplane(self) -> str: ...  # Mesh.dataplane of the settings in force


@dataclass(frozen=True)
class GateSeries:
    """The Prometheus series the default canary gates read for one version (after Flagger's
    per-mesh observers, fluxcd/flagger pkg/metrics/observers)."""

    requests: str  # request counter
    latency_ms_buckets: str  # request duration histogram buckets, in milliseconds
    failed: str  # label matcher of a failed request, e.g. response_code=~"5.."
    matchers: tuple[str, ...]  # label matchers selecting the version's requests


def _no_checks(bp: ServiceBlueprint | IngressBlueprint) -> Iterable[tuple[FieldPath, str]]:
    return ()


def _sidecar(config: Config) -> str:
    return "sidecar"


@dataclass(frozen=True)
class Mesh:
    """Everything meshgen knows about one service mesh. Each mesh module exports one as `MESH`;
    render/registry.py registers it on one line, and meshgen.yaml, the CLI, the capability matrix,
    bootstrap, the canary gates and the blueprint checks take it from there (CONTRIBUTING.md)."""

    # `environments.<env>.mesh: <name>` and the meshgen.yaml section `<name>:`
    name: str
    # That section's model; its defaults apply when meshgen.yaml leaves the section out.
    settings: type[Strict]
    renderer: type[Renderer]
    # Sections (as meshgen.yaml writes them) of the flavours `meshgen capabilities` shows without a
    # meshgen.yaml: the default first, then the ones whose capabilities differ.
    example_flavours: tuple[Mapping[str, Any], ...]
    # Where the control plane lives: the destination of the environment's `kind: Mesh` Application.
    system_namespace: Callable[[Config], str]
    # The default canary gates' series for a version.
    gate_series: Callable[[MeasuredVersion], GateSeries]
    # Who reports a version's requests, as the settings select it (MeasuredVersion.dataplane).
    dataplane: Callable[[Config], str] = _sidecar
    # Blueprint checks only this mesh needs: (field path, error message) per finding.
    check: Callable[[ServiceBlueprint | IngressBlueprint], Iterable[tuple[FieldPath, str]]] = _no_checks
    # The port a route's backend gets when the route names none (Gateway API backendRefs always name
    # one); None when the mesh routes to the Service as a whole. Edge routes to a service without
    # that port are reported.
    default_backend_port: int | None = None
