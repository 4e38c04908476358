"""What a set of rendered resources *means* for one service, whatever the mesh.

Both meshes are reduced to the same normalised shape so a test can render one fleet for
Istio and for Linkerd and assert equal meaning:

* `routes_*`: the route rules as each mesh will consider them (match, backend weights by
  version, timeout seconds, retry attempts / conditions / per-try timeout);
* `decide_*`: which of those rules a given request takes, using each mesh's own matching
  order (Istio: first match in VirtualService order; Linkerd: the most specific match,
  ties to the older/alphabetically first HTTPRoute and then the first rule, as in
  linkerd2-proxy `linkerd/http/route`);
* `allowed_*`: whether a principal may call (method, path), from AuthorizationPolicies
  (Istio) or Server + HTTPRoute + AuthorizationPolicy + authentications (Linkerd).

Comparing decisions on probe requests (`probe_requests`) is what makes the two shapes
comparable: Linkerd needs extra overlap matches to keep first-match-wins, so its rule list
differs from Istio's even when the meaning is the same.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshgen.blueprint.base import parse_duration
from meshgen.blueprint.model import ServiceBlueprint

Body = dict[str, Any]
APEX = "*"  # the service as a whole (no version)
STATUS_CONDITIONS = {"5xx": "5xx", "gateway-error": "gateway-error", "retriable-4xx": "409"}


@dataclass(frozen=True)
class Request:
    path: str = "/"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        return dict(self.headers).get(name)


@dataclass(frozen=True)
class Decision:
    backends: tuple[tuple[str, int], ...]  # (version | service | "*", weight), sorted
    timeout: float | None
    retries: tuple[Any, ...] | None  # (attempts, conditions, per-try seconds)


@dataclass
class Rule:
    """One match-holding rule in a mesh's own terms, already normalised."""

    match: dict[str, Any]  # {"path": (kind, value)|None, "method": str|None, "headers": {name: (kind, value)}}
    decision: Decision
    order: tuple[Any, ...] = field(default=())


# --- helpers ---------------------------------------------------------------------------------


def _seconds(text: str | None) -> float | None:
    return None if not text else parse_duration(text).seconds


def _conditions(items: Iterable[str]) -> tuple[str, ...]:
    out = set()
    for c in items:
        c = c.strip()
        if c.isdigit():
            out.add(c)
        elif c in STATUS_CONDITIONS:
            out.add(STATUS_CONDITIONS[c])
    return tuple(sorted(out))


def _version_of(name: str, service: str, versions: Sequence[str]) -> str:
    if name == service:
        return APEX
    for v in versions:
        if name == f"{service}-{v}":
            return v
    return name


