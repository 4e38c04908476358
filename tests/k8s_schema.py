"""Strict validation of rendered manifests, like `kubectl apply --validate=strict`.

Custom resources are checked against ../shared/reference/schemas (the upstream CRD
schemas), made strict: an object schema that lists properties rejects any other key,
unless the CRD marks it x-kubernetes-preserve-unknown-fields. The apiVersion must be one
the CRD serves. Core kinds (Service, ConfigMap, ...) go through kubernetes-validate.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
SCHEMAS = REFERENCE / "schemas"
K8S_VERSION = "1.33"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_CORE_GROUPS = {"", "apps", "policy", "networking.k8s.io", "autoscaling", "batch", "rbac.authorization.k8s.io"}


class ManifestError(AssertionError):
    pass


@functools.cache
def _index() -> dict[tuple[str, str, str], dict[str, Any]]:
    idx = json.loads((SCHEMAS / "index.json").read_text())
    return {(e["group"], e["version"], e["kind"]): e for e in idx["schemas"]}


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _validator(group: str, version: str, kind: str) -> jsonschema.Draft7Validator:
    entry = _index()[(group, version, kind)]
    schema = copy.deepcopy(json.loads((SCHEMAS / entry["file"]).read_text()))
    schema = _strict(schema)
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def served_versions(group: str, kind: str) -> list[str]:
    return sorted(v for (g, v, k), e in _index().items() if g == group and k == kind and e["served"])


def validate_manifest(doc: dict[str, Any]) -> None:
    """Raise ManifestError with every problem found in one rendered document."""
    api_version = doc.get("apiVersion", "")
    kind = doc.get("kind", "")
    group, _, version = api_version.rpartition("/")
    meta = doc.get("metadata") or {}
    problems: list[str] = []
    name = meta.get("name", "")
    if not isinstance(name, str) or len(name) > 253 or not _NAME.match(name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    for key in meta:
        if key not in {"name", "namespace", "labels", "annotations"}:
            problems.append(f"metadata.{key} is not something meshgen should write")
    for k, v in (meta.get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63 or not re.match(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z", v):
            problems.append(f"label {k}={v!r} is not a valid label value")
    for v in (meta.get("annotations") or {}).values():
        if not isinstance(v, str):
            problems.append(f"annotation value {v!r} is not a string")
    if group in _CORE_GROUPS:
        import kubernetes_validate

        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except Exception as exc:  # kubernetes_validate raises its own ValidationError types
            problems.append(str(exc).splitlines()[0])
    else:
        if (group, version, kind) not in _index():
            raise ManifestError(f"{kind} {api_version}: no such CRD version (served: {served_versions(group, kind)})")
        if not _index()[(group, version, kind)]["served"]:
            problems.append(f"{api_version} {kind} is not served")
        for err in sorted(_validator(group, version, kind).iter_errors(doc), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in err.path)
            problems.append(f"{path}: {err.message}")
    if problems:
        raise ManifestError(f"{kind}/{name} ({api_version}):\n  " + "\n  ".join(problems))
