"""Argo CD, the source of truth for what runs: reading Applications and polling them into Redis.

Requests never call Argo CD; `meshgen.argocd.poller` does, on a schedule, and the API reads
what it cached.
"""

from meshgen.argocd.source import AppSource, ArgoCDError, make_source

__all__ = ["AppSource", "ArgoCDError", "make_source"]