def _backends(pairs: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    total: dict[str, int] = {}
    for k, w in pairs:
        total[k] = total.get(k, 0) + w
    live = {k: w for k, w in total.items() if w}
    s = sum(live.values()) or 1
    return tuple(sorted((k, round(100 * w / s)) for k, w in live.items()))


def _prefix_elements(prefix: str, path: str) -> bool:
    p = prefix.rstrip("/")
    if not p:
        return True
    rest = path.rstrip("/")
    return rest.startswith(p) and (rest[len(p):] == "" or rest[len(p):].startswith("/"))


# --- Linkerd -----------------------------------------------------------------------------------


def _l5d_annotations_decision(ann: dict[str, str], backends: tuple[tuple[str, int], ...]) -> Decision:
    retries = None
    limit = int(ann.get("retry.linkerd.io/limit", "0") or 0)
    if limit or "retry.linkerd.io/http" in ann:
        conds = _conditions((ann.get("retry.linkerd.io/http") or "").split(","))
        retries = (limit or 1, conds, _seconds(ann.get("retry.linkerd.io/timeout")))
    return Decision(backends, _seconds(ann.get("timeout.linkerd.io/request")), retries)


def routes_linkerd(resources: Sequence[Body], service: str, port: int, versions: Sequence[str] = ()) -> list[Rule]:
    """Gateway API HTTPRoutes with the Service as parent on `port`, in Linkerd's tie order; timeout
    and retries from Linkerd's annotations on the HTTPRoute."""
    return _service_http_routes(resources, service, port, versions,
                                lambda route, rule, backends: _l5d_annotations_decision(
                                    route["metadata"].get("annotations") or {}, backends))


def routes_gateway(resources: Sequence[Body], service: str, port: int, versions: Sequence[str] = ()) -> list[Rule]:
    """The same HTTPRoutes as Istio's waypoint reads them (ambient): the timeout is the rule's
    `timeouts.request`; retries are not said (None: the mesh default applies)."""
    return _service_http_routes(resources, service, port, versions,
                                lambda route, rule, backends: Decision(
                                    backends, _seconds((rule.get("timeouts") or {}).get("request")), None))


def _service_http_routes(resources: Sequence[Body], service: str, port: int, versions: Sequence[str],
                         decision_of: Any) -> list[Rule]:
    out = []
    routes = [
        r for r in resources
        if r["kind"] == "HTTPRoute" and r["apiVersion"].startswith("gateway.networking.k8s.io/")
        and any(p.get("kind") == "Service" and p.get("name") == service and p.get("port") in (None, port)
                for p in r["spec"].get("parentRefs", []))
    ]
    routes.sort(key=lambda r: (r["metadata"].get("namespace", ""), r["metadata"]["name"]))
    for ri, route in enumerate(routes):
        for ki, rule in enumerate(route["spec"].get("rules", [])):
            refs = rule.get("backendRefs") or [{"name": service}]
            backends = _backends((_version_of(b["name"], service, versions), b.get("weight", 1)) for b in refs)
            decision = decision_of(route, rule, backends)
            for mi, m in enumerate(rule.get("matches") or [{}]):
                path = m.get("path") or {"type": "PathPrefix", "value": "/"}
                out.append(Rule(
                    match={
                        "path": ({"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}[path.get("type", "PathPrefix")],
                                 path.get("value", "/")),
                        "method": m.get("method"),
                        "headers": {h["name"]: ("exact" if h.get("type", "Exact") == "Exact" else "regex", h["value"])
                                    for h in m.get("headers", [])},
                    },
                    decision=decision,
                    order=(ri, ki, mi),
                ))
    return out


def _l5d_score(match: dict[str, Any], req: Request) -> tuple[int, bool, int] | None:
    if match["method"] and match["method"] != req.method:
        return None
    kind, value = match["path"]
    if kind == "exact":
        if req.path != value:
            return None
        plen = len(value)
    elif kind == "prefix":
        if not _prefix_elements(value, req.path):
            return None
        plen = 1 if value == "/" else len(value.rstrip("/"))
    else:
        if re.fullmatch(value, req.path) is None:
            return None
        plen = len(req.path)
    for name, (hk, hv) in match["headers"].items():
        got = req.header(name)
        if got is None or (hk == "exact" and got != hv) or (hk == "regex" and re.fullmatch(hv, got) is None):
            return None
    return (plen, bool(match["method"]), len(match["headers"]))


def decide_linkerd(rules: Sequence[Rule], req: Request) -> Decision | None:
    """Linkerd: the highest score wins; on a tie the first (oldest route, first rule)."""
    best: tuple[tuple[int, bool, int], Rule] | None = None
    for rule in sorted(rules, key=lambda r: r.order):
        score = _l5d_score(rule.match, req)
        if score is not None and (best is None or score > best[0]):
            best = (score, rule)
    return best[1].decision if best else None


def decide_gateway(rules: Sequence[Rule], req: Request) -> Decision | None:
    """Gateway API's HTTPRoute precedence (Istio's waypoints and gateways): an exact path first,
    then the longest prefix, a method, the most header matches; ties to the older route, then
    the first rule (regex precedence is implementation-specific and not probed here)."""
    best: tuple[tuple[bool, int, bool, int], Rule] | None = None
    for rule in sorted(rules, key=lambda r: r.order):
        score = _l5d_score(rule.match, req)
        if score is None:
            continue
        ranked = (rule.match["path"][0] == "exact", *score)
        if best is None or ranked > best[0]:
            best = (ranked, rule)
    return best[1].decision if best else None


def allowed_linkerd(resources: Sequence[Body], service_labels: dict[str, str], port: int,
                    principal: str | None, method: str, path: str) -> bool:
    """Whether Linkerd's inbound policy lets `principal` (None = plaintext) call (method, path)."""
    servers = [r for r in resources if r["kind"] == "Server"
               and set(r["spec"].get("podSelector", {}).get("matchLabels", {}).items()) <= set(service_labels.items())
               and r["spec"]["port"] == port]
    if not servers:
        return True
    server = servers[0]
    sname = server["metadata"]["name"]
    by_name = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    inbound = [r for r in resources if r["kind"] == "HTTPRoute" and r["apiVersion"].startswith("policy.linkerd.io/")
               and any(p.get("kind") == "Server" and p["name"] == sname for p in r["spec"]["parentRefs"])]
    target = ("Server", sname)
    if inbound:
        rules = []
        for ri, route in enumerate(sorted(inbound, key=lambda r: r["metadata"]["name"])):
            for ki, rule in enumerate(route["spec"].get("rules", [])):
                for mi, m in enumerate(rule.get("matches") or [{}]):
                    p = m.get("path") or {"type": "PathPrefix", "value": "/"}
                    rules.append(Rule(
                        match={"path": ({"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}[p["type"]], p["value"]),
                               "method": m.get("method"), "headers": {}},
                        decision=Decision(((route["metadata"]["name"], 100),), None, None), order=(ri, ki, mi)))
        d = decide_linkerd(rules, Request(path=path, method=method))
        if d is None:
            return False
        target = ("HTTPRoute", d.backends[0][0])
    policies = [r for r in resources if r["kind"] == "AuthorizationPolicy"
                and (r["spec"]["targetRef"]["kind"], r["spec"]["targetRef"]["name"]) == target]
    for pol in policies:
        if all(_authn_holds(by_name.get((ref["kind"], ref["name"])), principal)
               for ref in pol["spec"]["requiredAuthenticationRefs"]):
            return True
    default = server["spec"].get("accessPolicy", "deny")
    if default == "all-unauthenticated":
        return True
    if default == "all-authenticated":
        return principal is not None
    return False


def _authn_holds(authn: Body | None, principal: str | None) -> bool:
    if authn is None:
        return False
    if authn["kind"] == "NetworkAuthentication":
        return True
    if principal is None:
        return False
    ident = principal_to_identity(principal)
    for pattern in authn["spec"].get("identities", []):
        if pattern == "*" or pattern == ident or (pattern.startswith("*.") and ident.endswith(pattern[1:])):
            return True
    return False


def principal_to_identity(principal: str) -> str:
    td, _, ns, _, sa = principal.split("/")
    return f"{sa}.{ns}.serviceaccount.identity.linkerd.{td}"


# --- Istio ---------------------------------------------------------------------------------------


def _istio_string(m: dict[str, str], value: str | None) -> bool:
    if value is None:
        return False
    if "exact" in m:
        return value == m["exact"]
    if "prefix" in m:
        return value.startswith(m["prefix"])
    if "regex" in m:
        return re.fullmatch(m["regex"], value) is not None
    return True


def routes_istio(resources: Sequence[Body], service: str, versions: Sequence[str] = ()) -> list[Rule]:
    """VirtualService http routes for the service, in order (Istio: first match wins)."""
    out = []
    vss = [r for r in resources if r["kind"] == "VirtualService"
           and any(h.split(".")[0] == service for h in r["spec"].get("hosts", []))
           and not r["spec"].get("gateways")]
    for vi, vs in enumerate(vss):
        for hi, http in enumerate(vs["spec"].get("http", [])):
            pairs = []
            for dest in http.get("route", []):
                d = dest["destination"]
                host = d["host"].split(".")[0]
                key = d.get("subset") or APEX if host == service else (f"{host}-{d['subset']}" if d.get("subset") else host)
                pairs.append((key, dest.get("weight", 100)))
            r = http.get("retries")
            retries = None
            if r and r.get("attempts", 0):
                retries = (r["attempts"], _conditions((r.get("retryOn") or "").split(",")), _seconds(r.get("perTryTimeout")))
            decision = Decision(_backends(pairs), _seconds(http.get("timeout")), retries)
            for mi, m in enumerate(http.get("match") or [{}]):
                out.append(Rule(match=m, decision=decision, order=(vi, hi, mi)))
    return out


def decide_istio(rules: Sequence[Rule], req: Request) -> Decision | None:
    for rule in sorted(rules, key=lambda r: r.order):
        m = rule.match
        if "uri" in m and not _istio_string(m["uri"], req.path):
            continue
        if "method" in m and not _istio_string(m["method"], req.method):
            continue
        if any(not _istio_string(hm, req.header(name)) for name, hm in (m.get("headers") or {}).items()):
            continue
        return rule.decision
    return None


def allowed_istio(resources: Sequence[Body], principal: str | None, method: str, path: str) -> bool:
    policies = [r for r in resources if r["kind"] == "AuthorizationPolicy" and r["apiVersion"].startswith("security.istio.io/")]
    if not policies:
        return True
    for pol in policies:
        spec = pol.get("spec") or {}
        if spec.get("action", "ALLOW") != "ALLOW":
            continue
        for rule in spec.get("rules") or []:
            if _istio_rule(rule, principal, method, path):
                return True
    return False


def _istio_rule(rule: dict[str, Any], principal: str | None, method: str, path: str) -> bool:
    froms = rule.get("from") or []
    if froms:
        ok = False
        for f in froms:
            src = f.get("source", {})
            if "requestPrincipals" in src or "notPrincipals" in src:
                continue
            ps = src.get("principals")
            if ps is None or (principal is not None and any(_istio_glob(p, principal) for p in ps)):
                ok = True
        if not ok:
            return False
    tos = rule.get("to") or []
    if tos:
        ok = False
        for t in tos:
            op = t.get("operation", {})
            if op.get("methods") and method not in op["methods"]:
                continue
            if op.get("paths") and not any(_istio_glob(p, path) for p in op["paths"]):
                continue
            ok = True
        if not ok:
            return False
    return not rule.get("when")


def _istio_glob(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


# --- probes and comparison ---------------------------------------------------------------------


def probe_requests(svc: ServiceBlueprint, extra_methods: Sequence[str] = ("GET", "POST", "DELETE")) -> list[Request]:
    """Requests that hit every route, every overlap of routes and none of them."""
    paths = {"/", "/zz-unmatched"}
    header_values: dict[str, set[str]] = {}
    methods = set(extra_methods)
    for r in svc.routes:
        if r.match is None:
            continue
        if r.match.path is not None and r.match.path.kind != "regex":
            v = r.match.path.value
            paths.update({v, v.rstrip("/") + "/deeper", v + "x"})
        for name, sm in r.match.headers.items():
            if sm.kind == "exact":
                header_values.setdefault(name, set()).add(sm.value)
            elif sm.kind == "prefix":
                header_values.setdefault(name, set()).add(sm.value + "z")
        methods.update(r.match.method or ())
    options = [[None, *sorted(vals)] for _, vals in sorted(header_values.items())]
    names = sorted(header_values)
    out = []
    for combo in itertools.product(*options):
        headers = tuple((n, v) for n, v in zip(names, combo) if v is not None)
        for p in sorted(paths):
            for m in sorted(methods):
                out.append(Request(path=p, method=m, headers=headers))
    return out


def routing_table(decide: Any, rules: Sequence[Rule], probes: Iterable[Request]) -> dict[Request, Decision | None]:
    return {req: decide(rules, req) for req in probes}


def blueprint_principals(svc: ServiceBlueprint, trust_domain: str = "cluster.local") -> list[str]:
    out = {f"{trust_domain}/ns/{svc.namespace}/sa/zz-stranger"}
    for rule in svc.access or ():
        for p in rule.from_ or ():
            parts = p.split("/")
            if len(parts) == 1:
                out.add(f"{trust_domain}/ns/{svc.namespace}/sa/{p}")
            elif len(parts) == 2:
                out.add(f"{trust_domain}/ns/{parts[0]}/sa/{parts[1]}")
            else:
                out.add(p)
    return sorted(out)


def access_probes(svc: ServiceBlueprint) -> list[tuple[str, str]]:
    paths = {"/", "/zz-unmatched"}
    methods = {"GET", "POST", "DELETE"}
    for rule in svc.access or ():
        for p in rule.paths or ():
            base = p.rstrip("*") if p.endswith("*") else p
            if p.startswith("*"):
                paths.add("/x" + p[1:])
            else:
                paths.update({base or "/", (base.rstrip("/") or "") + "/deeper"})
        methods.update(rule.methods or ())
    return [(m, p) for m in sorted(methods) for p in sorted(paths)]
