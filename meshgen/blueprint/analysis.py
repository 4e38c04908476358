"""Checks across blueprints, and the file-only checks of `istioctl analyze` that apply to
what meshgen writes.

Per-blueprint checks (`check_instance`) look at one service; fleet checks (`check_fleet`)
look at the small Facts each service leaves behind, so they can run over cached files
without re-reading them.

| code    | istioctl meaning                                   | here                                   |
|---------|----------------------------------------------------|----------------------------------------|
| IST0101 | referenced resource (subset) not found             | a route names a version that is missing |
| IST0109 | conflicting hosts in several VirtualServices       | two services claim one host            |
| IST0130 | rule unreachable: an earlier match is identical     | route can never match                   |
| IST0131 | match ineffective: an earlier match is broader      | route can never match                   |
| IST0132 | VirtualService host not found in bound gateway      | ingress host missing from the gateway   |
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple

from meshgen.blueprint.loading import Instance, LoadedFile
from meshgen.blueprint.model import (
    HTTP_METHODS,
    NON_IDEMPOTENT_METHODS,
    IngressBlueprint,
    Match,
    ServiceBlueprint,
    StringMatch,
)
from meshgen.diagnostics import Diagnostic, format_path
from meshgen.names import rendered_gateway_name
from meshgen.render.registry import MESHES

FieldPath = tuple[str | int, ...]
Report = Callable[..., None]  # (field path, message, severity="error", code="")


class Facts(NamedTuple):
    """What fleet-wide checks need to know about one service in one environment.

    A plain tuple: thousands of these are kept in the render cache and loaded on every run.
    """

    env: str
    namespace: str
    service: str
    file: str
    versions: tuple[str, ...]
    # (line, col) of places fleet checks may point at, by field path text.
    positions: tuple[tuple[str, tuple[int, int]], ...] = ()
    # Destinations to other services: (field path, service host as written, version or "").
    destinations: tuple[tuple[str, str, str], ...] = ()
    ingress_hosts: tuple[str, ...] = ()
    ingress_gateway: str | None = None  # "ns/name" when bound, None when meshgen renders one
    rendered_gateway: str | None = None  # "ns/name" of the gateway meshgen renders for it
    kind: str = "Service"
    ports: tuple[int, ...] = ()  # a Service's declared ports
    mesh: str = ""
    # kind: Ingress: the port each destination names (0 = none), in the order of `destinations`.
    edge_ports: tuple[int, ...] = ()

    def position(self, path: str) -> tuple[int, int]:
        found = dict(self.positions)
        return found.get(path, found.get("", (1, 1)))


def facts_for(loaded: LoadedFile, inst: Instance) -> Facts:
    bp = inst.blueprint
    if isinstance(bp, IngressBlueprint):
        return _ingress_facts(loaded, inst, bp)
    if not isinstance(bp, ServiceBlueprint):
        ns = getattr(bp, "namespace", "") or ""
        return Facts(inst.env, ns, "", loaded.path, (), (("", loaded.locate(())),), kind=bp.kind)
    positions = {"": loaded.locate(("service",)), "ingress.hosts": loaded.locate(("ingress", "hosts"))}
    dests: list[tuple[str, str, str]] = []
    for i, route in enumerate(bp.routes):
        for j, backend in enumerate(route.to or ()):
            if backend.service is not None and backend.service != bp.service:
                path = format_path(("routes", i, "to"))
                positions[path] = loaded.locate(_in_overlay(inst, ("routes", i, "to")))
                dests.append((path, backend.service, backend.version or ""))
    gateway = None
    rendered = None
    hosts: tuple[str, ...] = ()
    if bp.ingress is not None:
        hosts = tuple(bp.ingress.hosts)
        if bp.ingress.gateway is not None:
            gateway = bp.ingress.gateway if "/" in bp.ingress.gateway else f"{bp.namespace}/{bp.ingress.gateway}"
            positions["ingress.gateway"] = loaded.locate(_in_overlay(inst, ("ingress", "gateway")))
        else:
            rendered = f"{bp.namespace}/{rendered_gateway_name(bp.service)}"
    return Facts(
        inst.env, bp.namespace, bp.service, loaded.path, tuple(bp.versions), tuple(positions.items()),
        tuple(dests), hosts, gateway, rendered, ports=tuple(p.port for p in bp.ports), mesh=inst.mesh,
    )


def _ingress_facts(loaded: LoadedFile, inst: Instance, bp: IngressBlueprint) -> Facts:
    positions = {"": loaded.locate(("name",)), "ingress.hosts": loaded.locate(("hosts",)),
                 "service": loaded.locate(("name",))}
    dests: list[tuple[str, str, str]] = []
    ports: list[int] = []
    for i, route in enumerate(bp.routes):
        for backend in route.to or ():
            path = format_path(("routes", i, "to"))
            positions[path] = loaded.locate(("routes", i, "to"))
            dests.append((path, backend.service or "", backend.version or ""))
            ports.append(backend.port or 0)
    gateway = rendered = None
    if bp.gateway is not None:
        gateway = bp.gateway if "/" in bp.gateway else f"{bp.namespace}/{bp.gateway}"
        positions["ingress.gateway"] = loaded.locate(("gateway",))
    else:
        rendered = f"{bp.namespace}/{bp.name}"
    return Facts(inst.env, bp.namespace, bp.name, loaded.path, (), tuple(positions.items()), tuple(dests),
                 tuple(bp.hosts), gateway, rendered, kind="Ingress", mesh=inst.mesh, edge_ports=tuple(ports))


def _in_overlay(inst: Instance, path: FieldPath) -> FieldPath:
    """Where a field of an environment's view of the blueprint is written in the file."""
    if path and path[0] in inst.overlay_keys:
        return ("environments", inst.env, *path)
    return path


