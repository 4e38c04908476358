"""meshgen.yaml: environments, mesh settings, teams. One file at the root of a blueprints repo."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, create_model, field_validator, model_validator

from meshgen.blueprint.base import DNSLabel, DurationStr, Strict, describe_value, fail, parse_duration
from meshgen.render.registry import MESHES, mesh_names


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


def _http_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"https?://[^\s/@]+(/[^\s]*)?\Z", value):
        raise fail("url", f"expected an http(s) URL such as http://prometheus.monitoring:9090 (no credentials in it), "
                   f"got {describe_value(value)}")
    return value.rstrip("/")


class PrometheusSettings(Strict):
    """Where canary gates are measured; the token (optional) comes from an environment variable or a file."""

    url: Annotated[str, BeforeValidator(_http_url)]
    token_env: str | None = Field(default=None, alias="tokenEnv")
    token_file: str | None = Field(default=None, alias="tokenFile")


class _EnvironmentMesh(Strict):
    # Any registered mesh (meshgen.render.registry); the first registered is the default.
    mesh: str = mesh_names()[0]


if not TYPE_CHECKING:  # the same field as a Literal of the registered names: its errors and JSON schema list them
    _EnvironmentMesh = create_model("_EnvironmentMesh", __base__=Strict,
                                    mesh=(Literal[mesh_names()], mesh_names()[0]))


class Environment(_EnvironmentMesh):
    path: Annotated[str, BeforeValidator(_relative_path)] | None = None
    prometheus: PrometheusSettings | None = None


class GitHubAppSettings(Strict):
    """A GitHub App installation meshgen acts as (instead of a token); the private key is a process
    setting (MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE), never in meshgen.yaml."""

    id: int | str  # the app id (a number) or its client id (Iv1...): GitHub accepts either as the JWT issuer
    installation_id: int = Field(alias="installationId", gt=0)


def _forge_kind(value: Any) -> str:
    from meshgen.forges.registry import FORGES

    if not isinstance(value, str) or value not in FORGES:
        raise fail("forge_kind", f"{describe_value(value)} is not a forge kind; use one of: {', '.join(FORGES)}")
    return value


def _forge_kind_schema(schema: dict[str, Any]) -> None:
    from meshgen.forges.registry import FORGES

    schema["enum"] = list(FORGES)


class ForgeSettings(Strict):
    """Where pull requests are opened. `local`: the environment repository itself keeps them.

    Which of the fields a kind needs or accepts is its registration's (meshgen.forges.registry).
    """

    # The default kind (meshgen.forges.registry.DEFAULT_KIND, which the registry checks needs no field).
    kind: Annotated[str, BeforeValidator(_forge_kind)] = Field(default="local", json_schema_extra=_forge_kind_schema)
    base_url: str | None = Field(default=None, alias="baseUrl")  # GitHub Enterprise, Gitea, self-hosted GitLab
    owner: str | None = None  # GitHub/Gitea owner
    repo: str | None = None  # GitHub/Gitea repository
    project: str | None = None  # GitLab project path or id
    token_env: str = Field(default="MESHGEN_FORGE_TOKEN", alias="tokenEnv")
    token_file: str | None = Field(default=None, alias="tokenFile")
    app: GitHubAppSettings | None = None  # GitHub only: authenticate as a GitHub App installation

    @model_validator(mode="after")
    def _complete(self) -> ForgeSettings:
        if not self.model_fields_set:
            # Nothing written: the default kind, which needs nothing (meshgen.forges.registry checks that
            # when it registers). Renders never import the forges this way.
            return self
        from meshgen.forges.registry import FORGES

        spec = FORGES[self.kind]
        if self.app is not None and "app" not in spec.required + spec.optional:
            with_app = " or ".join(repr(k) for k, s in FORGES.items() if "app" in s.required + s.optional)
            raise fail("forge", f"forge.app (a GitHub App) needs forge kind {with_app}, not {self.kind!r}")
        fields = self.fields()
        missing = [name for name in spec.required if fields.get(name) is None]
        if missing:
            raise fail("forge", f"forge kind {self.kind!r} needs {', '.join(missing)}")
        return self

    def fields(self) -> dict[str, Any]:
        """The kind-specific keys that are set, as meshgen.yaml spells them (what a provider is built from)."""
        names = ("base_url", "owner", "repo", "project", "app")
        values = {type(self).model_fields[n].alias or n: getattr(self, n) for n in names}
        if self.app is not None:
            values["app"] = {"id": self.app.id, "installation_id": self.app.installation_id}
        return {k: v for k, v in values.items() if v is not None}


class Author(Strict):
    name: str = "meshgen"
    email: str = "meshgen@localhost"


class GitCredentialSettings(Strict):
    """envRepo.git: HTTPS git credentials when they differ from the forge's API token.

    The token comes from `tokenEnv` (an environment variable) or `tokenFile` (re-read for every
    fetch and push, so a rotated Secret is picked up); `username` alone keeps the forge token
    but changes the HTTPS username (Gitea/Forgejo: the token's user, if the server wants it).
    """

    token_env: str | None = Field(default=None, alias="tokenEnv")
    token_file: str | None = Field(default=None, alias="tokenFile")
    username: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> GitCredentialSettings:
        if self.token_env is not None and self.token_file is not None:
            raise fail("git", "give either tokenEnv or tokenFile, not both")
        return self


def _credential_free_url(value: Any) -> Any:
    """A URL with user:password@ (or token@) would put the token in meshgen.yaml, the mirror's git
    config and every error message: refuse it and say where the token goes."""
    from meshgen.giturls import url_credentials_problem

    if isinstance(value, str):
        problem = url_credentials_problem(value, "envRepo.url")
        if problem:
            raise fail("url", problem)
    return value


class EnvRepoSettings(Strict):
    """The environment repository that rendered manifests reach through pull requests."""

    # a local path (relative to the blueprints repository) or a git URL (https://, ssh://, git@host:path)
    url: Annotated[str, BeforeValidator(_credential_free_url)] = ".meshgen/env-repo"
    git: GitCredentialSettings | None = None  # HTTPS credentials when not the forge's token
    branch: str = "main"
    forge: ForgeSettings = Field(default_factory=ForgeSettings)
    author: Author = Author()
    grouping: Literal["service", "team", "env"] = "service"  # one PR per (env, service), per team, or per env
    auto_merge: list[DNSLabel] = Field(default_factory=list, alias="autoMerge")  # environments merged without review
    templates: str | None = None  # folder of jinja2 templates overriding the PR title/body/comments


class ArgoCDSettings(Strict):
    """How the rollout API reads Argo CD, the source of truth for what runs."""

    mode: Literal["rest", "kubernetes"] = "rest"
    url: str | None = None  # REST mode: https://argocd.example.com
    token_env: str = Field(default="MESHGEN_ARGOCD_TOKEN", alias="tokenEnv")
    token_file: str | None = Field(default=None, alias="tokenFile")
    ca_file: str | None = Field(default=None, alias="caFile")
    namespace: DNSLabel = "argocd"  # kubernetes mode: where Application resources live
    kubeconfig: str | None = None  # kubernetes mode; absent = in-cluster
    context: str | None = None
    name_template: str = Field(default="{service}-{env}", alias="nameTemplate")
    selector: str | None = None  # a label selector instead of the name template
    poll_interval: DurationStr = Field(default=parse_duration("30s"), alias="pollInterval")
    stale_after: DurationStr = Field(default=parse_duration("2m"), alias="staleAfter")


class Team(Strict):
    namespaces: list[DNSLabel] = Field(default_factory=list)
    mesh: bool = False  # may write `kind: Mesh` (mesh-wide settings): the platform team


class _ConfigHead(Strict):
    environments: dict[DNSLabel, Environment] = Field(min_length=1)


_MeshSections = _ConfigHead
if not TYPE_CHECKING:
    # One section per registered mesh, named after it, with its settings model (render/<mesh>): `istio:`,
    # `linkerd:`, ... Its defaults apply when the section is left out. Mesh modules read their section
    # through a typed accessor (e.g. meshgen.render.istio.settings).
    _MeshSections = create_model("_MeshSections", __base__=_ConfigHead,
                                 **{m.name: (m.settings, m.settings()) for m in MESHES.values()})


class Config(_MeshSections):
    unsupported: Literal["error", "warn"] = "error"
    teams: dict[DNSLabel, Team] | None = None
    env_repo: EnvRepoSettings = Field(default_factory=EnvRepoSettings, alias="envRepo")
    argocd: ArgoCDSettings | None = None
    prometheus: PrometheusSettings | None = None
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
        for name in self.environments:
            path = self.env_path(name)
            if path in seen:
                raise fail("environments", f"environments {seen[path]!r} and {name!r} both write to folder {path!r}")
            seen[path] = name
        return self

    def mesh_section(self, mesh: str) -> Strict:
        """The `<mesh>:` section (its settings model; the mesh's own accessor gives it typed)."""
        section = getattr(self, mesh)
        assert isinstance(section, Strict), mesh
        return section

    def prometheus_for(self, env: str) -> PrometheusSettings | None:
        """The Prometheus that measures canaries in `env`: its own, else the top-level one."""
        return self.environments[env].prometheus or self.prometheus

    def env_path(self, env: str) -> str:
        return self.environments[env].path or env

    def mesh_teams(self) -> list[str]:
        """Teams that may write `kind: Mesh` (empty when teams are not configured)."""
        return sorted(t for t, team in (self.teams or {}).items() if team.mesh)

    def namespace_owner(self, namespace: str) -> list[str]:
        """Teams that list `namespace` (empty when teams are not configured)."""
        if not self.teams:
            return []
        return sorted(t for t, team in self.teams.items() if namespace in team.namespaces)


_CLASHES = sorted(set(MESHES) & (set(_ConfigHead.model_fields) | set(Config.__annotations__)))
if _CLASHES:  # a mesh section would hide one of meshgen.yaml's own keys
    raise ImportError(f"mesh name(s) {', '.join(_CLASHES)} clash with meshgen.yaml keys; register them under another name")


DEFAULT_CONFIG_TEXT = """\
# meshgen.yaml — written by `meshgen` because none was found.
environments:
  production: {mesh: istio, path: production}
"""
