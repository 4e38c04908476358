"""The forges meshgen knows: one registration line each, everything else derives from it.

meshgen.yaml's envRepo.forge.kind and its required fields (meshgen.blueprint.config), the provider
a sync builds (meshgen.gitops.sync.forge_from_config), the webhook secrets
MESHGEN_WEBHOOK_SECRET_<KIND> (meshgen.settings), the webhook routes /api/v1/webhooks/<kind>
(meshgen.api.webhooks, prhooks, planhooks), the README's settings table and the chart's
secrets.webhookSecrets keys all read FORGES. Adding a forge: write meshgen/forges/<kind>.py
exporting FORGE (a ForgeSpec), and add it to the line below (CONTRIBUTING.md, "Adding a forge").
"""

from __future__ import annotations

from typing import Any

from meshgen.forges import gitea, github, gitlab, local
from meshgen.forges.base import Forge, ForgeError, ForgeSpec


def _register(*specs: ForgeSpec) -> dict[str, ForgeSpec]:
    kinds: dict[str, ForgeSpec] = {}
    for spec in specs:
        if not spec.kind.isidentifier() or spec.kind != spec.kind.lower():
            # the kind becomes a URL segment, an environment variable suffix and a chart values key
            raise ValueError(f"forge kind {spec.kind!r} must be a lower-case identifier")
        if spec.kind in kinds:
            raise ValueError(f"forge kind {spec.kind!r} is registered twice")
        kinds[spec.kind] = spec
    return kinds


DEFAULT_KIND = "local"  # meshgen.yaml's envRepo.forge.kind when it names none


def _default_needs_nothing(kinds: dict[str, ForgeSpec]) -> dict[str, ForgeSpec]:
    # meshgen.yaml validation skips the registry for an envRepo.forge nobody wrote (renders stay light),
    # which is right only while the default kind requires no field.
    default = kinds.get(DEFAULT_KIND)
    if default is None or default.required:
        raise ValueError(f"the default forge kind {DEFAULT_KIND!r} must be registered and require no field")
    return kinds


#: kind -> its registration, in this order everywhere (messages, docs, schemas). Read it at call
#: time, never copy it at import: a test registers a toy forge in-process (monkeypatch.setitem).
FORGES = _default_needs_nothing(_register(local.FORGE, github.FORGE, gitlab.FORGE, gitea.FORGE))


def forge_spec(kind: str) -> ForgeSpec:
    """The registration of `kind`; ForgeError naming the registered kinds otherwise."""
    try:
        return FORGES[kind]
    except KeyError:
        raise ForgeError(f"unknown forge kind {kind!r}; use one of: {', '.join(FORGES)}") from None


def make_forge(kind: str, **settings: Any) -> Forge:
    """A forge of `kind` built with `settings` (its provider's keyword arguments)."""
    return forge_spec(kind).provider(**settings)


def remote_kinds_text() -> str:
    """'github, gitlab or gitea': the kinds that talk to a server, for messages."""
    kinds = [kind for kind, spec in FORGES.items() if spec.git_username is not None]
    return ", ".join(kinds[:-1]) + f" or {kinds[-1]}" if len(kinds) > 1 else "".join(kinds)
