"""Forge providers and the factory that picks one by kind.

Providers are imported lazily: a missing or broken provider only fails when it is asked for,
so the local forge works even when a remote provider's dependencies are absent.
"""

from __future__ import annotations

import importlib
from typing import Any

from meshgen.gitops.forges.base import Forge, ForgeError, PRState, PullRequest

__all__ = ["KINDS", "Forge", "ForgeError", "PRState", "PullRequest", "make_forge"]

#: kind -> (module in this package, class name)
KINDS: dict[str, tuple[str, str]] = {
    "local": ("local", "LocalForge"),
    "github": ("github", "GitHubForge"),
    "gitea": ("gitea", "GiteaForge"),
    "gitlab": ("gitlab", "GitLabForge"),
}


def make_forge(kind: str, **settings: Any) -> Forge:
    """A forge of `kind` built with `settings` (the provider's keyword arguments)."""
    try:
        module_name, class_name = KINDS[kind]
    except KeyError:
        raise ForgeError(f"unknown forge kind {kind!r}; use one of: {', '.join(sorted(KINDS))}") from None
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        raise ForgeError(
            f"the {kind!r} forge is not available in this installation ({exc}); "
            "use kind 'local' or install a meshgen build that ships it"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ForgeError(
            f"{module.__name__} does not define {class_name}; the {kind!r} provider is incomplete"
        )
    forge = cls(**settings)
    if getattr(cls, "kind", None) != kind:
        raise ForgeError(f"{class_name}.kind is {getattr(cls, 'kind', None)!r}, expected {kind!r}")
    return forge  # type: ignore[no-any-return]