# --- one service ---------------------------------------------------------------------------------


def check_instance(loaded: LoadedFile, inst: Instance) -> list[Diagnostic]:
    bp = inst.blueprint
    if isinstance(bp, IngressBlueprint):
        return _check_ingress(loaded, inst, bp)
    if not isinstance(bp, ServiceBlueprint):
        return []
    out: list[Diagnostic] = []

    def diag(path: FieldPath, message: str, severity: str = "error", code: str = "") -> None:
        real = _in_overlay(inst, path)
        env_note = f" (in environment {inst.env})" if real != path else ""
        out.append(loaded.diag(real, message + env_note, severity=severity, code=code))

    versions = set(bp.versions)
    for i, route in enumerate(bp.routes):
        for backend in route.to or ():
            if (backend.service is None or backend.service == bp.service) and (
                backend.version is not None and backend.version not in versions
            ):
                valid = ", ".join(bp.versions) or "none are declared; add `versions:`"
                diag(("routes", i, "to"), f"version {backend.version!r} is not declared in `versions` ({valid})",
                     code="IST0101")
            if backend.port is not None and backend.service is None and backend.port not in {p.port for p in bp.ports}:
                diag(("routes", i, "to"), f"port {backend.port} is not one of the service's ports "
                     f"({', '.join(str(p.port) for p in bp.ports)})")
    _check_reachability(bp, diag)
    _check_retries_idempotent(bp, diag)
    _check_canary(bp, diag)
    _check_mesh(inst, bp, diag)
    if "routes" in inst.overlay_keys:
        _check_overlay_keeps_routes(loaded, inst, bp, out)
    if bp.access:
        for i, rule in enumerate(bp.access):
            if rule.jwt_claims and bp.jwt is None:
                diag(("access", i, "jwtClaims"), "jwtClaims need request authentication: add `jwt:` "
                     "(issuer and jwksUri) to this blueprint")
    if bp.mtls is not None and bp.mtls.ports:
        known = {p.port for p in bp.ports} | {p.target_port for p in bp.ports if p.target_port}
        for port in bp.mtls.ports:
            if port not in known:
                diag(("mtls", "ports", port), f"port {port} is not one of the service's ports ({', '.join(map(str, sorted(known)))})")
    return out


