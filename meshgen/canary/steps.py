"""A canary step as a blueprint: the default route's split set to {stable: 100-w, to: w}.

The renderers know nothing of canaries: a step is the same blueprint with one route's `to`
replaced, so every mesh and flavour (Istio VirtualService weights, Gateway API backendRefs, SMI
TrafficSplit) renders it the way it renders any split, and a reviewer's diff between two steps is
one weight. Weight 0 is the blueprint as written (the default route at `stable`), byte for byte.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence

from meshgen.blueprint.analysis import canary_route_index
from meshgen.blueprint.model import Backend, Route, ServiceBlueprint
from meshgen.render.base import Resource


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


# ---- the weight, readable back from the environment repository ---------------------------------

#: Written on every rendered object whose content depends on the canary's split (and only those), at
#: any weight above 0: the step a canary is at is read back from the files, whatever the mesh, and
#: survives squash merges and rebases because it is content, not history. Weight 0 has none.
WEIGHT_ANNOTATION = "meshgen.dev/canary-weight"
VERSION_ANNOTATION = "meshgen.dev/canary-version"

_WEIGHT_RE = re.compile(rb"""meshgen\.dev/canary-weight["']?:[ \t]*["']?(\d{1,3})["']?""")
_VERSION_RE = re.compile(rb"""meshgen\.dev/canary-version["']?:[ \t]*["']?([a-z0-9][-a-z0-9]{0,62})["']?""")


def annotate(at_weight: Sequence[Resource], as_written: Sequence[Resource], version: str,
             weight: int) -> list[Resource]:
    """`at_weight` with the canary annotations on every object that differs from `as_written`."""
    plain = {(r.kind, r.name, r.namespace): r.body for r in as_written}
    out = []
    for res in at_weight:
        if plain.get((res.kind, res.name, res.namespace)) == res.body:
            out.append(res)
            continue
        body = copy.deepcopy(res.body)
        notes = body["metadata"].setdefault("annotations", {})
        notes[WEIGHT_ANNOTATION] = str(weight)
        notes[VERSION_ANNOTATION] = version
        out.append(Resource(body))
    return out


def read_weight(files: Iterable[bytes]) -> tuple[str | None, int]:
    """(version, weight) a unit's rendered files carry; (None, 0) when they carry no canary step.

    A byte-level read (like units.is_managed): it runs on the base branch and on pull-request heads
    for every canary on every pass, and only meshgen writes these annotations.
    """
    for data in files:
        weight = _WEIGHT_RE.search(data)
        if weight is None:
            continue
        version = _VERSION_RE.search(data)
        value = int(weight.group(1))
        if version is not None and 0 < value <= 100:
            return version.group(1).decode(), value
    return None, 0
