"""A toy third mesh: exactly what CONTRIBUTING.md "Adding a mesh" asks a mesh module to write (settings
model, renderer with capabilities and flavours, system namespace, canary gate series, checks, `MESH`),
and nothing else. tests/test_mesh_registry.py registers it beside Istio and Linkerd, as its one line
in meshgen/render/registry.py would, and shows every place that derives from the registry take it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

from meshgen.blueprint.base import DNSLabel, Strict
from meshgen.blueprint.model import IngressBlueprint, MeshBlueprint, NamespaceBlueprint, ServiceBlueprint
from meshgen.render.base import (
    Capability,
    FieldPath,
    GateSeries,
    MeasuredVersion,
    Mesh,
    RenderContext,
    Resource,
    metadata,
    resource,
    settings_section,
)
from meshgen.render.features import FEATURES


class ToySettings(Strict):
    namespace: DNSLabel = "toy-system"
    level: Literal["basic", "fancy"] = "basic"


def settings(config: Any) -> ToySettings:
    return settings_section(config, "toy", ToySettings)


class ToyRenderer:
    """One ConfigMap per service naming its versions; `basic` cannot express timeouts."""

    mesh: ClassVar[str] = "toy"

    @classmethod
    def flavours(cls, config: Any) -> str:
        return f"toy {settings(config).level}"

    @classmethod
    def capabilities(cls, config: Any) -> Mapping[str, Capability]:
        basic = settings(config).level == "basic"
        return {f: Capability("none", "toy basic has no timeouts") if basic and f == "timeout" else Capability("full")
                for f in FEATURES}

    def render_service(self, svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
        meta = metadata(f"toy-{svc.service}", svc.namespace, ctx, service=svc.service)
        return [resource("v1", "ConfigMap", meta, data={"versions": ",".join(svc.versions)})]

    def render_ingress(self, ing: IngressBlueprint, ctx: RenderContext) -> list[Resource]:
        return []

    def render_namespace(self, ns: NamespaceBlueprint, ctx: RenderContext) -> list[Resource]:
        return []

    def render_mesh(self, mesh: MeshBlueprint, ctx: RenderContext) -> list[Resource]:
        return []


def _gate_series(target: MeasuredVersion) -> GateSeries:
    return GateSeries(requests="toy_requests_total", latency_ms_buckets="toy_latency_ms_bucket", failed='code=~"5.."',
                      matchers=(f'ns="{target.namespace}"', f'svc="{target.service}"', f'v="{target.version_value}"'))


def _check(bp: ServiceBlueprint | IngressBlueprint) -> Iterable[tuple[FieldPath, str]]:
    if isinstance(bp, ServiceBlueprint) and len(bp.versions) > 2:
        yield ("versions",), "the toy mesh routes between at most two versions"


MESH = Mesh(
    name="toy",
    settings=ToySettings,
    renderer=ToyRenderer,
    example_flavours=({}, {"level": "fancy"}),
    system_namespace=lambda config: settings(config).namespace,
    gate_series=_gate_series,
    check=_check,
    default_backend_port=8080,
)


def install() -> None:
    """Register the toy mesh after the real ones, before anything derived from the registry is imported
    (meshgen.yaml's Config, the blueprint schema and checks): the registration line, made from outside."""
    from meshgen.render import registry

    derived = [m for m in ("meshgen.blueprint.config", "meshgen.blueprint.loading") if m in sys.modules]
    assert not derived, f"imported before the toy mesh was registered: {derived}"
    registry.MESHES = registry._register(*registry.MESHES.values(), MESH)
