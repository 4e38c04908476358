"""meshgen.yaml: environments, mesh settings, teams. One file at the root of a blueprints repo."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from meshgen.blueprint.base import DNSLabel, Strict, describe_value, fail
from meshgen.blueprint.model import MeshName

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?\Z")


def _version(value: Any) -> str:
    if isinstance(value, float):
        # `version: 1.24` unquoted reads as a number; 1.2 vs 1.20 is ambiguous, so insist.
        raise fail("version", f"write the version as a quoted string, e.g. \"{value}\" (1.2 and 1.20 differ)")
    if not isinstance(value, str) or not _VERSION.match(value):
        raise fail("version", f"expected a version such as \"1.24\", got {describe_value(value)}")
    return value


Version = Annotated[str, BeforeValidator(_version)]


def version_tuple(text: str) -> tuple[int, int]:
    m = _VERSION.match(text)
    assert m is not None  # validated on load
    return int(m.group(1)), int(m.group(2))


def _relative_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise fail("path", f"expected a folder name such as staging, got {describe_value(value)}")
    parts = value.strip("/").split("/")
    for part in parts:
        if part in ("", ".", "..") or not re.match(r"[A-Za-z0-9][-A-Za-z0-9_.]*\Z", part):
            raise fail(
                "path",
                f"{value!r} is not a safe relative folder; use names of letters, digits, '-', '_', '.' "
                "separated by '/', without '..'",
            )
    return "/".join(parts)


class Environment(Strict):
    mesh: MeshName = "istio"
    path: Annotated[str, BeforeValidator(_relative_path)] | None = None


class IstioSettings(Strict):
    version: Version = "1.24"
    root_namespace: DNSLabel = Field(default="istio-system", alias="rootNamespace")
    ingress_selector: dict[str, str] = Field(default_factory=lambda: {"istio": "ingressgateway"}, alias="ingressSelector")

    @property
    def release(self) -> tuple[int, int]:
        return version_tuple(self.version)


class LinkerdSettings(Strict):
    version: Version = "2.18"
    traffic_split: Literal["httproute", "smi"] = Field(default="httproute", alias="trafficSplit")
    route_policy: Literal["annotations", "serviceprofile"] = Field(default="annotations", alias="routePolicy")
    smi_version: Literal["v1alpha1", "v1alpha2"] = Field(default="v1alpha2", alias="smiVersion")
    namespace: DNSLabel = "linkerd"

    @property
    def release(self) -> tuple[int, int]:
        return version_tuple(self.version)


class Team(Strict):
    namespaces: list[DNSLabel] = Field(default_factory=list)


class Config(Strict):
    environments: dict[DNSLabel, Environment] = Field(min_length=1)
    istio: IstioSettings = IstioSettings()
    linkerd: LinkerdSettings = LinkerdSettings()
    unsupported: Literal["error", "warn"] = "error"
    teams: dict[DNSLabel, Team] | None = None
    trust_domain: str = Field(default="cluster.local", alias="trustDomain")
    cluster_domain: str = Field(default="cluster.local", alias="clusterDomain")

    @field_validator("environments", mode="before")
    @classmethod
    def _env_short_form(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ({} if val is None else val) for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _distinct_paths(self) -> Config:
        seen: dict[str, str] = {}
        for name, env in self.environments.items():
            path = self.env_path(name)
            if path in seen:
                raise fail("environments", f"environments {seen[path]!r} and {name!r} both write to folder {path!r}")
            seen[path] = name
        return self

    def env_path(self, env: str) -> str:
        return self.environments[env].path or env

    def namespace_owner(self, namespace: str) -> list[str]:
        """Teams that list `namespace` (empty when teams are not configured)."""
        if not self.teams:
            return []
        return sorted(t for t, team in self.teams.items() if namespace in team.namespaces)


DEFAULT_CONFIG_TEXT = """\
# meshgen.yaml — written by `meshgen` because none was found.
environments:
  production: {mesh: istio, path: production}
"""
