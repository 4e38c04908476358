"""A canary step rendered for every mesh and Linkerd flavour: only the objects the split changes carry the
weight annotations, weight 0 is the blueprint as written, and the weight reads back from the files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshgen.blueprint.loading import load_config
from meshgen.canary.steps import VERSION_ANNOTATION, WEIGHT_ANNOTATION, read_weight
from meshgen.pipeline import render_at_weight, render_repository

BLUEPRINT = """\
service: cart
namespace: shop
versions: {v1: {version: v1}, v2: {version: v2}}
routes:
  - name: beta
    match: {headers: {x-beta: "1"}}
    to: v2
  - name: default
    to: v1
canary: {stable: v1, to: v2, steps: [10, 50, 100], gates: {successRate: 99}}
"""

FLAVOURS = {
    "istio": ("mesh: istio", "", "virtualservice-"),
    "linkerd-httproute": ("mesh: linkerd", "linkerd: {trafficSplit: httproute}\n", "httproute-"),
    "linkerd-smi": ("mesh: linkerd", "linkerd: {trafficSplit: smi}\n", "trafficsplit-"),
}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_a_step_renders_and_reads_back_for_every_mesh(tmp_path: Path, flavour: str) -> None:
    mesh, extra, split_kind = FLAVOURS[flavour]
    (tmp_path / "blueprints").mkdir()
    (tmp_path / "blueprints" / "cart.yaml").write_text(BLUEPRINT)
    (tmp_path / "meshgen.yaml").write_text(f"environments:\n  staging: {{{mesh}}}\n{extra}")
    config, _ = load_config(tmp_path)
    [unit] = render_repository(tmp_path).units
    assert read_weight(unit.files.values()) == (None, 0)
    assert render_at_weight(tmp_path, config, unit, 0) is unit  # weight 0: the blueprint as written
    for weight in (10, 50, 100):
        step = render_at_weight(tmp_path, config, unit, weight)
        assert read_weight(step.files.values()) == ("v2", weight)
        changed = {n for n in step.files if step.files[n] != unit.files.get(n)}
        assert changed and any(n.startswith(split_kind) for n in changed), (changed, sorted(step.files))
        for name, data in step.files.items():
            notes = [d["metadata"].get("annotations", {}) for d in yaml.safe_load_all(data) if d]
            marked = any(WEIGHT_ANNOTATION in a for a in notes)
            # Only what the split changes is annotated; everything else is byte for byte as written.
            assert marked == (name in changed), name
            if marked:
                assert all(a.get(WEIGHT_ANNOTATION) == str(weight) and a.get(VERSION_ANNOTATION) == "v2"
                           for a in notes if WEIGHT_ANNOTATION in a)
    # The matched route keeps its own `to` at every step.
    full = render_at_weight(tmp_path, config, unit, 100)
    text = b"".join(full.files.values())
    assert b"x-beta" in text
