"""The routes a service really has, once the spec's defaulting rules are applied.

Both meshes render from this, so "where does a route without `to` go" is decided once:

* A route without `to` goes where the default route goes (the last route without a
  match), or to the service as a whole when there is none.
* A route list whose last route has a match gets an implicit default route to the
  service as a whole.
* A route's own timeout/retries override the service-level ones; `retries: false` means
  never retry, even when the service sets retries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from meshgen.blueprint.base import Duration
from meshgen.blueprint.model import Backend, Fault, IngressBlueprint, Match, RetryPolicy, ServiceBlueprint
from meshgen.names import route_labels

DEFAULT_ROUTE_NAME = "default"


@dataclass(frozen=True)
class EffectiveRoute:
    name: str  # as written (free text), or meshgen's default name
    index: int | None  # position in the blueprint's `routes`, None for the implicit default
    match: Match | None
    backends: tuple[Backend, ...]  # () = the service as a whole, no version subset
    rewrite: str | None
    timeout: Duration | None
    retries: RetryPolicy | None  # None = the mesh's default behaviour
    fault: Fault | None
    is_default: bool
    label: str = ""  # a DNS label for object names, unique among the routes (names.route_labels)

    @property
    def field_path(self) -> tuple[str | int, ...]:
        return ("routes", self.index) if self.index is not None else ("routes",)

    @property
    def never_retry(self) -> bool:
        return self.retries is not None and (not self.retries.enabled or self.retries.attempts == 0)


def has_routing(svc: ServiceBlueprint) -> bool:
    """Whether the service needs route-level configuration at all."""
    return bool(svc.routes) or svc.timeout is not None or svc.retries is not None


def effective_routes(svc: ServiceBlueprint) -> list[EffectiveRoute]:
    """Routes in match order, every one with its destination, timeout and retries resolved."""
    routes = list(svc.routes)
    default_index = next((i for i in range(len(routes) - 1, -1, -1) if routes[i].match is None), None)
    default_to: tuple[Backend, ...] = ()
    if default_index is not None and routes[default_index].to is not None:
        default_to = tuple(routes[default_index].to or ())
    taken = {r.name for r in routes if r.name}
    out: list[EffectiveRoute] = []
    for i, r in enumerate(routes):
        is_default = i == default_index
        name = r.name or _free_name(DEFAULT_ROUTE_NAME if is_default else f"route-{i}", taken)
        out.append(
            EffectiveRoute(
                name=name,
                index=i,
                match=r.match,
                backends=tuple(r.to) if r.to is not None else default_to,
                rewrite=r.rewrite,
                timeout=r.timeout if r.timeout is not None else svc.timeout,
                retries=r.retries if r.retries is not None else svc.retries,
                fault=r.fault,
                is_default=is_default,
            )
        )
    if not out or out[-1].match is not None:
        out.append(
            EffectiveRoute(
                name=_free_name(DEFAULT_ROUTE_NAME, taken),
                index=None,
                match=None,
                backends=(),
                rewrite=None,
                timeout=svc.timeout,
                retries=svc.retries,
                fault=None,
                is_default=True,
            )
        )
    labels = route_labels([r.name for r in out])
    return [replace(r, label=labels[r.name]) for r in out]


def ingress_routes(ing: IngressBlueprint) -> list[EffectiveRoute]:
    """The routes of a kind: Ingress as written: every one has its `to`, and there is no implicit
    default route (a request no route matches gets 404 from the gateway)."""
    taken = {r.name for r in ing.routes if r.name}
    out = [
        EffectiveRoute(
            name=r.name or _free_name(f"route-{i}", taken),
            index=i,
            match=r.match,
            backends=tuple(r.to or ()),
            rewrite=r.rewrite,
            timeout=r.timeout,
            retries=r.retries,
            fault=r.fault,
            is_default=False,
        )
        for i, r in enumerate(ing.routes)
    ]
    labels = route_labels([r.name for r in out])
    return [replace(r, label=labels[r.name]) for r in out]


def _free_name(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name
