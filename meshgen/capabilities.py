"""The capability matrix: blueprint feature x mesh flavour, generated from the registered meshes'
renderers (meshgen.render.registry)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

from meshgen.blueprint.config import Config
from meshgen.render.base import Mesh
from meshgen.render.features import FEATURES
from meshgen.render.registry import MESHES


def _configs(root: Path | None) -> list[tuple[Mesh, Config]]:
    """Each mesh with the settings of ROOT's meshgen.yaml, or without one each mesh's example flavours."""
    if root is not None:
        from meshgen.blueprint.loading import load_config

        config, _ = load_config(root)
        return [(mesh, config) for mesh in MESHES.values()]
    return [(mesh, Config.model_validate({"environments": {"x": {"mesh": mesh.name}}, mesh.name: dict(section)}))
            for mesh in MESHES.values() for section in mesh.example_flavours]


def capability_matrix(root: Path | None = None) -> dict[str, Any]:
    columns = []
    for mesh, config in _configs(root):
        cls = mesh.renderer
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


def format_text(matrix: dict[str, Any], width: int | None = None) -> str:
    """The matrix for a terminal: one block per feature, every cell wrapped to the width.

    The markdown table (`format_markdown`, for the README) puts each feature on one line, hundreds
    of characters long; here the feature is a heading and each flavour an indented, wrapped line.
    """
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    width = max(width, 40)
    cols = matrix["columns"]
    label = max(len(c["flavour"]) for c in cols) + 2
    out: list[str] = []
    for feature in matrix["features"]:
        out.append(feature)
        for c in cols:
            cap = c["features"][feature]
            text = cap["support"] + (f": {cap['note']}" if cap["note"] and cap["support"] != "full" else "")
            head = f"  {c['flavour']:<{label}}"
            out.extend(textwrap.wrap(text, width=width, initial_indent=head, subsequent_indent=" " * len(head),
                                     break_on_hyphens=False) or [head.rstrip()])
        out.append("")
    return "\n".join(out).rstrip("\n")
