"""`meshgen bootstrap argocd`: Argo CD ApplicationSets for the environment repository.

One ApplicationSet per environment of meshgen.yaml. It has three git directory generators
over the environment repository, one per kind of folder meshgen owns there:

    <env path>/<namespace>/<service>/     a service           (generator "service")
    <env path>/<namespace>/_namespace/    namespace-wide      (generator "namespace")
    <env path>/_mesh/                     mesh-wide           (generator "mesh")

Every folder becomes one Argo CD Application. Each generator sets the same four `values`
(name, namespace, service, scope) from the folder's path, so a single template serves all
three and stays plain: `{{.values.name}}`, `{{.values.namespace}}`, ...

Application names:

* services follow `argocd.nameTemplate` (default `{service}-{env}`), the template the rollout
  API uses to find an Application; `{service}`, `{namespace}` and `{env}` are the placeholders;
* `_namespace` folders are named `meshgen-ns-<namespace>-<env>` and `_mesh` folders
  `meshgen-mesh-<env>` (an underscore is not allowed in a Kubernetes name, and the name
  template may not include the namespace, so these cannot go through it without colliding).

`application_name()` is the one implementation of these rules, for the API to share.

Labels on every Application: `app.kubernetes.io/managed-by: meshgen`, `meshgen.dev/env`,
`meshgen.dev/namespace` (empty for `_mesh`), `meshgen.dev/service` (empty for `_namespace`
and `_mesh`: a label value cannot start with `_`), and `meshgen.dev/scope`
(`service` | `namespace` | `mesh`). The annotation `meshgen.dev/unit` holds the exact unit
key of meshgen/records.py (`<env>/<namespace>/<service>`, service possibly `_namespace`, and
`<env>//_mesh` for the mesh-wide folder).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from meshgen.blueprint.config import Config
from meshgen.giturls import local_path
from meshgen.render.registry import mesh

API_VERSION = "argoproj.io/v1alpha1"
ARGOCD_FINALIZER = "resources-finalizer.argocd.argoproj.io"
DEFAULT_NAME_TEMPLATE = "{service}-{env}"
DEFAULT_SERVER = "https://kubernetes.default.svc"
PLACEHOLDERS = ("service", "namespace", "env")
NAMESPACE_FOLDER = "_namespace"
MESH_FOLDER = "_mesh"

MANAGED_BY = "app.kubernetes.io/managed-by"
ENV_LABEL = "meshgen.dev/env"
NAMESPACE_LABEL = "meshgen.dev/namespace"
SERVICE_LABEL = "meshgen.dev/service"
SCOPE_LABEL = "meshgen.dev/scope"
UNIT_ANNOTATION = "meshgen.dev/unit"

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


class BootstrapError(click.ClickException):
    pass


def parse_name_template(template: str) -> list[tuple[str, str | None]]:
    """`{service}-{env}` as (literal text, placeholder or None) pairs, like str.format reads it."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise BootstrapError(f"argocd.nameTemplate {template!r}: {exc}") from None
    out: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parts:
        if field == "team":
            raise BootstrapError(
                f"argocd.nameTemplate {template!r}: {{team}} is not part of the environment repository's folders, "
                "so an ApplicationSet cannot name Applications with it; use {service}, {namespace}, {env} "
                "(the rollout API can still find Applications by `argocd.selector` on meshgen.dev/* labels)"
            )
        if field is not None and (field not in PLACEHOLDERS or spec or conversion):
            raise BootstrapError(
                f"argocd.nameTemplate {template!r}: unknown placeholder {{{field}"
                f"{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}; "
                f"use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        if "{{" in literal or "}}" in literal:
            raise BootstrapError(f"argocd.nameTemplate {template!r}: literal text cannot contain '{{{{' or '}}}}'")
        out.append((literal, field))
    if not any(field == "service" for _, field in out):
        raise BootstrapError(f"argocd.nameTemplate {template!r} must contain {{service}}")
    return out


def application_name(config: Config, env: str, namespace: str, service: str) -> str:
    """The Argo CD Application name of one unit (the folder `<env path>/<namespace>/<service>`).

    `service` may be `_namespace` or `_mesh` (then `namespace` is "" ), as in the records.
    """
    if service == MESH_FOLDER:
        return f"meshgen-mesh-{env}"
    if service == NAMESPACE_FOLDER:
        return f"meshgen-ns-{namespace}-{env}"
    values = {"service": service, "namespace": namespace, "env": env}
    return "".join(lit + (values[field] if field else "") for lit, field in parse_name_template(name_template(config)))


def application_names(config: Config) -> tuple[Callable[[str, str, str], str], str] | None:
    """(name function, template) for the fleet check of Application names; None when the template
    itself is wrong (that error is reported where the template is used)."""
    template = name_template(config)
    try:
        parse_name_template(template)
    except BootstrapError:
        return None
    return (lambda env, namespace, service: application_name(config, env, namespace, service)), template


def name_template(config: Config) -> str:
    return config.argocd.name_template if config.argocd is not None else DEFAULT_NAME_TEMPLATE


def _go_name_template(template: str, env: str, namespace_expr: str) -> str:
    """The name template as a Go template over the git directory generator's parameters."""
    exprs = {"service": "{{.path.basename}}", "namespace": namespace_expr, "env": env}
    return "".join(lit + (exprs[field] if field else "") for lit, field in parse_name_template(template))


def _mesh_namespace(config: Config, env: str) -> str:
    return mesh(config.environments[env].mesh).system_namespace(config)


def application_sets(
    config: Config,
    *,
    repo_url: str | None = None,
    envs: list[str] | None = None,
    auto_sync: list[str] | tuple[str, ...] = (),
    project: str = "default",
    argocd_namespace: str | None = None,
    dest_server: str | None = None,
    dest_name: str | None = None,
    revision: str | None = None,
) -> list[dict[str, Any]]:
    """One ApplicationSet (as plain data) per environment, in meshgen.yaml order."""
    url = repo_url or config.env_repo.url
    if local_path(url) is not None:  # a path or file://: not what Argo CD clones
        raise BootstrapError(
            f"envRepo.url {url!r} is a local path; Argo CD must reach the environment repository over the "
            "network: pass --repo-url with the URL Argo CD clones (e.g. https://git.example.com/platform/env.git)"
        )
    selected = list(config.environments) if not envs else list(envs)
    unknown = sorted({e for e in [*selected, *auto_sync] if e not in config.environments})
    if unknown:
        raise BootstrapError(
            f"unknown environment(s) {', '.join(unknown)}; meshgen.yaml has {', '.join(config.environments)}"
        )
    if dest_server and dest_name:
        raise BootstrapError("give --dest-server or --dest-name, not both")
    template = name_template(config)
    parse_name_template(template)  # fail early, naming the template
    namespace = argocd_namespace or (config.argocd.namespace if config.argocd is not None else "argocd")
    destination = {"name": dest_name} if dest_name else {"server": dest_server or DEFAULT_SERVER}
    return [
        _application_set(
            config, env, url=url, template=template, auto=env in auto_sync, project=project,
            namespace=namespace, destination=destination, revision=revision or config.env_repo.branch,
        )
        for env in selected
    ]


def _application_set(
    config: Config, env: str, *, url: str, template: str, auto: bool, project: str, namespace: str,
    destination: dict[str, str], revision: str,
) -> dict[str, Any]:
    path = config.env_path(env)
    depth = len(path.split("/"))  # the namespace folder is path.segments[depth]
    ns_expr = f"{{{{index .path.segments {depth}}}}}"

    def generator(directories: list[dict[str, Any]], values: dict[str, str]) -> dict[str, Any]:
        return {"git": {"repoURL": url, "revision": revision, "directories": directories, "values": values}}

    generators = [
        generator(
            [{"path": f"{path}/*/*"}, {"path": f"{path}/*/{NAMESPACE_FOLDER}", "exclude": True},
             {"path": f"{path}/{MESH_FOLDER}/*", "exclude": True}],
            {"scope": "service", "name": _go_name_template(template, env, ns_expr), "namespace": ns_expr,
             "destinationNamespace": ns_expr, "service": "{{.path.basename}}",
             "unit": f"{env}/{ns_expr}/{{{{.path.basename}}}}"},
        ),
        generator(
            [{"path": f"{path}/*/{NAMESPACE_FOLDER}"}],
            {"scope": "namespace", "name": f"meshgen-ns-{ns_expr}-{env}", "namespace": ns_expr,
             "destinationNamespace": ns_expr, "service": "", "unit": f"{env}/{ns_expr}/{NAMESPACE_FOLDER}"},
        ),
        generator(
            [{"path": f"{path}/{MESH_FOLDER}"}],
            {"scope": "mesh", "name": f"meshgen-mesh-{env}", "namespace": "",
             "destinationNamespace": _mesh_namespace(config, env), "service": "", "unit": f"{env}//{MESH_FOLDER}"},
        ),
    ]
    sync_policy: dict[str, Any] = {"syncOptions": ["PruneLast=true"]}
    if auto:
        sync_policy = {
            "automated": {"prune": True, "selfHeal": True},
            "syncOptions": ["PruneLast=true"],
            "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"}},
        }
    return {
        "apiVersion": API_VERSION,
        "kind": "ApplicationSet",
        "metadata": {
            "name": f"meshgen-{env}",
            "namespace": namespace,
            "labels": {MANAGED_BY: "meshgen", ENV_LABEL: env},
        },
        "spec": {
            "goTemplate": True,
            "goTemplateOptions": ["missingkey=error"],
            "generators": generators,
            "template": {
                "metadata": {
                    "name": "{{.values.name}}",
                    "labels": {
                        MANAGED_BY: "meshgen",
                        ENV_LABEL: env,
                        NAMESPACE_LABEL: "{{.values.namespace}}",
                        SERVICE_LABEL: "{{.values.service}}",
                        SCOPE_LABEL: "{{.values.scope}}",
                    },
                    "annotations": {UNIT_ANNOTATION: "{{.values.unit}}"},
                    "finalizers": [ARGOCD_FINALIZER],
                },
                "spec": {
                    "project": project,
                    "source": {"repoURL": url, "targetRevision": revision, "path": "{{.path.path}}"},
                    "destination": {**destination, "namespace": "{{.values.destinationNamespace}}"},
                    "syncPolicy": sync_policy,
                },
            },
            # Deleting the ApplicationSet (e.g. to re-bootstrap) must not delete the mesh config.
            "syncPolicy": {"preserveResourcesOnDeletion": True},
        },
    }


