"""A per-resource diff a reviewer can read, between two sets of rendered manifests.

    VirtualService production/api-service: route default: weight v2 10 → 25
    AuthorizationPolicy production/api-service: access: + production/mobile-app GET,POST /api/v1/*
    + DestinationRule production/api-service

Resources are matched by kind, namespace and name (not by file), lists of named things
by name, weighted destinations by their subset or host, and authorization rules as a set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

Identity = tuple[str, str, str]  # kind, namespace, name
_META_IGNORED = ("annotations",)


def read_tree(folder: Path, env_paths: Iterable[str] | None = None) -> dict[str, bytes]:
    """Every *.yaml file under `folder` (only under the given environment folders, if any)."""
    files: dict[str, bytes] = {}
    if not folder.is_dir():
        return files
    tops = [folder / p for p in env_paths] if env_paths is not None else [folder]
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith((".yaml", ".yml")):
                    p = Path(dirpath) / name
                    files[p.relative_to(folder).as_posix()] = p.read_bytes()
    return files


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: ~10x the pure-Python one


def _resources(files: Mapping[str, bytes]) -> dict[Identity, dict[str, Any]]:
    out: dict[Identity, dict[str, Any]] = {}
    for _, data in sorted(files.items()):
        for doc in yaml.load_all(data, Loader=_LOADER):
            if isinstance(doc, dict) and "kind" in doc:
                meta = doc.get("metadata") or {}
                out[(str(doc["kind"]), str(meta.get("namespace", "")), str(meta.get("name", "")))] = doc
    return out


def semantic_diff(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> list[str]:
    """Reviewer lines for everything that differs between two {path: YAML} maps."""
    # A file with the same bytes on both sides holds the same resources on both sides:
    # only the others need parsing (a re-render of a large fleet changes a handful).
    same = {path for path, data in old.items() if new.get(path) == data}
    before = _resources({p: d for p, d in old.items() if p not in same})
    after = _resources({p: d for p, d in new.items() if p not in same})
    lines: list[str] = []
    for ident in sorted(set(before) | set(after)):
        label = _label(ident)
        if ident not in before:
            lines.append(f"+ {label}")
            lines.extend(f"    {line}" for line in _summary(after[ident]))
        elif ident not in after:
            lines.append(f"- {label}")
        else:
            for change in _changes(_view(before[ident]), _view(after[ident]), ()):
                lines.append(f"{label}: {change}")
    return lines


def env_diff(old: Mapping[str, bytes], new: Mapping[str, bytes], env_paths: Mapping[str, str]) -> list[str]:
    """semantic_diff per environment (`env_paths`: name -> folder), each line starting `<env>: `.

    Resources are keyed by environment too, so one environment's change never hides another's.
    """
    lines: list[str] = []
    for env, path in env_paths.items():
        prefix = f"{path.strip('/')}/" if path.strip("/") not in ("", ".") else ""

        def mine(files: Mapping[str, bytes], prefix: str = prefix) -> dict[str, bytes]:
            return {p: d for p, d in files.items() if p.startswith(prefix)}

        lines.extend(f"{env}: {line}" for line in semantic_diff(mine(old), mine(new)))
    return lines


def _label(ident: Identity) -> str:
    kind, ns, name = ident
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


def _summary(doc: dict[str, Any]) -> list[str]:
    view = _view(doc)
    lines = []
    for kind in ("route", "rule"):
        for route_name, route in (view.get(kind) or {}).items():
            weights = ", ".join(f"{k} {v}" for k, v in (route.get("weight") or {}).items())
            match = _match_text(route.get("match") if kind == "route" else route.get("matches"))
            lines.append(f"{kind} {route_name}: " + (f"when {match} → " if match else "") + weights)
    for rule in view.get("access") or ():
        lines.append(f"access: {rule}")
    return lines


def _string_match(value: Any) -> str:
    """Istio StringMatch {exact|prefix|regex: v} or Gateway API {type, value} as `=v`, `^=v`, `~v`."""
    if isinstance(value, dict):
        if "type" in value or ("value" in value and len(value) <= 2):
            kind, text = str(value.get("type", "Exact")).lower(), value.get("value", "")
        else:
            kind, text = next(iter(value.items()), ("exact", ""))
        op = {"exact": "=", "prefix": "^=", "pathprefix": "^=", "regex": "~", "regularexpression": "~"}.get(
            str(kind).lower(), f" {kind} ")
        return f"{op}{text}"
    return f"={value}"


def _match_text(matches: Any) -> str:
    """A route's match conditions in one line: `uri ^=/api and header x-canary=true or method=GET`."""
    alternatives: list[str] = []
    for m in matches or ():
        if not isinstance(m, dict):
            continue
        parts: list[str] = []
        for key in ("uri", "path"):
            if key in m:
                parts.append(f"path {_string_match(m[key])}")
        if "method" in m:
            parts.append(f"method {_string_match(m['method'])}")
        headers = m.get("headers") or {}
        items = headers.items() if isinstance(headers, dict) else ((h.get("name"), h) for h in headers)
        parts += [f"header {name}{_string_match(v)}" for name, v in items]
        params = m.get("queryParams") or {}
        items = params.items() if isinstance(params, dict) else ((q.get("name"), q) for q in params)
        parts += [f"query {name}{_string_match(v)}" for name, v in items]
        if parts:
            alternatives.append(" and ".join(parts))
    return " or ".join(alternatives)


