"""Gateway API HTTPRoutes that keep the blueprint's first-match meaning, for any mesh.

Blueprint routes are first-match-wins. Gateway API implementations (Linkerd, Istio's
waypoints and gateways, any GAMMA mesh) pick a request's rule by *most specific match*
instead: exact path, then the longest prefix, then a method, then the most header matches,
then the oldest HTTPRoute (creation time, then name) and the first rule on a tie. So
`route_table` adds the overlap of every set of routes as an extra, more specific match that
goes where the *first* of them goes: the most specific emitted match a request satisfies is
then always the overlap of every route it satisfies, which the blueprint sends to the first
of those routes. Where an overlap cannot be written as one match, or two HTTPRoutes may tie,
the table says so in `notes` (rendered as the meshgen.dev/precedence annotation).

Mesh-specific parts (Linkerd's retry/timeout annotations, Istio's rule timeouts) are given
by the caller of `service_http_routes`: this module knows Gateway API only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from meshgen.blueprint.model import AccessRule, Backend, Match, ServiceBlueprint
from meshgen.names import dns_name
from meshgen.render.base import RenderContext, RenderError, Resource, metadata, resource
from meshgen.render.routing import EffectiveRoute

GATEWAY_GROUP = "gateway.networking.k8s.io"
ROUTABLE = ("http", "http2", "grpc")  # port protocols an HTTPRoute can route
PRECEDENCE_ANNOTATION = "meshgen.dev/precedence"
MAX_MATCHES = 8  # Gateway API: matches per rule
MAX_RULES = 16  # Gateway API: rules per HTTPRoute


def escape_regex(text: str) -> str:
    """Escape regex metacharacters the way both RE2 and Rust's regex accept."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in text)


def version_service(service: str, version: str) -> str:
    """The Service meshgen renders for one version: HTTPRoute backends are Services, not subsets."""
    return dns_name(service, version)


# --- match algebra -------------------------------------------------------------------------


# --- match algebra -------------------------------------------------------------------------


class Incomputable(Exception):
    """The overlap of two matches cannot be written as one Gateway API match."""


