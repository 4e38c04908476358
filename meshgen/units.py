"""The contract between the renderer and the GitOps half: one `Unit` per owned folder.

The renderer produces, per environment, the full list of units it wants to exist.
Everything downstream (tree building, deletion of stale folders, PR grouping) relies on
that list being *complete* for the environment: a folder meshgen owns that has no unit
is treated as a deleted blueprint.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The label every rendered manifest carries; it is how an owned folder is recognised.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "meshgen"

#: Pseudo service names for namespace-wide and mesh-wide folders.
NAMESPACE_SERVICE = "_namespace"
MESH_SERVICE = "_mesh"


@dataclass(frozen=True)
class Unit:
    """One folder meshgen owns in the environment repository, with its full rendered content."""

    env: str  # environment name from meshgen.yaml
    namespace: str  # "" for mesh-wide units
    service: str  # service name, or "_namespace" / "_mesh" for namespace-/mesh-wide resources
    team: str | None
    folder: str  # repo-relative folder meshgen owns, e.g. "staging/production/api-service"
    files: Mapping[str, bytes]  # file name inside folder -> rendered YAML
    warnings: tuple[str, ...] = ()  # renderer warnings (features the mesh cannot express)
    blueprint_path: str = ""  # e.g. "blueprints/payments/api-service.yaml"

    @property
    def display_name(self) -> str:
        """`namespace/service`, or `_mesh` for the mesh-wide unit: what reviewers read."""
        return f"{self.namespace}/{self.service}" if self.namespace else self.service


def content_hash(units: Iterable[Unit]) -> str:
    """A stable hash of folders and file contents (order-independent), e.g. for commit trailers.

    Only what lands in the repository counts: warnings and blueprint paths do not change it.
    """
    h = hashlib.sha256()
    for unit in sorted(units, key=lambda u: u.folder):
        h.update(b"folder\0" + unit.folder.encode() + b"\0")
        for name in sorted(unit.files):
            data = unit.files[name]
            h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return "sha256:" + h.hexdigest()


def is_managed(data: bytes) -> bool:
    """Whether a YAML document carries `app.kubernetes.io/managed-by: meshgen`.

    A byte-level check on purpose: it runs on foreign files too, which may not even be valid
    YAML, and it must be cheap (it runs once per candidate folder when scanning for deletions).
    Block and flow style and quoted keys/values all count.
    """
    return _MANAGED_RE.search(data) is not None


_MANAGED_RE = re.compile(
    rb"""["']?app\.kubernetes\.io/managed-by["']?[ \t]*:[ \t]*["']?meshgen["']?[ \t]*(?:$|[,}#\r\n])""",
    re.MULTILINE,
)
