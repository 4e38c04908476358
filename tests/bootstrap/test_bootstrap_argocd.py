"""`meshgen bootstrap argocd`: strict schema checks, generator paths, names and labels.

The expansion test plays Argo CD's part: it matches the git directory generators against a
folder list the way the controller does (Go `path.Match`: `*` never crosses `/`, excluded
patterns win), templates the generator `values`, then the Application template, with Go
template semantics for the only two forms meshgen writes: `{{.a.b}}` and
`{{index .a.b N}}`. The resulting Application names must be the ones the rollout API
computes (`application_name`, i.e. `argocd.nameTemplate` filled by str.format).
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_schema import validate_manifest

from meshgen.argocd.source import Locator
from meshgen.blueprint.config import Config
from meshgen.bootstrap import (
    BootstrapError,
    application_name,
    application_sets,
)

REPO_URL = "https://git.example.com/platform/env.git"

CONFIG = {
    "environments": {
        "staging": {"mesh": "istio", "path": "staging"},
        "production": {"mesh": "linkerd", "path": "clusters/prod"},
    },
    "envRepo": {"url": ".meshgen/env-repo", "branch": "main"},
}

FOLDERS = {
    "staging": [
        "staging/payments/api-service",
        "staging/payments/ledger",
        "staging/payments/_namespace",
        "staging/catalog/search",
        "staging/_mesh",
    ],
    "production": [
        "clusters/prod/payments/api-service",
        "clusters/prod/payments/_namespace",
        "clusters/prod/edge/web-gateway",
        "clusters/prod/_mesh",
    ],
}
NOISE = ["README", "staging/payments", "staging/catalog", "clusters", "clusters/prod", "clusters/prod/payments",
         "other/payments/x", "staging/payments/api-service/extra"]


def _config(**argocd: Any) -> Config:
    data = copy.deepcopy(CONFIG)
    if argocd:
        data["argocd"] = argocd
    return Config.model_validate(data)


# --- a small Argo CD ApplicationSet controller ------------------------------------------------


def _glob(pattern: str) -> re.Pattern[str]:
    """Go path.Match for the patterns meshgen writes: `*` matches within one segment."""
    return re.compile("".join("[^/]*" if c == "*" else re.escape(c) for c in pattern) + r"\Z")


_ACTION = re.compile(r"\{\{(.*?)\}\}")


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.lstrip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"missingkey=error: {dotted}")
        value = value[part]
    return value


def _go_template(text: str, params: dict[str, Any]) -> str:
    def action(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        if expr.startswith("."):
            return str(_lookup(params, expr))
        fn, *args = expr.split()
        if fn == "index" and len(args) == 2:
            return str(_lookup(params, args[0])[int(args[1])])
        raise AssertionError(f"template uses {expr!r}, which this test does not implement")

    return _ACTION.sub(action, text)


def _render(node: Any, params: dict[str, Any]) -> Any:
    if isinstance(node, str):
        return _go_template(node, params)
    if isinstance(node, list):
        return [_render(v, params) for v in node]
    if isinstance(node, dict):
        return {k: _render(v, params) for k, v in node.items()}
    return node


def expand(appset: dict[str, Any], folders: list[str]) -> list[dict[str, Any]]:
    spec = appset["spec"]
    assert spec["goTemplate"] is True and spec["goTemplateOptions"] == ["missingkey=error"]
    apps = []
    for gen in spec["generators"]:
        git = gen["git"]
        include = [_glob(d["path"]) for d in git["directories"] if not d.get("exclude")]
        exclude = [_glob(d["path"]) for d in git["directories"] if d.get("exclude")]
        for folder in sorted(folders):
            if not any(p.match(folder) for p in include) or any(p.match(folder) for p in exclude):
                continue
            segments = folder.split("/")
            params: dict[str, Any] = {"path": {"path": folder, "basename": segments[-1], "segments": segments}}
            params["values"] = {k: _go_template(v, params) for k, v in git["values"].items()}
            app = _render(spec["template"], params)
            apps.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                         "metadata": {**app["metadata"], "namespace": appset["metadata"]["namespace"]},
                         "spec": app["spec"]})
    return apps


def _unit(folder: str, env: str, config: Config) -> tuple[str, str]:
    rest = folder[len(config.env_path(env)) + 1:].split("/")
    return ("", "_mesh") if rest == ["_mesh"] else (rest[0], rest[1])


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", [None, "{service}-{env}", "{namespace}-{service}-{env}", "mg-{env}.{service}"])
def test_expanded_applications_have_the_names_the_api_expects(template: str | None) -> None:
    config = _config(nameTemplate=template) if template else _config()
    appsets = application_sets(config, repo_url=REPO_URL)
    assert [a["metadata"]["name"] for a in appsets] == ["meshgen-staging", "meshgen-production"]
    for appset in appsets:
        env = appset["metadata"]["labels"]["meshgen.dev/env"]
        apps = expand(appset, FOLDERS[env] + NOISE)
        assert sorted(a["spec"]["source"]["path"] for a in apps) == sorted(FOLDERS[env])
        for app in apps:
            folder = app["spec"]["source"]["path"]
            namespace, service = _unit(folder, env, config)
            expected = application_name(config, env, namespace, service)
            assert app["metadata"]["name"] == expected
            if not service.startswith("_"):  # the rollout API's own lookup
                locator = Locator.from_config(config.argocd) if config.argocd else Locator()
                assert expected == locator.name_for(env, namespace, service)
            labels = app["metadata"]["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "meshgen"
            assert labels["meshgen.dev/env"] == env
            assert labels["meshgen.dev/namespace"] == namespace
            assert labels["meshgen.dev/service"] == ("" if service.startswith("_") else service)
            assert labels["meshgen.dev/scope"] == {"_mesh": "mesh", "_namespace": "namespace"}.get(service, "service")
            assert app["metadata"]["annotations"]["meshgen.dev/unit"] == f"{env}/{namespace}/{service}"
            mesh_ns = "istio-system" if env == "staging" else "linkerd"
            assert app["spec"]["destination"]["namespace"] == (mesh_ns if service == "_mesh" else namespace)
            assert app["spec"]["source"] == {"repoURL": REPO_URL, "targetRevision": "main", "path": folder}
            # the expanded Application is a valid Application (finalizers are Argo CD's, not a rendering's)
            checked = copy.deepcopy(app)
            assert checked["metadata"].pop("finalizers") == ["resources-finalizer.argocd.argoproj.io"]
            validate_manifest(checked)
        names = [a["metadata"]["name"] for a in apps]
        assert len(names) == len(set(names)), names


def test_application_sets_validate_strictly() -> None:
    for auto in ((), ("staging", "production")):
        for doc in application_sets(_config(namespace="gitops"), repo_url=REPO_URL, auto_sync=auto):
            validate_manifest(doc)
            assert doc["metadata"]["namespace"] == "gitops"
    for doc in application_sets(_config(), repo_url=REPO_URL, dest_name="prod-cluster", project="mesh"):
        validate_manifest(doc)
        assert doc["spec"]["template"]["spec"]["destination"] == {
            "name": "prod-cluster", "namespace": "{{.values.destinationNamespace}}"}
        assert doc["spec"]["template"]["spec"]["project"] == "mesh"


def test_generator_paths_per_environment() -> None:
    staging, production = application_sets(_config(), repo_url=REPO_URL)
    dirs = [g["git"]["directories"] for g in staging["spec"]["generators"]]
    assert dirs == [
        [{"path": "staging/*/*"}, {"path": "staging/*/_namespace", "exclude": True},
         {"path": "staging/_mesh/*", "exclude": True}],
        [{"path": "staging/*/_namespace"}],
        [{"path": "staging/_mesh"}],
    ]
    values = production["spec"]["generators"][0]["git"]["values"]
    assert values["namespace"] == "{{index .path.segments 2}}"  # clusters/prod/<namespace>/<service>
    assert values["name"] == "{{.path.basename}}-production"
    for gen in staging["spec"]["generators"] + production["spec"]["generators"]:
        assert gen["git"]["repoURL"] == REPO_URL and gen["git"]["revision"] == "main"


def test_auto_sync_only_where_asked() -> None:
    staging, production = application_sets(_config(), repo_url=REPO_URL, auto_sync=["production"])
    assert "automated" not in staging["spec"]["template"]["spec"]["syncPolicy"]
    assert production["spec"]["template"]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert staging["spec"]["syncPolicy"] == {"preserveResourcesOnDeletion": True}


def test_errors() -> None:
    with pytest.raises(BootstrapError, match="local path"):
        application_sets(_config())
    with pytest.raises(BootstrapError, match="unknown environment"):
        application_sets(_config(), repo_url=REPO_URL, auto_sync=["prod"])
    with pytest.raises(BootstrapError, match="team"):
        application_sets(_config(nameTemplate="{team}-{service}"), repo_url=REPO_URL)
    with pytest.raises(BootstrapError, match="unknown placeholder"):
        application_sets(_config(nameTemplate="{svc}-{env}"), repo_url=REPO_URL)
    with pytest.raises(BootstrapError, match="must contain"):
        application_sets(_config(nameTemplate="{env}"), repo_url=REPO_URL)
    # a git URL in meshgen.yaml needs no --repo-url
    data = copy.deepcopy(CONFIG)
    data["envRepo"]["url"] = "git@git.example.com:platform/env.git"
    assert application_sets(Config.model_validate(data))[0]["spec"]["generators"][0]["git"]["repoURL"] == (
        "git@git.example.com:platform/env.git")


def test_cli(tmp_path: Path) -> None:
    root = tmp_path / "bp"
    root.mkdir()
    (root / "meshgen.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    cmd = [sys.executable, "-m", "meshgen", "bootstrap", "argocd", str(root)]
    failed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and "--repo-url" in failed.stderr
    out = tmp_path / "appsets.yaml"
    ok = subprocess.run([*cmd, "--repo-url", REPO_URL, "--auto-sync", "staging", "--out", str(out)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["metadata"]["name"] for d in docs] == ["meshgen-staging", "meshgen-production"]
    assert docs == application_sets(_config(), repo_url=REPO_URL, auto_sync=["staging"])
    one = subprocess.run([*cmd, "--repo-url", REPO_URL, "--env", "production"], capture_output=True, text=True, check=False)
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(one.stdout)] == ["meshgen-production"]
