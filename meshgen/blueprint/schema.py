"""The JSON Schema of blueprints, for editors (yaml-language-server) and for reference.

Generated from the pydantic models, then widened where the models accept short forms
through validators (`to: v2`, `mtls: strict`, `retries: false`, ...), so that an editor
never flags a blueprint that meshgen accepts.
"""

from __future__ import annotations

from typing import Any

from meshgen.blueprint.config import Config
from meshgen.blueprint.model import IngressBlueprint, MeshBlueprint, NamespaceBlueprint, ServiceBlueprint
from meshgen.render.registry import MESHES

SCHEMA_ID = "https://meshgen.dev/schemas/blueprint-v1.json"

_STRING_OR_LIST = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
# Definition name -> extra accepted short forms.
_SHORT_FORMS: dict[str, list[dict[str, Any]]] = {
    "StringMatch": [{"type": "string"}],
    "MTLS": [{"enum": ["strict", "permissive", "disable"]}],
    "LoadBalancing": [{"enum": ["round-robin", "least-request", "random"]}],
    "RetryPolicy": [{"const": False}],
    "AccessLogs": [{"type": "boolean"}],
    "Metrics": [{"type": "boolean"}],
    "Monitor": [{"const": True}],
}


def _widen_fields(defs: dict[str, Any]) -> None:
    for route in (defs.get(name, {}).get("properties", {}) for name in ("Route", "IngressRoute")):
        if "to" not in route:
            continue
        route["to"] = {
            "description": "a version | {version: weight, ...} | {service: s, version?: v, port?: p} | a list of destinations",
            "anyOf": [
                {"type": "string"},
                {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100}},
                {"$ref": "#/$defs/Backend"},
                {"type": "array", "items": {"$ref": "#/$defs/Backend"}},
                {"type": "null"},
            ],
        }
    for name, fields in (("Match", ["method"]), ("AccessRule", ["from", "methods", "paths"]),
                         ("JWT", ["audiences"]), ("Ingress", ["hosts"])):
        props = defs.get(name, {}).get("properties", {})
        for f in fields:
            if f in props:
                props[f] = {"anyOf": [_STRING_OR_LIST, {"type": "null"}]}
    retry = defs.get("RetryPolicy", {}).get("properties", {})
    if "on" in retry:
        retry["on"] = {"anyOf": [{"type": "string"}, {"type": "integer"},
                                 {"type": "array", "items": {"type": ["string", "integer"]}}, {"type": "null"}]}
    claims = defs.get("AccessRule", {}).get("properties", {})
    if "jwtClaims" in claims:
        claims["jwtClaims"] = {"anyOf": [{"type": "object", "additionalProperties": _STRING_OR_LIST}, {"type": "null"}]}


def _widen_service(schema: dict[str, Any]) -> None:
    props = schema.get("properties", {})
    if "versions" in props:
        props["versions"] = {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                       {"type": "object", "additionalProperties": {
                                           "anyOf": [{"type": "object", "additionalProperties": {"type": "string"}},
                                                     {"type": "null"}]}}]}
    if "access" in props:
        props["access"] = {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/AccessRule"}},
                                     {"const": "deny-all"}, {"type": "null"}]}
    if "environments" in props:
        overlay = {k: v for k, v in props.items() if k not in ("kind", "service", "namespace", "environments")}
        props["environments"] = {"type": "object", "additionalProperties": {
            "anyOf": [{"type": "object", "properties": overlay, "additionalProperties": False}, {"type": "null"}]}}


def _mesh_names(schema: dict[str, Any]) -> None:
    """A blueprint's `mesh:` is any registered mesh: the model keeps it a string (loading checks it,
    as the registry sits above the model), the schema lists the names, as for meshgen.yaml."""
    mesh = schema.get("properties", {}).get("mesh")
    if mesh is not None and {"type": "string"} in mesh.get("anyOf", ()):
        mesh["anyOf"][mesh["anyOf"].index({"type": "string"})] = {"enum": list(MESHES), "type": "string"}


def _model_schema(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(mode="validation", by_alias=True)
    if model in (ServiceBlueprint, IngressBlueprint):
        _mesh_names(schema)
    defs = schema.get("$defs", {})
    for name, forms in _SHORT_FORMS.items():
        if name in defs:
            defs[name] = {"anyOf": [*forms, defs[name]]}
    if "LoadBalancing" in defs:
        # `algorithm` is internal; users write a mode name or {consistentHash: {...}}.
        defs["LoadBalancing"] = {"anyOf": [
            {"enum": ["round-robin", "least-request", "random"]},
            {"type": "object", "properties": {"consistentHash": {"$ref": "#/$defs/ConsistentHash"}},
             "required": ["consistentHash"], "additionalProperties": False},
        ]}
    _widen_fields(defs)
    return schema


def blueprint_schema(kind: str | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for one kind, or for any blueprint file."""
    if kind == "config":
        schema = _model_schema(Config)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        return schema
    parts = {"Service": ServiceBlueprint, "Namespace": NamespaceBlueprint, "Mesh": MeshBlueprint,
             "Ingress": IngressBlueprint}
    chosen = {kind: parts[kind]} if kind else parts
    defs: dict[str, Any] = {}
    variants = []
    for name, model in chosen.items():
        s = _model_schema(model)
        defs.update(s.pop("$defs", {}))
        if name == "Service":
            _widen_service(s)
        if name == "Ingress" and "hosts" in s.get("properties", {}):
            s["properties"]["hosts"] = {"anyOf": [_STRING_OR_LIST, {"type": "null"}]}
        s["additionalProperties"] = False
        defs[f"{name}Blueprint"] = s
        variants.append({"$ref": f"#/$defs/{name}Blueprint"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "meshgen blueprint v1",
        "anyOf": variants,
        "$defs": defs,
    }
