"""Forge providers (GitHub, GitLab, Gitea / Forgejo, local) and their registry.

A low layer: providers depend on nothing of meshgen's domain, so meshgen.yaml validation, process
settings and the API derive what they know about forges from meshgen.forges.registry.FORGES.
"""

from __future__ import annotations

from meshgen.forges.base import Forge, ForgeError, ForgeSpec, PRState, PullRequest
from meshgen.forges.registry import FORGES, forge_spec, make_forge

__all__ = ["FORGES", "Forge", "ForgeError", "ForgeSpec", "PRState", "PullRequest", "forge_spec", "make_forge"]