def _check_overlay_keeps_routes(loaded: LoadedFile, inst: Instance, bp: ServiceBlueprint,
                                out: list[Diagnostic]) -> None:
    """An overlay replaces the whole `routes` list: a named base route it leaves out is gone in that
    environment, which is easy to miss (`routes: [{name: default, to: ...}]` drops every other route)."""
    base = loaded.document.data.get("routes") if loaded.document is not None else None
    if not isinstance(base, list):
        return
    kept = {r.name for r in bp.routes if r.name}
    dropped = [r["name"] for r in base if isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"] not in kept]
    if dropped:
        names = ", ".join(repr(n) for n in dropped)
        out.append(loaded.diag(
            ("environments", inst.env, "routes"),
            f"environment {inst.env}: this overlay replaces the whole route list and drops route(s) {names} of the "
            "base; repeat them here to keep them in this environment (an overlay never merges lists)",
            severity="warning"))


def _check_ingress(loaded: LoadedFile, inst: Instance, bp: IngressBlueprint) -> list[Diagnostic]:
    out: list[Diagnostic] = []

    def diag(path: FieldPath, message: str, severity: str = "error", code: str = "") -> None:
        out.append(loaded.diag(path, message, severity=severity, code=code))

    _check_reachability(bp, diag)
    _check_retries_idempotent(bp, diag)
    _check_mesh(inst, bp, diag)
    return out


def _check_mesh(inst: Instance, bp: ServiceBlueprint | IngressBlueprint, report: Report) -> None:
    """What only the target mesh refuses (its registration's `check`)."""
    for path, message in MESHES[inst.mesh].check(bp):
        report(path, message)


def _check_reachability(bp: ServiceBlueprint | IngressBlueprint, report: Report) -> None:
    """IST0130/IST0131: a route that an earlier route always catches first."""
    for j, later in enumerate(bp.routes):
        for i in range(j):
            earlier = bp.routes[i]
            if earlier.match is None:
                report(("routes", j), f"this route can never match: route {_name(bp, i)} before it has no match "
                       "and takes every request; move it last", "warning", "IST0130")
                break
            if later.match is None:
                continue
            if earlier.match == later.match:
                report(("routes", j, "match"), f"this route can never match: route {_name(bp, i)} has the "
                       "identical match; merge them or remove one", "warning", "IST0130")
                break
            if _broader(earlier.match, later.match):
                report(("routes", j, "match"), f"this route can never match: route {_name(bp, i)} matches "
                       "every request this one does; put the narrower route first", "warning", "IST0131")
                break


def _name(bp: ServiceBlueprint | IngressBlueprint, i: int) -> str:
    return repr(bp.routes[i].name) if bp.routes[i].name else f"routes[{i}]"


def _broader(a: Match, b: Match) -> bool:
    """Whether every request matching `b` also matches `a`."""
    for header, cond in a.headers.items():
        if header not in b.headers or not _string_covers(cond, b.headers[header]):
            return False
    if a.path is not None and (b.path is None or not _string_covers(a.path, b.path)):
        return False
    if a.method:
        b_methods = set(b.method or HTTP_METHODS)
        if not b_methods <= set(a.method):
            return False
    return True


def _string_covers(a: StringMatch, b: StringMatch) -> bool:
    if a == b:
        return True
    if a.kind == "prefix" and b.kind in ("prefix", "exact"):
        return b.value.startswith(a.value)
    if a.kind == "regex" and a.value in (".*", "^.*$", ".+") and b.kind != "regex":
        return a.value != ".+" or b.value != ""
    return False


def _check_retries_idempotent(bp: ServiceBlueprint | IngressBlueprint, report: Report) -> None:
    for i, route in enumerate(bp.routes):
        retries = route.retries if route.retries is not None else getattr(bp, "retries", None)
        methods = route.match.method if route.match else None
        if retries is None or not retries.enabled or retries.attempts == 0 or not methods:
            continue
        if set(methods) <= NON_IDEMPOTENT_METHODS:
            where = ("routes", i, "retries") if route.retries is not None else ("retries",)
            report(where, f"retries on a route that only takes {', '.join(methods)}: a retried non-idempotent "
                   f"request can be applied twice; set `retries: false` on route {_name(bp, i)} or make the "
                   "handler idempotent", "warning", "")


def _check_canary(bp: ServiceBlueprint, report: Report) -> None:
    """A canary walks the default route from `stable` to `to`: both declared, the route at `stable`."""
    canary = bp.canary
    if canary is None:
        return
    valid = ", ".join(bp.versions) or "none are declared; add `versions:`"
    for key in ("stable", "to"):
        version = getattr(canary, key)
        if version not in bp.versions:
            report(("canary", key), f"version {version!r} is not declared in `versions` ({valid})", code="IST0101")
    default = canary_route_index(bp)
    if default is None:
        return
    to = bp.routes[default].to
    if to is not None and not (len(to) == 1 and to[0].version == canary.stable
                               and to[0].service in (None, bp.service)):
        report(("routes", default, "to"), f"the canary walks this default route from {canary.stable!r} to "
               f"{canary.to!r}, so it must send everything to {canary.stable!r} (`to: {canary.stable}`); "
               "meshgen sets its split at each step")


def canary_route_index(bp: ServiceBlueprint) -> int | None:
    """The route a canary moves: the last route without a match (None: the implicit default route)."""
    for i in range(len(bp.routes) - 1, -1, -1):
        if bp.routes[i].match is None:
            return i
    return None


# --- the fleet -------------------------------------------------------------------------------------


AppName = Callable[[str, str, str], str]  # (env, namespace, service or _namespace/_mesh) -> Application name
_At = Callable[..., None]  # (facts, field path, message, severity="error", code=""): one finding


def check_application_names(facts: list[Facts], app_name: AppName, template: str) -> list[Diagnostic]:
    """Two folders whose Argo CD Applications would get one name (argocd.nameTemplate): Argo CD
    would show one and lose the other, and the rollout API would read the wrong one."""
    by_name: dict[tuple[str, str], list[Facts]] = defaultdict(list)
    for f in facts:
        folder = f.service if f.kind in ("Service", "Ingress") else "_namespace" if f.kind == "Namespace" else "_mesh"
        by_name[(f.env, app_name(f.env, f.namespace, folder))].append(f)
    out: list[Diagnostic] = []
    for (env, name), claims in sorted(by_name.items()):
        # One folder claimed twice is the "claimed by several blueprints" error, not a name clash.
        if len({(c.namespace, c.service) for c in claims}) < 2:
            continue
        units = sorted({(c.namespace, c.service, c.file) for c in claims})
        for c in claims:
            others = ", ".join(f"{ns}/{svc} ({file})" for ns, svc, file in units if (ns, svc) != (c.namespace, c.service))
            line, col = c.position("service")
            out.append(Diagnostic(
                c.file, line, col, "service" if c.kind == "Service" else "name" if c.kind == "Ingress" else "",
                f"the Argo CD Application of {c.namespace}/{c.service} in environment {env} would be named {name!r} "
                f"(argocd.nameTemplate {template!r}), like that of {others}; one Application cannot show two "
                "folders: put {namespace} in argocd.nameTemplate in meshgen.yaml (e.g. \"{service}-{namespace}-{env}\") "
                "or rename one of them"))
    return out


def check_fleet(facts: list[Facts], app_names: tuple[AppName, str] | None = None) -> list[Diagnostic]:
    """Checks across blueprints; with `app_names` (name function, template) also Argo CD names."""
    out: list[Diagnostic] = []
    if app_names is not None:
        out.extend(check_application_names(facts, *app_names))
    by_key: dict[tuple[str, str, str], list[Facts]] = defaultdict(list)
    namespaces: dict[tuple[str, str], list[Facts]] = defaultdict(list)
    meshes: dict[str, list[Facts]] = defaultdict(list)
    for f in facts:
        if f.kind in ("Service", "Ingress"):
            by_key[f[:3]].append(f)  # (env, namespace, service or Ingress name): one folder, one unit
        elif f.kind == "Namespace":
            namespaces[(f.env, f.namespace)].append(f)
        else:
            meshes[f.env].append(f)

    def at(f: Facts, path: str, message: str, severity: str = "error", code: str = "") -> None:
        line, col = f.position(path)
        out.append(Diagnostic(f.file, line, col, path, message, severity, code))  # type: ignore[arg-type]

    _check_claims(by_key, namespaces, meshes, at)
    gateways, linked = _check_edges(by_key, at)
    _check_links(by_key, gateways, linked, at)
    return out


def _check_claims(by_key: dict[tuple[str, str, str], list[Facts]], namespaces: dict[tuple[str, str], list[Facts]],
                  meshes: dict[str, list[Facts]], at: _At) -> None:
    """One blueprint per service folder, per namespace and per environment's mesh."""
    for (env, ns, svc), claims in by_key.items():
        if len(claims) > 1:
            files = sorted({c.file for c in claims})
            for c in claims:
                others = ", ".join(x for x in files if x != c.file) or c.file
                if all(x.kind == "Service" for x in claims):
                    at(c, "service", f"service {ns}/{svc} in environment {env} is also claimed by {others}; "
                       "one service has one blueprint (use `environments:` for per-environment differences)",
                       code="IST0109")
                else:
                    at(c, "service", f"the name {ns}/{svc} in environment {env} is also used by {others}; a "
                       "kind: Ingress and a service share one folder and object names: rename the Ingress")
    for (env, ns), claims in namespaces.items():
        for c in claims[1:]:
            at(c, "namespace", f"namespace {ns} in environment {env} already has a Namespace blueprint "
               f"({claims[0].file})")
    for env, claims in meshes.items():
        for c in claims[1:]:
            at(c, "kind", f"environment {env} already has a Mesh blueprint ({claims[0].file}); keep one")


def _check_edges(by_key: dict[tuple[str, str, str], list[Facts]],
                 at: _At) -> tuple[dict[tuple[str, str], set[str]], list[Facts]]:
    """Ingress hosts and rendered gateways claimed once; gives the gateways (their hosts) and the
    blueprints that point at other services or gateways."""
    # Most services route nowhere else and have no ingress: only those that do are looked at.
    hosts: dict[tuple[str, str], list[Facts]] = defaultdict(list)
    gateways: dict[tuple[str, str], set[str]] = {}
    linked: list[Facts] = []
    for claims in by_key.values():
        f = claims[0]
        if f.ingress_hosts:
            for h in f.ingress_hosts:
                hosts[(f.env, h)].append(f)
            if f.rendered_gateway is not None:
                key = (f.env, f.rendered_gateway)
                if key in gateways:
                    at(f, "ingress.hosts", f"gateway {f.rendered_gateway} in {f.env} would be rendered twice (for a "
                       "service's ingress and a kind: Ingress); rename the Ingress or bind one to the other's gateway")
                gateways[key] = set(f.ingress_hosts)
        if f.destinations or f.ingress_gateway is not None:
            linked.append(f)
    for (env, host), claims in hosts.items():
        if len(claims) > 1:
            names = sorted(f"{'Ingress ' if c.kind == 'Ingress' else ''}{c.namespace}/{c.service}" for c in claims)
            for c in claims:
                at(c, "ingress.hosts", f"ingress host {host} is claimed by several blueprints in {env}: "
                   f"{', '.join(names)}; one host has one set of edge routes", code="IST0109")
    return gateways, linked


def _check_links(by_key: dict[tuple[str, str, str], list[Facts]], gateways: dict[tuple[str, str], set[str]],
                 linked: list[Facts], at: _At) -> None:
    """Routes to versions the target declares; ingress hosts the bound gateway serves."""
    for f in linked:
        env, ns = f.env, f.namespace
        for path, host, version in f.destinations:
            target_ns, target = _resolve_host(host, ns)
            target_claims = [c for c in by_key.get((env, target_ns, target), ()) if c.kind == "Service"]
            known = target_claims[0].versions if target_claims else None
            if known is not None and version and version not in known:
                at(f, path, f"service {target_ns}/{target} has no version {version!r} "
                   f"(it declares: {', '.join(sorted(known)) or 'none'})", code="IST0101")
        for (path, host, _), port in zip(f.destinations, f.edge_ports):
            _check_edge_port(f, path, host, port, by_key, at)
        if f.ingress_gateway is not None and (env, f.ingress_gateway) in gateways:
            served = gateways[(env, f.ingress_gateway)]
            for h in f.ingress_hosts:
                if not any(_host_covers(s, h) for s in served):
                    at(f, "ingress.gateway", f"host {h} is not served by gateway {f.ingress_gateway} "
                       f"(it serves: {', '.join(sorted(served))}); add the host there", "warning", "IST0132")


def _check_edge_port(
    f: Facts, path: str, host: str, port: int, by_key: dict[tuple[str, str, str], list[Facts]],
    at: Callable[[Facts, str, str], None],
) -> None:
    """An edge route must reach a port its service has: a wrong port is a 503 at the gateway, and
    Gateway API backendRefs always name one (meshgen writes 80, the blueprint default, when the
    route names none), so on Linkerd a service without port 80 needs the route to say its port."""
    target_ns, target = _resolve_host(host, f.namespace)
    claims = [c for c in by_key.get((f.env, target_ns, target), ()) if c.kind == "Service"]
    if not claims or not claims[0].ports:
        return  # not a blueprint in this environment: nothing to check against
    declared = claims[0].ports
    listed = ", ".join(map(str, declared))
    if port and port not in declared:
        at(f, path, f"service {target_ns}/{target} has no port {port} (it declares: {listed})")
    elif not port and (default := _default_backend_port(f.mesh)) is not None and default not in declared:
        at(f, path, f"service {target_ns}/{target} has no port {default}, the port a Gateway API backendRef gets "
           f"when the route names none (it declares: {listed}); "
           f"name it: to: {{service: {host}, port: {declared[0]}}}")


def _default_backend_port(mesh: str) -> int | None:
    known = MESHES.get(mesh)  # Facts from an old render cache may name no mesh
    return known.default_backend_port if known is not None else None


def _resolve_host(host: str, namespace: str) -> tuple[str, str]:
    parts = host.split(".")
    if len(parts) == 1:
        return namespace, parts[0]
    return parts[1], parts[0]


def _host_covers(served: str, host: str) -> bool:
    if served == "*" or served == host:
        return True
    return served.startswith("*.") and host.endswith(served[1:])
