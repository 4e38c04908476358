"""Kubernetes object names derived from blueprint names, shared by every renderer."""

from __future__ import annotations

import hashlib
import re
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