class Atom(NamedTuple):
    """One Gateway API HTTPRouteMatch: at most one path, one method, header matches.

    path is (kind, value) with kind exact | prefix | regex; a `/` prefix is None. headers
    are (name, kind, value) sorted by name, kind exact | regex. A tuple: the match algebra
    hashes and compares thousands of these per fleet.
    """

    path: tuple[str, str] | None = None
    method: str | None = None
    headers: tuple[tuple[str, str, str], ...] = ()

    def to_gateway(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.path is None:
            out["path"] = {"type": "PathPrefix", "value": "/"}
        else:
            kind, value = self.path
            out["path"] = {"type": {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}[kind],
                           "value": value}
        if self.headers:
            out["headers"] = [
                {"name": n, "type": "Exact" if k == "exact" else "RegularExpression", "value": v}
                for n, k, v in self.headers
            ]
        if self.method:
            out["method"] = self.method
        return out

    def sort_key(self) -> tuple[Any, ...]:
        return (self.path or ("", ""), self.method or "", self.headers)

    def describe(self) -> str:
        bits = []
        if self.path:
            bits.append(f"path {self.path[0]} {self.path[1]}")
        if self.method:
            bits.append(f"method {self.method}")
        bits.extend(f"header {n} {k} {v}" for n, k, v in self.headers)
        return ", ".join(bits) or "any request"


ANY_REQUEST = Atom()


def _prefix_trim(p: str) -> str:
    return p.rstrip("/")


def prefix_holds(prefix: str, path: str) -> bool:
    """Linkerd/Gateway PathPrefix: whole path elements, trailing slashes ignored."""
    p = _prefix_trim(prefix)
    if not p:
        return True
    rest = path.rstrip("/")
    if not rest.startswith(p):
        return False
    rest = rest[len(p):]
    return rest == "" or rest.startswith("/")


def _full(regex: str, value: str) -> bool:
    try:
        return re.fullmatch(regex, value) is not None
    except re.error:
        raise Incomputable(f"regex {regex!r}") from None


def _conj_path(a: tuple[str, str] | None, b: tuple[str, str] | None) -> tuple[str, str] | None | bool:
    """The overlap of two paths; False when nothing can satisfy both."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    (ka, va), (kb, vb) = sorted((a, b), key=lambda x: ("exact", "prefix", "regex").index(x[0]))
    if ka == "exact":
        if kb == "exact":
            return False
        holds = prefix_holds(vb, va) if kb == "prefix" else _full(vb, va)
        return (ka, va) if holds else False
    if ka == "prefix" and kb == "prefix":
        pa, pb = _prefix_trim(va), _prefix_trim(vb)
        if prefix_holds(pa or "/", pb or "/"):
            return (kb, vb)
        if prefix_holds(pb or "/", pa or "/"):
            return (ka, va)
        return False
    raise Incomputable(f"path {ka} {va!r} and path {kb} {vb!r}")


def conj(a: Atom, b: Atom) -> Atom | None:
    """A match that holds exactly when both hold; None when no request satisfies both."""
    if a == b or b == ANY_REQUEST:
        return a
    if a == ANY_REQUEST:
        return b
    if a.method and b.method and a.method != b.method:
        return None
    path = _conj_path(a.path, b.path)
    if path is False:
        return None
    headers: dict[str, tuple[str, str]] = {n: (k, v) for n, k, v in a.headers}
    for n, k, v in b.headers:
        if n not in headers or headers[n] == (k, v):
            headers[n] = (k, v)
            continue
        (k0, v0) = headers[n]
        if k0 == "exact" and k == "exact":
            return None
        if k0 == "regex" and k == "regex":
            raise Incomputable(f"header {n} regex {v0!r} and regex {v!r}")
        exact, regex = (v0, v) if k0 == "exact" else (v, v0)
        if not _full(regex, exact):
            return None
        headers[n] = ("exact", exact)
    return Atom(
        path=path if path is not True else None,
        method=a.method or b.method,
        headers=tuple(sorted((n, k, v) for n, (k, v) in headers.items())),
    )


def implies(a: Atom, b: Atom) -> bool:
    """Every request that satisfies a satisfies b (False when it cannot be decided)."""
    try:
        return conj(a, b) == a
    except Incomputable:
        return False


def _may_tie(x: Atom, y: Atom) -> bool:
    """x implies y; could Linkerd score them equal for some request?"""
    if bool(x.method) != bool(y.method) or len(x.headers) != len(y.headers):
        return False
    if x.path == y.path:
        return True
    xk = x.path[0] if x.path else None
    if xk == "regex" or (y.path and y.path[0] == "regex"):
        return True
    if xk == "exact":
        target = y.path[1] if y.path else "/"
        return _prefix_trim(x.path[1]) == _prefix_trim(target)  # type: ignore[index]
    return False


def route_atoms(match: Match | None) -> list[Atom]:
    """A blueprint match as alternatives (one per method)."""
    if match is None:
        return [ANY_REQUEST]
    path: tuple[str, str] | None = None
    if match.path is not None:
        kind, value = match.path.kind, match.path.value
        path = None if kind == "prefix" and value == "/" else (kind, value)
    headers = []
    for name in sorted(match.headers):
        sm = match.headers[name]
        if sm.kind == "exact":
            headers.append((name, "exact", sm.value))
        elif sm.kind == "prefix":
            headers.append((name, "regex", escape_regex(sm.value) + ".*"))
        else:
            headers.append((name, "regex", sm.value))
    methods: list[str | None] = list(match.method) if match.method else [None]
    return [Atom(path=path, method=m, headers=tuple(headers)) for m in methods]


def access_atoms(rule: AccessRule) -> list[Atom]:
    paths: list[tuple[str, str] | None] = []
    for p in rule.paths or ["*"]:
        if p == "*":
            paths.append(None)
        elif p.endswith("*"):
            prefix = p[:-1]
            paths.append(None if prefix in ("", "/") else ("prefix", prefix))
        elif p.startswith("*"):
            paths.append(("regex", ".*" + escape_regex(p[1:])))
        else:
            paths.append(("exact", p))
    methods: list[str | None] = list(rule.methods) if rule.methods else [None]
    return [Atom(path=p, method=m) for p in paths for m in methods]


MAX_OVERLAPS = 512


@dataclass
class Closure:
    """Every satisfiable overlap of the given alternatives, with who it belongs to."""

    first: dict[Atom, int] = field(default_factory=dict)  # atom -> lowest index among its parts
    incomputable: list[tuple[int, int, str]] = field(default_factory=list)


def closure(groups: Sequence[Sequence[Atom]]) -> Closure:
    out = Closure()
    for i, atoms in enumerate(groups):
        new: dict[Atom, int] = {}
        existing = list(out.first.items())
        for atom in atoms:
            new[atom] = min(new.get(atom, i), i)
            for other, idx in existing:
                try:
                    c = conj(other, atom)
                except Incomputable as exc:
                    out.incomputable.append((idx, i, str(exc)))
                    continue
                if c is not None:
                    new[c] = min(new.get(c, idx), idx)
        for atom, idx in new.items():
            out.first[atom] = min(out.first.get(atom, idx), idx)
        if len(out.first) > MAX_OVERLAPS:
            raise RenderError(
                ("routes",),
                f"routes overlap in more than {MAX_OVERLAPS} ways; Gateway API picks the most specific match, so "
                "every overlap must be spelled out to keep first-match-wins; simplify the matches",
            )
    return out


# --- route table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRule:
    atoms: tuple[Atom, ...]
    route: EffectiveRoute


@dataclass
class RouteTable:
    routes: list[EffectiveRoute]
    rules: list[TableRule]  # in precedence order (blueprint order of the owning route)
    notes: list[str]  # where first-match-wins cannot be kept exactly


def route_table(routes: list[EffectiveRoute], policies: Sequence[Any] | None = None) -> RouteTable:
    """Gateway API rules that keep the blueprint's first-match-wins under Linkerd's precedence.

    policies[i] says which HTTPRoute routes[i] belongs in (routes with equal policies can
    share one); ties between emitted matches of different HTTPRoutes are reported in `notes`.
    """
    groups = [route_atoms(r.match) for r in routes]
    cl = closure(groups)
    notes = [
        f"the overlap of routes {routes[i].name!r} and {routes[j].name!r} ({why}) cannot be written as one "
        f"match, so requests matching both may take {routes[j].name!r}"
        for i, j, why in sorted(set(cl.incomputable))
    ]
    by_route: dict[int, list[Atom]] = {}
    for atom, idx in cl.first.items():
        by_route.setdefault(idx, []).append(atom)
    for atoms in by_route.values():
        atoms.sort(key=Atom.sort_key)
    rules = [TableRule(tuple(by_route[i]), routes[i]) for i in sorted(by_route)]
    if policies is not None and len(set(policies)) > 1:
        flat = [(a, i) for i in sorted(by_route) for a in by_route[i]]
        for x, i in flat:
            for y, j in flat:
                if i < j and policies[i] != policies[j] and x != y and implies(x, y) and _may_tie(x, y):
                    notes.append(
                        f"route {routes[i].name!r} ({x.describe()}) and route {routes[j].name!r} ({y.describe()}) "
                        "are in different HTTPRoutes and Linkerd may score them equal; the older HTTPRoute wins"
                    )
    return RouteTable(routes, rules, notes)


# --- the renderer --------------------------------------------------------------------------


# --- building HTTPRoutes -----------------------------------------------------------------------


def namespace_of(b: Backend, namespace: str) -> str:
    """The namespace of a destination service (`name`, `name.ns` or an FQDN)."""
    rest = (b.service or "").partition(".")[2]
    return rest.split(".")[0] if rest else namespace


def url_rewrite(route: EffectiveRoute, atom: Atom) -> dict[str, Any]:
    """The URLRewrite of one match of a route with `rewrite`, as the blueprint means it.

    `rewrite` replaces the route's matched prefix. A match meshgen added for an overlap (a longer
    prefix, or an exact path, under the route's prefix) keeps the part past the route's prefix,
    so `/v2/admin/x` under `prefix: /v2/, rewrite: /` still becomes `/admin/x`. URLRewrite with
    ReplacePrefixMatch allows exactly one PathPrefix match per rule: give each match its own rule.
    """
    assert route.rewrite is not None
    own = route.match.path if route.match is not None else None
    if own is not None and own.kind == "regex":
        raise RenderError((*route.field_path, "rewrite"), "a regex path cannot be rewritten with Gateway API; "
                          "match a prefix or an exact path instead")
    if own is not None and own.kind == "exact":
        return {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": route.rewrite}}}
    base = _prefix_trim(own.value) if own is not None else ""
    kind, value = atom.path if atom.path is not None else ("prefix", "/")
    rest = _prefix_trim(value)[len(base):] if kind == "prefix" else value[len(base):]
    target = (route.rewrite.rstrip("/") + rest) if rest else route.rewrite
    target = target or "/"
    if kind == "exact":
        return {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": target}}}
    return {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": target}}}


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i: i + size] for i in range(0, len(items), size)] or [items]


def chunk_rules(rules: Sequence[TableRule]) -> list[list[tuple[TableRule, Sequence[Atom]]]]:
    """Gateway API limits: 8 matches per rule, 16 rules per HTTPRoute."""
    flat = [(rule, part) for rule in rules for part in chunks(rule.atoms, MAX_MATCHES)]
    return [list(c) for c in chunks(flat, MAX_RULES)]


def backend_refs(svc: ServiceBlueprint, backends: Iterable[Backend], port: int) -> list[dict[str, Any]]:
    """backendRefs of a rule: a version is its `<service>-<version>` Service; none = the service."""
    refs = []
    for b in backends:
        ref: dict[str, Any] = {"group": "", "kind": "Service"}
        if b.service is not None:
            name, _, rest = b.service.partition(".")
            target = version_service(name, b.version) if b.version else name
            ns = rest.split(".")[0] if rest else None
            ref["name"] = target
            if ns and ns != svc.namespace:
                ref["namespace"] = ns
            ref["port"] = b.port or port
        else:
            ref["name"] = version_service(svc.service, b.version or "")
            ref["port"] = b.port or port
        ref["weight"] = b.weight
        refs.append(ref)
    if not refs:
        refs.append({"group": "", "kind": "Service", "name": svc.service, "port": port})
    return refs


def version_services(svc: ServiceBlueprint, ctx: RenderContext) -> list[Resource]:
    """One Service `<service>-<version>` per version (workload + version labels, the service's ports)."""
    out = []
    for version, labels in sorted(svc.versions.items()):
        ports = []
        for p in svc.ports:
            port: dict[str, Any] = {"name": p.name, "port": p.port, "protocol": "TCP",
                                    "targetPort": p.target_port or p.port}
            ports.append(port)
        out.append(resource(
            "v1", "Service",
            metadata(version_service(svc.service, version), svc.namespace, ctx, service=svc.service,
                     labels={"meshgen.dev/version": version}),
            spec={"selector": {**svc.workload_labels, **labels}, "ports": ports},
        ))
    return out


K = TypeVar("K", bound=Hashable)  # routes with equal keys share one HTTPRoute (e.g. Linkerd's policy annotations)


def service_http_routes(
    svc: ServiceBlueprint,
    routes: list[EffectiveRoute],
    ctx: RenderContext,
    *,
    api_version: str,
    keys: Sequence[K],
    annotations_of: Callable[[K], dict[str, str]],
    backends_of: Callable[[EffectiveRoute], Iterable[Backend]],
    rule_extra: Callable[[EffectiveRoute, Atom], dict[str, Any]] | None = None,
) -> list[Resource]:
    """HTTPRoutes with the Service as parentRef (GAMMA), one set per routable port.

    keys[i] says which HTTPRoute routes[i] goes in: routes with equal keys share one, named
    `<service>[-<port>]-<first route label>` (and `-2`, `-3`, ... past 16 rules). `rule_extra`
    adds per-rule fields (timeouts, filters); a rule with a URLRewrite gets one rule per match.
    """
    ports = [p for p in svc.ports if p.protocol in ROUTABLE]
    if not ports:
        return []
    table = route_table(routes, keys)
    key_of = {id(r): key for r, key in zip(routes, keys)}
    groups: dict[K, list[TableRule]] = {}
    for rule in table.rules:
        groups.setdefault(key_of[id(rule.route)], []).append(rule)
    out = []
    for port in ports:
        for key, rules in groups.items():
            base = dns_name(svc.service, port.name if len(ports) > 1 else "", rules[0].route.label)
            for n, chunk in enumerate(_split_rules(rules, rule_extra)):
                name = base if n == 0 else dns_name(base, str(n + 1))
                annotations = annotations_of(key)
                if table.notes:
                    annotations[PRECEDENCE_ANNOTATION] = "; ".join(table.notes)
                spec = {
                    "parentRefs": [{"group": "", "kind": "Service", "name": svc.service, "port": port.port}],
                    "rules": [
                        {"matches": [a.to_gateway() for a in atoms],
                         **({} if rule_extra is None else rule_extra(rule.route, atoms[0])),
                         "backendRefs": backend_refs(svc, backends_of(rule.route), port.port)}
                        for rule, atoms in chunk
                    ],
                }
                out.append(resource(api_version, "HTTPRoute",
                                    metadata(name, svc.namespace, ctx, service=svc.service, annotations=annotations),
                                    spec=spec))
    return out


def _split_rules(rules: Sequence[TableRule], rule_extra: Callable[[EffectiveRoute, Atom], dict[str, Any]] | None,
                 ) -> list[list[tuple[TableRule, Sequence[Atom]]]]:
    """Rules for the HTTPRoutes: 8 matches per rule (one per rule where a route rewrites), 16 rules each."""
    if rule_extra is None or not any(r.route.rewrite is not None for r in rules):
        return chunk_rules(rules)
    flat: list[tuple[TableRule, Sequence[Atom]]] = []
    for rule in rules:
        size = 1 if rule.route.rewrite is not None else MAX_MATCHES
        flat.extend((rule, part) for part in chunks(rule.atoms, size))
    return [list(c) for c in chunks(flat, MAX_RULES)]
