"""The Linkerd renderer: modern flavour (modern.py), legacy SMI/ServiceProfile flavour (legacy.py),
what each can express (capabilities.py) and its meshgen.yaml section (settings.py). Gateway API
routing is shared: render/gatewayapi.py. `MESH` is what render/registry.py registers."""

from __future__ import annotations

import re
from collections.abc import Iterable

from meshgen.blueprint.model import IngressBlueprint, ServiceBlueprint
from meshgen.names import dns_name
from meshgen.render.base import FieldPath, GateSeries, MeasuredVersion, Mesh
from meshgen.render.linkerd.modern import LinkerdRenderer, identity
from meshgen.render.linkerd.settings import LinkerdSettings, settings
from meshgen.render.observability import promql_string

__all__ = ["MESH", "LinkerdRenderer", "dns_name", "identity"]

_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _gate_series(target: MeasuredVersion) -> GateSeries:
    """Linkerd's proxy metrics, scraped by linkerd-viz's Prometheus, which copies every pod label onto
    the series with `.`/`/` turned into `_` and the `linkerd.io/` prefix dropped: response_total and
    response_latency_ms_bucket with `direction="inbound"`, selected by `namespace` and the version's
    pod labels (workload labels + version labels); a failure is `classification="failure"` (5xx and
    gRPC errors)."""
    matchers = ['direction="inbound"', f"namespace={promql_string(target.namespace)}"]
    for key in sorted(target.pod_labels):
        name = _LABEL_NAME.sub("_", key.removeprefix("linkerd.io/"))
        matchers.append(f"{name}={promql_string(target.pod_labels[key])}")
    return GateSeries(requests="response_total", latency_ms_buckets="response_latency_ms_bucket",
                      failed='classification="failure"', matchers=tuple(matchers))


def _check(bp: ServiceBlueprint | IngressBlueprint) -> Iterable[tuple[FieldPath, str]]:
    """Edge routes are Gateway API HTTPRoutes: a rewrite after a regex path match cannot be said."""
    if not isinstance(bp, IngressBlueprint):
        return
    for i, route in enumerate(bp.routes):
        if route.rewrite is not None and route.match is not None and route.match.path is not None \
                and route.match.path.kind == "regex":
            message = ("Gateway API URLRewrite replaces a path prefix or the whole path; after a regex path "
                       "match it cannot say what to replace: match with {prefix: ...} or {exact: ...}")
            yield ("routes", i, "rewrite"), message


MESH = Mesh(
    name="linkerd",
    settings=LinkerdSettings,
    renderer=LinkerdRenderer,
    example_flavours=({"version": "2.18"}, {"version": "2.14", "trafficSplit": "smi", "routePolicy": "serviceprofile"}),
    system_namespace=lambda config: settings(config).namespace,
    gate_series=_gate_series,
    check=_check,
    default_backend_port=80,  # Gateway API backendRefs
)