@click.group()
def bootstrap() -> None:
    """Objects that connect meshgen to the platform around it (Argo CD)."""


@bootstrap.command("argocd")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path), default=".", required=False)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the YAML here instead of standard output.")
@click.option("--repo-url", help="The environment repository as Argo CD clones it (default: envRepo.url; "
              "required when envRepo.url is a local path).")
@click.option("--env", "envs", multiple=True, metavar="ENV", help="Only this environment (repeatable).")
@click.option("--auto-sync", "auto_sync", multiple=True, metavar="ENV",
              help="Automated sync with prune and selfHeal for this environment (repeatable); others sync by hand.")
@click.option("--project", default="default", show_default=True, help="Argo CD project of the Applications.")
@click.option("--namespace", "argocd_namespace", help="Namespace of the ApplicationSets (default: argocd.namespace "
              "from meshgen.yaml, else argocd).")
@click.option("--dest-server", help=f"Destination cluster API URL (default {DEFAULT_SERVER}).")
@click.option("--dest-name", help="Destination cluster by its Argo CD name (instead of --dest-server).")
@click.option("--revision", help="Branch of the environment repository (default: envRepo.branch).")
def argocd(root: Path, out: Path | None, repo_url: str | None, envs: tuple[str, ...], auto_sync: tuple[str, ...],
           project: str, argocd_namespace: str | None, dest_server: str | None, dest_name: str | None,
           revision: str | None) -> None:
    """Print Argo CD ApplicationSets (one per environment) for the environment repository."""
    from meshgen.blueprint.loading import load_config
    from meshgen.diagnostics import BlueprintError
    from meshgen.pipeline import application_name_errors
    from meshgen.render.yamlout import dump_all

    try:
        config, _ = load_config(root)
        clashes = application_name_errors(root, config)
        if clashes:
            raise BlueprintError(clashes)
    except BlueprintError as exc:
        for d in exc.diagnostics:
            click.echo(str(d), err=True)
        raise SystemExit(1) from None
    docs = application_sets(
        config, repo_url=repo_url, envs=list(envs), auto_sync=auto_sync, project=project,
        argocd_namespace=argocd_namespace, dest_server=dest_server, dest_name=dest_name, revision=revision,
    )
    text = dump_all(docs)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"meshgen: {len(docs)} ApplicationSet(s) written to {out}", err=True)
