"""The capability matrix: blueprint feature x mesh flavour, generated from the renderers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshgen.blueprint.config import Config
from meshgen.render import MESHES, renderer_class
from meshgen.render.features import FEATURES

# The flavours shown when no meshgen.yaml is given: the default of each mesh and the legacy one.
_FLAVOURS: list[tuple[str, dict[str, Any]]] = [
    ("istio", {"istio": {"version": "1.24"}}),
    ("linkerd", {"linkerd": {"version": "2.18"}}),
    ("linkerd", {"linkerd": {"version": "2.14", "trafficSplit": "smi", "routePolicy": "serviceprofile"}}),
]


def _configs(root: Path | None) -> list[tuple[str, Config]]:
    if root is not None:
        from meshgen.blueprint.loading import load_config

        config, _ = load_config(root)
        return [(mesh, config) for mesh in MESHES]
    return [(mesh, Config.model_validate({"environments": {"x": {"mesh": mesh}}, **extra})) for mesh, extra in _FLAVOURS]


def capability_matrix(root: Path | None = None) -> dict[str, Any]:
    columns = []
    for mesh, config in _configs(root):
        cls = renderer_class(mesh)
        caps = cls.capabilities(config)
        columns.append({
            "flavour": cls.flavours(config),
            "features": {f: {"support": caps[f].support, "note": caps[f].note} for f in FEATURES},
        })
    return {"features": FEATURES, "columns": columns}


_MARK = {"full": "full", "partial": "partial", "none": "**none**"}


def format_markdown(matrix: dict[str, Any]) -> str:
    cols = matrix["columns"]
    head = "| feature | " + " | ".join(c["flavour"] for c in cols) + " |"
    sep = "|---" * (len(cols) + 1) + "|"
    rows = [head, sep]
    for feature in matrix["features"]:
        cells = []
        for c in cols:
            cap = c["features"][feature]
            note = f": {cap['note']}" if cap["note"] and cap["support"] != "full" else ""
            cells.append(_MARK[cap["support"]] + note.replace("|", "\\|"))
        rows.append(f"| `{feature}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)
