"""The meshes meshgen renders: one module each (its `MESH`), registered here on one line.

meshgen.yaml's mesh names and sections, the CLI's `--mesh` choices, the capability matrix, bootstrap's
control-plane namespaces, the canary's default gates and mesh-specific blueprint checks all come
from this table (CONTRIBUTING.md "Adding a mesh").
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from meshgen.blueprint.base import DNS1123_LABEL
from meshgen.render import istio, linkerd
from meshgen.render.base import Mesh


class UnknownMesh(ValueError):
    """A mesh name no module registers."""


def _register(*meshes: Mesh) -> Mapping[str, Mesh]:
    table: dict[str, Mesh] = {}
    for m in meshes:
        if not DNS1123_LABEL.match(m.name):
            raise ValueError(f"mesh name {m.name!r} is not a DNS-1123 label (it names a meshgen.yaml section)")
        if m.name in table:
            raise ValueError(f"mesh {m.name!r} is registered twice")
        if m.renderer.mesh != m.name:
            raise ValueError(f"mesh {m.name!r} registers the renderer of {m.renderer.mesh!r}")
        table[m.name] = m
    return MappingProxyType(table)


# The first is the default of `environments.<env>.mesh`.
MESHES = _register(istio.MESH, linkerd.MESH)


def mesh_names() -> tuple[str, ...]:
    return tuple(MESHES)


def mesh(name: str) -> Mesh:
    """The registered mesh called `name`; UnknownMesh names the registered ones."""
    found = MESHES.get(name)
    if found is None:
        raise UnknownMesh(f"unknown mesh {name!r}; meshgen renders {', '.join(MESHES)}")
    return found
