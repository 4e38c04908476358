"""meshgen.yaml `linkerd:`: the Linkerd release and the flavour it selects."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from meshgen.blueprint.base import DNSLabel, Strict, Version, version_tuple
from meshgen.render.base import settings_section

if TYPE_CHECKING:
    from meshgen.blueprint.config import Config


class LinkerdSettings(Strict):
    # meshgen.yaml `linkerd:`, a user contract (../shared/spec/blueprint-v1.md); a docstring would enter its JSON schema
    version: Version = "2.18"
    traffic_split: Literal["httproute", "smi"] = Field(default="httproute", alias="trafficSplit")
    route_policy: Literal["annotations", "serviceprofile"] = Field(default="annotations", alias="routePolicy")
    smi_version: Literal["v1alpha1", "v1alpha2"] = Field(default="v1alpha2", alias="smiVersion")
    namespace: DNSLabel = "linkerd"

    @cached_property
    def release(self) -> tuple[int, int]:
        return version_tuple(self.version)


def settings(config: Config) -> LinkerdSettings:
    """The `linkerd:` section of meshgen.yaml."""
    return settings_section(config, "linkerd", LinkerdSettings)
