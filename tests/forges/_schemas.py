"""Strict JSON-Schema validators built from the reference API descriptions.

"Strict" means two changes to the upstream schemas, both so that drift between meshgen and the
real API fails a test instead of passing silently:

* every object schema that lists properties gets additionalProperties: false, so a test server
  can only send fields the real API has (meshgen cannot come to depend on an invented field), and
  meshgen can only send request fields the real API knows (the real API would ignore the others);
* OpenAPI 3.0 `nullable: true` is turned into JSON-Schema null types, so null is allowed exactly
  where the description allows it.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# shared/ sits beside the repository checkout (CI lays a copy there, as for developers).
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "api"
_COMBINERS = ("allOf", "anyOf", "oneOf")


def _reference_dir() -> Path:
    for candidate in (REFERENCE, Path("/work/shared/reference/api")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("shared/reference/api not found")


def _convert(node: Any, uri: str, *, openapi3: bool) -> Any:
    if isinstance(node, list):
        return [_convert(item, uri, openapi3=openapi3) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "definitions", "schemas") and isinstance(value, dict):
            # A map of name -> schema: the names are data (a property may be called "nullable").
            out[key] = {name: _convert(sub, uri, openapi3=openapi3) for name, sub in value.items()}
        else:
            out[key] = _convert(value, uri, openapi3=openapi3)
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        out["$ref"] = uri + ref  # absolute, so any sub-schema can be validated on its own
    if "properties" in out and out.get("type", "object") == "object" and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if openapi3 and out.get("nullable") is True:
        del out["nullable"]
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class ApiSpec:
    """One API description file, converted, with helpers to validate and to build instances."""

    def __init__(self, filename: str, uri: str, *, openapi3: bool) -> None:
        raw = json.loads((_reference_dir() / filename).read_text())
        self.uri = uri
        self.openapi3 = openapi3
        self.doc: dict[str, Any] = _convert(raw, uri, openapi3=openapi3)
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self._registry: Registry = Registry().with_resource(uri, resource)

    # -- looking things up ---------------------------------------------------------------------

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema and len(schema) == 1:
            pointer = schema["$ref"].removeprefix(self.uri + "#/").split("/")
            node: Any = self.doc
            for part in pointer:
                node = node[part.replace("~1", "/").replace("~0", "~")]
            schema = node
        return schema

    def schema(self, name: str) -> dict[str, Any]:
        """A named schema: components/schemas (OpenAPI 3) or definitions (Swagger 2)."""
        return self.doc["components"]["schemas"][name] if self.openapi3 else self.doc["definitions"][name]

    def operation(self, path: str, method: str) -> dict[str, Any]:
        return self.doc["paths"][path][method.lower()]

    def response_schema(self, path: str, method: str, status: int) -> dict[str, Any] | None:
        """Schema of the JSON body of a documented response, None if it has no body."""
        responses = self.operation(path, method)["responses"]
        if str(status) not in responses:
            raise AssertionError(f"{method} {path}: status {status} is not documented ({sorted(responses)})")
        response = self.resolve(responses[str(status)])
        if self.openapi3:
            return response.get("content", {}).get("application/json", {}).get("schema")
        return response.get("schema")

    def request_schema(self, path: str, method: str) -> dict[str, Any] | None:
        op = self.operation(path, method)
        if self.openapi3:
            return op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        bodies = [p for p in op.get("parameters", []) if p.get("in") == "body"]
        return bodies[0]["schema"] if bodies else None

    def query_parameters(self, path: str, method: str) -> dict[str, dict[str, Any]]:
        """name -> schema of each documented query parameter."""
        out: dict[str, dict[str, Any]] = {}
        for param in self.operation(path, method).get("parameters", []):
            param = self.resolve(param)
            if param.get("in") == "query":
                schema = param.get("schema") or {k: v for k, v in param.items()
                                                 if k in ("type", "enum", "minimum", "items")}
                out[param["name"]] = schema
        return out

    # -- validating ----------------------------------------------------------------------------

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = _validator(self, json.dumps(schema, sort_keys=True))
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
                for e in validator.iter_errors(instance)]

    # -- building ------------------------------------------------------------------------------

    def skeleton(self, schema: dict[str, Any]) -> Any:
        """A small instance valid against `schema`: required properties only, nulls where allowed."""
        schema = self.resolve(schema)
        if "anyOf" in schema or "oneOf" in schema:
            branches = schema.get("anyOf") or schema["oneOf"]
            if any(b.get("type") == "null" for b in branches):
                return None
            return self.skeleton(branches[0])
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for branch in schema["allOf"]:
                merged.update(self.skeleton(branch))
            return merged
        kind = schema.get("type")
        if isinstance(kind, list):
            if "null" in kind:
                return None
            kind = kind[0]
        if "enum" in schema:
            return schema["enum"][0]
        if kind == "object" or "properties" in schema:
            props = schema.get("properties", {})
            return {name: self.skeleton(props[name]) for name in schema.get("required", [])}
        if kind == "array":
            return []
        if kind == "integer":
            return max(1, schema.get("minimum", 1))
        if kind == "number":
            return 1.0
        if kind == "boolean":
            return False
        if kind == "string":
            fmt = schema.get("format")
            if fmt == "date-time":
                return "2026-01-01T00:00:00Z"
            if fmt in ("uri", "uri-template", "url"):
                return "https://forge.test/x"
            if fmt == "email":
                return "x@forge.test"
            return "x"
        return {}


@cache
def _validator(spec: ApiSpec, schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json), registry=spec._registry)


@cache
def github_spec() -> ApiSpec:
    return ApiSpec("github-pulls.json", "urn:meshgen-test:github", openapi3=True)


@cache
def gitea_spec() -> ApiSpec:
    return ApiSpec("gitea-pulls.json", "urn:meshgen-test:gitea", openapi3=False)


def deep_update(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(changes)
    return out
