"""Golden files: the example repositories render to exactly the reviewed manifests, all strictly valid.

The goldens under tests/golden/ were reviewed by hand; regenerate after an intended change with
`UPDATE_GOLDEN=1 pytest tests/test_golden.py` and review the git diff like any other change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from k8s_schema import validate_manifest

from meshgen.pipeline import render_repository

HERE = Path(__file__).resolve().parent
CASES = {
    "examples": HERE.parent / "blueprints",
    "linkerd": HERE / "fixtures" / "linkerd",
    "linkerd-legacy": HERE / "fixtures" / "linkerd-legacy",
    "ingress-istio": HERE / "fixtures" / "ingress-istio",
    "ingress-linkerd": HERE / "fixtures" / "ingress-linkerd",
    "istio-ambient": HERE / "fixtures" / "istio-ambient",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_examples_render_to_the_reviewed_goldens(case: str) -> None:
    root = CASES[case]
    if not root.exists():
        pytest.fail(f"missing example repository {root}")
    rendered = render_repository(root).files()
    golden_dir = HERE / "golden" / case
    if os.environ.get("UPDATE_GOLDEN"):
        for old in golden_dir.rglob("*.yaml"):
            old.unlink()
        for rel, data in rendered.items():
            (golden_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden_dir / rel).write_bytes(data)
    golden = {p.relative_to(golden_dir).as_posix(): p.read_bytes() for p in sorted(golden_dir.rglob("*.yaml"))}
    assert sorted(rendered) == sorted(golden)
    for rel, data in rendered.items():
        assert data == golden[rel], rel


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_document_validates_strictly(case: str) -> None:
    rendered = render_repository(CASES[case]).files()
    assert rendered
    for rel, data in rendered.items():
        for doc in yaml.safe_load_all(data):
            validate_manifest(doc)
