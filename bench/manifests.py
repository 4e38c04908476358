"""Load rendered manifests, validate them against the CRD schemas, compare two renders.

The benchmark only trusts a timing when the output behind it is right, so
this is its sanity check: every object must validate against the pinned
Istio CRD schema of its apiVersion/kind, and with unknown fields rejected the
way the API server's strict field validation would (the schemas do not set
additionalProperties, so plain jsonschema would accept a misspelt field).

Usage: python bench/manifests.py FILE_OR_DIR...   # validate and count by kind
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "schemas"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
ISTIO_KINDS = ("VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy")

Doc = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name

# libyaml is ~10x faster than the pure-Python loader on large renders.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        else:
            files.append(path)
    return files


def load_docs(paths: Iterable[Path]) -> Iterator[Doc]:
    """Every Kubernetes object in the given files/dirs (YAML streams or JSON; Lists flattened)."""
    for file in manifest_files(paths):
        text = file.read_text()
        docs = [json.loads(text)] if file.suffix == ".json" else yaml.load_all(text, Loader=_Loader)
        for doc in docs:
            if not isinstance(doc, dict):
                continue  # empty documents between `---`
            if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
                yield from doc["items"]
            else:
                yield doc


def key(doc: Doc) -> Key:
    meta = doc.get("metadata") or {}
    return doc.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


@cache
def _validator(api_version: str, kind: str, schemas_dir: Path) -> jsonschema.protocols.Validator | None:
    group, _, version = api_version.rpartition("/")
    path = schemas_dir / f"{group}_{version}_{kind}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """Fields the structural schema does not declare (what `kubectl --validate=strict` rejects)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict) and "properties" in schema:
        props: dict[str, Any] = schema["properties"]
        for name, sub in value.items():
            if name in props:
                yield from _unknown_fields(sub, props[name], f"{path}.{name}")
            elif not schema.get("additionalProperties"):
                yield f"{path}.{name}: unknown field"
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for name, sub in value.items():
            yield from _unknown_fields(sub, schema["additionalProperties"], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _unknown_fields(item, schema["items"], f"{path}[{i}]")


def validate(doc: Doc, schemas_dir: Path = SCHEMAS_DIR) -> list[str]:
    """Problems with one object; empty when it is valid."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    validator = _validator(api_version, kind, schemas_dir)
    if validator is None:
        return [f"no schema for {api_version} {kind}"]
    problems = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)
    ]
    # The root schemas omit apiVersion/kind/metadata, so check only below spec.
    root = validator.schema if isinstance(validator.schema, dict) else {}
    spec_schema = root.get("properties", {}).get("spec", {})
    problems.extend(_unknown_fields(doc.get("spec", {}), spec_schema, "spec"))
    return problems


def validate_all(
    docs: Iterable[Doc], schemas_dir: Path = SCHEMAS_DIR, limit: int = 20
) -> tuple[Counter[str], list[str]]:
    """Count objects by kind and collect up to `limit` problems across them."""
    kinds: Counter[str] = Counter()
    problems: list[str] = []
    for doc in docs:
        kinds[doc.get("kind", "?")] += 1
        if len(problems) < limit:
            problems.extend(f"{'/'.join(key(doc))}: {p}" for p in validate(doc, schemas_dir))
    return kinds, problems[:limit]


def diff(a: Any, b: Any, path: str = "", names: tuple[str, str] = ("first", "second")) -> Iterator[str]:
    """Paths where two parsed objects differ (lists compared by position)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys(), key=str):
            if k not in b:
                yield f"{path}.{k}: only in {names[0]} ({a[k]!r})"
            elif k not in a:
                yield f"{path}.{k}: only in {names[1]} ({b[k]!r})"
            else:
                yield from diff(a[k], b[k], f"{path}.{k}", names)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from diff(x, y, f"{path}[{i}]", names)
    elif a != b:
        yield f"{path}: {a!r} != {b!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--schemas", type=Path, default=SCHEMAS_DIR)
    args = parser.parse_args(argv)
    kinds, problems = validate_all(load_docs(args.paths), args.schemas)
    for kind, count in sorted(kinds.items()):
        print(f"{count:8d} {kind}")
    for problem in problems:
        print(f"INVALID {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
