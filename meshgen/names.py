"""Kubernetes object names derived from blueprint names, shared by every renderer."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache

MAX_NAME = 63


@lru_cache(maxsize=65_536)  # pure, and called a dozen times per service with the same parts
def dns_name(*parts: str, limit: int = MAX_NAME) -> str:
    """`a-b-c` as a DNS-1123 label: a long name is cut and ends in a short stable hash."""
    name = "-".join(p for p in parts if p)
    name = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def rendered_gateway_name(service: str) -> str:
    """Name of the gateway meshgen renders for a service's ingress (in the service namespace)."""
    return dns_name(service, "gateway")


def route_labels(names: Sequence[str]) -> dict[str, str]:
    """A DNS label for each route name (free text such as `GET /api/users`), unique among them.

    A name that is a DNS label already keeps it; another is lowercased with every run of other
    characters turned into `-` (`get-api-users`). Where two names would get one label, the
    derived ones end in a short hash of their text, so the same routes always get the same labels.
    """
    derived = {n: (dns_name(n) or "route") for n in names}
    count: dict[str, int] = {}
    for label in derived.values():
        count[label] = count.get(label, 0) + 1
    out: dict[str, str] = {}
    for name, label in derived.items():
        if count[label] > 1 and label != name:
            digest = hashlib.sha256(name.encode()).hexdigest()[:6]
            label = dns_name(label, digest) if len(label) + 7 <= MAX_NAME else f"{label[:MAX_NAME - 7].rstrip('-')}-{digest}"
        out[name] = label
    return out
