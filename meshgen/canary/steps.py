"""A canary step as a blueprint: the default route's split set to {stable: 100-w, to: w}.

The renderers know nothing of canaries: a step is the same blueprint with one route's `to`
replaced, so every mesh and flavour (Istio VirtualService weights, Gateway API backendRefs, SMI
TrafficSplit) renders it the way it renders any split, and a reviewer's diff between two steps is
one weight. Weight 0 is the blueprint as written (the default route at `stable`), byte for byte.
"""

from __future__ import annotations

from meshgen.blueprint.analysis import canary_route_index
from meshgen.blueprint.model import Backend, Route, ServiceBlueprint


def with_weight(bp: ServiceBlueprint, weight: int) -> ServiceBlueprint:
    """`bp` with its canary's default route sending `weight`% to `canary.to`, the rest to `stable`."""
    canary = bp.canary
    if canary is None or weight == 0:
        return bp
    if not 0 < weight <= 100:
        raise ValueError(f"a canary weight is a percentage from 0 to 100, not {weight}")
    split = [{"version": canary.to, "weight": 100}] if weight == 100 else [
        {"version": canary.stable, "weight": 100 - weight}, {"version": canary.to, "weight": weight}]
    index = canary_route_index(bp)
    if index is None:  # the implicit default route becomes explicit, after every matched route
        routes = (*bp.routes, Route.model_validate({"to": split}))
    else:
        # The route keeps its name, timeout, retries and fault; only where it sends traffic changes.
        moved = bp.routes[index].model_copy(update={"to": [Backend.model_validate(b) for b in split]})
        routes = (*bp.routes[:index], moved, *bp.routes[index + 1:])
    return bp.model_copy(update={"routes": routes})