def _view(doc: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resource worth comparing, reshaped so changes read naturally."""
    kind = doc.get("kind")
    spec = doc.get("spec")
    meta = doc.get("metadata") or {}
    view: dict[str, Any] = {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items()}
    if labels:
        view["labels"] = labels
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != "meshgen.dev/blueprint"}
    if annotations:
        view["annotations"] = annotations
    if kind == "VirtualService" and isinstance(spec, dict):
        spec = dict(spec)
        routes = spec.pop("http", None) or []
        view["route"] = {r.get("name", f"#{i}"): _http_route(r) for i, r in enumerate(routes)}
        view["route order"] = [r.get("name", f"#{i}") for i, r in enumerate(routes)]
    elif kind == "AuthorizationPolicy" and isinstance(spec, dict):
        spec = dict(spec)
        view["access"] = sorted(_rule_text(r) for r in spec.pop("rules", None) or [])
    if kind in ("HTTPRoute",) and isinstance(spec, dict):
        spec = dict(spec)
        rules = spec.pop("rules", None) or []
        view["rule"] = {str(i): _gateway_rule(r) for i, r in enumerate(rules)}
    for key in ("data",):
        if key in doc:
            view[key] = doc[key]
    if spec is not None:
        view["spec"] = spec
    return view


def _http_route(route: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in route.items() if k not in ("name", "route")}
    out["weight"] = {_dest(d.get("destination") or {}): d.get("weight", 100) for d in route.get("route") or []}
    return out


def _gateway_rule(rule: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rule.items() if k != "backendRefs"}
    out["weight"] = {str(b.get("name")) + (f":{b['port']}" if "port" in b else ""): b.get("weight", 1)
                     for b in rule.get("backendRefs") or []}
    return out


def _dest(dest: dict[str, Any]) -> str:
    name = str(dest.get("subset") or dest.get("host", "?"))
    port = (dest.get("port") or {}).get("number")
    return f"{name}:{port}" if port else name


def _rule_text(rule: dict[str, Any]) -> str:
    who: list[str] = []
    for src in rule.get("from") or []:
        source = src.get("source") or {}
        who += [_principal(p) for p in source.get("principals") or []]
        who += [f"jwt:{p}" for p in source.get("requestPrincipals") or []]
        who += [f"ns:{p}" for p in source.get("namespaces") or []]
    methods: list[str] = []
    paths: list[str] = []
    for to in rule.get("to") or []:
        op = to.get("operation") or {}
        methods += op.get("methods") or []
        paths += op.get("paths") or []
    when = [f"{w.get('key')}={','.join(w.get('values') or [])}" for w in rule.get("when") or []]
    parts = [",".join(who) or "anyone", ",".join(methods), " ".join(paths), " ".join(when)]
    return " ".join(p for p in parts if p)


def _principal(principal: str) -> str:
    """`<trust domain>/ns/<ns>/sa/<sa>` as `<ns>/<sa>` (the blueprint's own `ns/sa` form), else as is."""
    if "/ns/" in principal and "/sa/" in principal:
        ns = principal.split("/ns/", 1)[1].split("/sa/", 1)[0]
        return f"{ns}/{principal.rsplit('/sa/', 1)[1]}"
    return principal


def _changes(a: Any, b: Any, path: tuple[str, ...]) -> list[str]:
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in list(a) + [k for k in b if k not in a]:
            sub = (*path, str(key))
            if key not in b:
                out.append(f"{_where(sub)}: removed (was {_short(a[key])})")
            elif key not in a:
                out.append(f"{_where(sub)}: added {_short(b[key])}")
            else:
                out.extend(_changes(a[key], b[key], sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and path and path[-1] == "access":
        gone = [f"- {r}" for r in a if r not in b]
        came = [f"+ {r}" for r in b if r not in a]
        return [f"access: {line}" for line in gone + came]
    return [f"{_where(path)} {_short(a)} → {_short(b)}"]


def _where(path: tuple[str, ...]) -> str:
    if not path:
        return "value"
    if path[0] == "route" and len(path) >= 2:
        rest = " ".join(path[2:])
        return f"route {path[1]}" + (f": {rest}" if rest else "")
    if path[0] == "rule" and len(path) >= 2:
        rest = " ".join(path[2:])
        return f"rule {path[1]}" + (f": {rest}" if rest else "")
    return ".".join(path)


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000_000).strip()
    else:
        text = str(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 120 else text[:117] + "..."
