"""Small builders shared by tests: write a blueprints repository into a temp folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

DEFAULT_CONFIG = """\
environments:
  staging: {mesh: istio, path: staging}
  production: {mesh: istio, path: production}
teams:
  payments: {namespaces: [payments]}
  catalog: {namespaces: [catalog]}
"""


def write_repo(root: Path, blueprints: dict[str, str], config: str = DEFAULT_CONFIG) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "meshgen.yaml").write_text(textwrap.dedent(config))
    for rel, text in blueprints.items():
        path = root / "blueprints" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def read_docs(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): yaml.safe_load(p.read_text()) for p in sorted(folder.rglob("*.yaml"))}
