"""The Linkerd renderer: modern flavour (modern.py), legacy SMI/ServiceProfile flavour (legacy.py)
and what each can express (capabilities.py). Gateway API routing is shared: render/gatewayapi.py."""

from __future__ import annotations

from meshgen.names import dns_name
from meshgen.render.linkerd.modern import LinkerdRenderer, identity

__all__ = ["LinkerdRenderer", "dns_name", "identity"]
