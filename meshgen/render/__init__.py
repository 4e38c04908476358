"""Mesh renderers, one file per mesh, picked by name (after Flagger's router factory)."""

from __future__ import annotations

import importlib
from functools import cache

from meshgen.render.base import Renderer

_RENDERERS = {"istio": ("meshgen.render.istio", "IstioRenderer"), "linkerd": ("meshgen.render.linkerd", "LinkerdRenderer")}
MESHES = tuple(_RENDERERS)


@cache
def renderer_class(mesh: str) -> type[Renderer]:
    try:
        module_name, class_name = _RENDERERS[mesh]
    except KeyError:
        raise ValueError(f"unknown mesh {mesh!r}; meshgen renders {', '.join(MESHES)}") from None
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]
