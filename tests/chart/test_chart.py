"""charts/meshgen: lint, render with default and full values, validate every document strictly.

Core kinds go through kubernetes-validate (1.33, strict); the ServiceMonitor through the
prometheus-operator CRD schema made strict (tests/k8s_schema.validate_manifest does both).
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_support import CHART, FULL_VALUES, RELEASE, run_helm, template, values
from k8s_schema import validate_manifest

from meshgen.blueprint.config import Config
from meshgen.settings import _SECRET_FIELDS, Settings, webhook_kinds

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
WORKLOADS = {"Deployment", "StatefulSet"}
VARIANTS = {
    "default": [],
    "full": ["-f", str(FULL_VALUES)],
    "public-git": ["--set", "blueprints.git.url=https://git.example.com/platform/blueprints.git"],
    "external-redis": ["--set", "redis.enabled=false", "--set", "redis.external.existingSecret=redis-url"],
    "minimal": ["--set", "api.enabled=false", "--set", "beat.enabled=false", "--set", "networkPolicy.enabled=false",
                "--set", "redis.external.url=redis://redis.example:6379/1", "--set", "redis.enabled=false",
                "--set", "blueprints.existingConfigMap=my-meshgen-yaml"],
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, template(*VARIANTS[request.param])


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [d for d in _by_kind(docs, kind) if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    assert len(found) == 1, f"{kind} {component}: {len(found)} found"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- lint and schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "full", "public-git"])
def test_helm_lint_strict(variant: str) -> None:
    out = run_helm("lint", "--strict", str(CHART), *VARIANTS[variant]).stdout
    assert "0 chart(s) failed" in out


def test_values_schema_accepts_both_values_files_and_rejects_typos() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for path in (CHART / "values.yaml", FULL_VALUES):
        assert not list(validator.iter_errors(values(path))), path
    for bad in (("api", "replicsa"), ("secrets", "forgeTokne"), ("redis", "persistence", "sise"), ("imagee",)):
        doc = copy.deepcopy(values())
        node = doc
        for key in bad[:-1]:
            node = node[key]
        node[bad[-1]] = 1
        errors = [e.message for e in validator.iter_errors(doc)]
        assert any(repr(bad[-1]) in m and "Additional properties" in m for m in errors), errors


@pytest.mark.parametrize("setting", ["api.replicsa=2", "secrets.forgeToken.vaule=x", "worker.autoscaling.enabeld=true"])
def test_helm_refuses_a_typo(setting: str) -> None:
    proc = run_helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0
    assert "additional properties" in proc.stderr and repr(setting.split("=")[0].rsplit(".", 1)[1]) in proc.stderr


def test_meshgen_yaml_in_values_is_a_valid_config() -> None:
    for path in (CHART / "values.yaml", FULL_VALUES):
        Config.model_validate(values(path)["blueprints"]["config"])


# --- every rendered document -------------------------------------------------------------------


def test_every_document_validates_strictly(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    variant, docs = rendered
    assert docs
    problems = []
    for doc in docs:
        try:
            validate_manifest(doc)
        except AssertionError as exc:
            problems.append(str(exc))
    assert not problems, f"{variant}:\n" + "\n".join(problems)


def test_standard_labels(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert all(k in labels for k in STANDARD_LABELS), (doc["kind"], doc["metadata"]["name"], labels)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "meshgen"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if doc["kind"] in WORKLOADS:
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert all(k in pod_labels for k in STANDARD_LABELS)
            assert doc["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_restrictive_security_context(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] in (True, False)
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], c["name"]
            if c["name"] in ("api", "worker", "beat"):
                assert "emptyDir" in volumes[mounts["/var/lib/meshgen/state"]]
                assert _env(c)["MESHGEN_STATE_DIR"] == "/var/lib/meshgen/state"
                assert "resources" in c and c["resources"]["requests"]


# --- components ----------------------------------------------------------------------------------


def test_components_and_commands() -> None:
    docs = template()
    api = _one(docs, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    assert api["args"] == ["serve"]
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert _env(api)["MESHGEN_HOST"] == "0.0.0.0" and _env(api)["MESHGEN_PORT"] == "8080"
    worker = _one(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    assert worker["containers"][0]["args"] == ["worker"]
    assert [c["name"] for c in worker["initContainers"]] == ["require-blueprints-url"]  # no URL by default
    beat = _one(docs, "Deployment", "beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    c = beat["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["celery"] and c["args"][:3] == ["-A", "worker.app", "beat"]
    assert "/var/lib/meshgen/state/celerybeat-schedule" in c["args"]
    assert _one(docs, "StatefulSet", "redis")["spec"]["replicas"] == 1
    for comp in ("api", "worker", "beat"):
        container = _one(docs, "Deployment", comp)["spec"]["template"]["spec"]["containers"][0]
        env = _env(container)
        assert env["MESHGEN_REDIS_URL"] == f"redis://{RELEASE}-meshgen-redis:6379/0"
        assert env["MESHGEN_ROOT"] == "/var/lib/meshgen/blueprints"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/var/lib/meshgen/blueprints/meshgen.yaml"]["subPath"] == "meshgen.yaml"
        # Settings reads every variable the chart sets
        names = {n[len("MESHGEN_"):].lower() for n in env if n.startswith("MESHGEN_") and not n.endswith("_FILE")}
        assert names <= set(Settings.model_fields), names - set(Settings.model_fields)
    # the default values create no Secret, no Ingress, no HPA, no ServiceMonitor, no RBAC
    assert not {d["kind"] for d in docs} & {"Secret", "Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "Role"}
    config = _by_kind(docs, "ConfigMap")[0]
    assert Config.model_validate(yaml.safe_load(config["data"]["meshgen.yaml"]))


def test_full_values() -> None:
    docs = template("-f", str(FULL_VALUES))
    kinds = {d["kind"] for d in docs}
    assert {"Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "Role", "RoleBinding", "NetworkPolicy",
            "Secret", "StatefulSet", "ServiceAccount", "ConfigMap", "Service", "Deployment"} <= kinds
    sm = _by_kind(docs, "ServiceMonitor")[0]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics" and sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    api_service = _one(docs, "Service", "api")
    assert sm["spec"]["selector"]["matchLabels"].items() <= api_service["metadata"]["labels"].items()
    hpa = _by_kind(docs, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == _one(docs, "Deployment", "worker")["metadata"]["name"]
    assert "replicas" not in _one(docs, "Deployment", "worker")["spec"]  # the HPA owns it
    sts = _one(docs, "StatefulSet", "redis")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    image = _one(docs, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith("@sha256:" + "0123456789abcdef" * 4)
    # RBAC only when asked, and then the token is mounted
    api_pod = _one(docs, "Deployment", "api")["spec"]["template"]["spec"]
    assert api_pod["automountServiceAccountToken"] is True
    worker = _one(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    assert "initContainers" not in worker  # a private repository is fetched with its token on every sync
    worker_env = _env(worker["containers"][0])
    assert worker_env["MESHGEN_BLUEPRINTS_REPO"] == "example/blueprints"
    assert worker_env["MESHGEN_BLUEPRINTS_BRANCH"] == "main"
    assert worker_env["MESHGEN_BLUEPRINTS_URL"] == "https://github.com/example/blueprints.git"
    assert worker_env["MESHGEN_BLUEPRINTS_USERNAME"] == "x-access-token"
    assert worker_env["MESHGEN_BLUEPRINTS_TOKEN_FILE"] == "/etc/meshgen/secrets/blueprints-token"
    # the GitHub App's key file reaches the setting envRepo.forge.app needs
    assert worker_env["MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE"] == "/etc/meshgen/secrets/github-app-private-key"
    config = Config.model_validate(yaml.safe_load(_one(docs, "ConfigMap", "config")["data"]["meshgen.yaml"]))
    assert config.env_repo.forge.app is not None and config.env_repo.forge.app.installation_id == 7890123


def test_network_policies() -> None:
    docs = template("-f", str(FULL_VALUES))
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in _by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"api", "worker", "beat", "redis"}
    assert policies["worker"]["spec"]["ingress"] == [] and policies["beat"]["spec"]["ingress"] == []
    assert policies["api"]["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(policies["api"]["spec"]["ingress"][0]["from"]) == 2
    redis_from = policies["redis"]["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert redis_from == {"app.kubernetes.io/name": "mg", "app.kubernetes.io/instance": RELEASE}
    for comp in ("api", "worker", "beat"):
        spec = policies[comp]["spec"]
        assert "Egress" in spec["policyTypes"]
        assert {"port": 6380, "protocol": "TCP"} in [p for rule in spec["egress"] for p in rule.get("ports", [])]


def _flat_secrets(secrets: dict[str, Any]) -> dict[str, dict[str, str]]:
    """secrets.* by name, with secrets.webhookSecrets.<kind> as webhookSecret<Kind> (the chart's view)."""
    flat = {name: s for name, s in secrets.items() if name != "webhookSecrets"}
    for kind, s in secrets["webhookSecrets"].items():
        flat[f"webhookSecret{kind.title()}"] = {"value": "", "existingSecret": "", "key": f"webhook-secret-{kind}", **s}
    return flat


def test_webhook_secret_kinds_are_the_registered_forges() -> None:
    """The chart's secrets.webhookSecrets keys (schema and defaults) are meshgen's forges with webhooks."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = schema["properties"]["secrets"]["properties"]["webhookSecrets"]["properties"]
    assert list(allowed) == webhook_kinds(), "update charts/meshgen/values.schema.json (secrets.webhookSecrets)"
    legacy = [k for k in schema["properties"]["secrets"]["properties"] if k.startswith("webhookSecret")]
    assert legacy == ["webhookSecrets", "webhookSecretGithub", "webhookSecretGitlab", "webhookSecretGitea"]
    assert list(values()["secrets"]["webhookSecrets"]) == webhook_kinds()
    for kind, entry in allowed.items():
        assert entry["description"] == f"MESHGEN_WEBHOOK_SECRET_{kind.upper()}_FILE (api)"


def test_a_webhook_secret_of_any_kind_is_mounted_for_the_api() -> None:
    """The templates read secrets.webhookSecrets generically: file, variable and Secret key derive from the kind."""
    docs = template("--set", "secrets.webhookSecrets.gitea.value=s3")
    env = _env(_one(docs, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0])
    assert env["MESHGEN_WEBHOOK_SECRET_GITEA_FILE"] == "/etc/meshgen/secrets/webhook-secret-gitea"
    secret = _by_kind(docs, "Secret")[0]
    assert base64.b64decode(secret["data"]["webhook-secret-gitea"]).decode() == "s3"
    proc = run_helm("template", RELEASE, str(CHART), "--set", "secrets.webhookSecrets.bitbucket.value=x", check=False)
    assert proc.returncode != 0 and "bitbucket" in proc.stderr  # not a registered kind: the schema refuses it


@pytest.mark.parametrize("kind", ["github", "gitlab", "gitea"])
def test_moved_webhook_secret_values_say_where_they_went(kind: str) -> None:
    """Values written for the chart before webhook secrets became a map fail with the new place."""
    old = f"webhookSecret{kind.title()}"
    proc = run_helm("template", RELEASE, str(CHART), "--set", f"secrets.{old}.existingSecret=hooks", check=False)
    assert proc.returncode != 0 and f"secrets.{old} moved: put it under secrets.webhookSecrets.{kind}" in proc.stderr
    empty = template("--set", f"secrets.{old}.value=")  # the old default block, copied empty: nothing to move
    assert f"MESHGEN_WEBHOOK_SECRET_{kind.upper()}_FILE" not in _env(
        _one(empty, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0])


def test_secrets_are_files_never_environment_values() -> None:
    docs = template("-f", str(FULL_VALUES))
    full = _flat_secrets(values(FULL_VALUES)["secrets"])
    secret = _by_kind(docs, "Secret")[0]
    created = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert created == {s["key"]: s["value"] for s in full.values() if s["value"] and not s["existingSecret"]}
    expected = {
        "api": {"api_read_tokens", "api_write_tokens", *(f"webhook_secret_{k}" for k in webhook_kinds()),
                "argocd_token"},
        # every git credential goes to the worker only (it alone fetches and pushes); gitToken has no
        # variable: meshgen.yaml's envRepo.git.tokenFile names its file (test_git_token_file)
        "worker": {"forge_token", "argocd_token", "blueprints_token", "git_ssh_key", "git_ssh_key_passphrase",
                   "git_known_hosts", "github_app_private_key"},
        "beat": set(),
    }
    for comp, names in expected.items():
        pod = _one(docs, "Deployment", comp)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = _env(container)
        files = {n[len("MESHGEN_"):-len("_FILE")].lower(): v for n, v in env.items() if n.endswith("_FILE")}
        assert set(files) == names, comp
        # each variable is a setting: a secret with a _FILE variant, or a *_file path setting
        webhook_secrets = {f"webhook_secret_{k}" for k in webhook_kinds()}
        assert all(n in _SECRET_FIELDS or n in webhook_secrets or f"{n}_file" in Settings.model_fields
                   for n in names), names
        assert not any(isinstance(v, dict) and "secretKeyRef" in v for v in env.values())
        if not names:
            assert "secrets" not in {v["name"] for v in pod["volumes"]}
            continue
        mount = {m["name"]: m for m in container["volumeMounts"]}["secrets"]
        assert mount["readOnly"] is True
        projected = {v["name"]: v for v in pod["volumes"]}["secrets"]["projected"]
        assert projected["defaultMode"] == 0o440  # readable by the pod's fsGroup only (SSH keys too)
        sources = projected["sources"]
        by_path = {s["secret"]["items"][0]["path"]: s["secret"] for s in sources}
        for field, path in files.items():
            camel = field.split("_")[0] + "".join(p.title() for p in field.split("_")[1:])
            item = full[camel]
            source = by_path[Path(path).name]
            assert Path(path).parent == Path(mount["mountPath"])
            assert source["name"] == (item["existingSecret"] or secret["metadata"]["name"])
            assert source["items"][0]["key"] == item["key"]


def test_worker_fetches_the_blueprints_repository_on_every_sync() -> None:
    docs = template(*VARIANTS["public-git"])
    worker = _one(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    assert "initContainers" not in worker  # nothing is cloned at pod start
    env = _env(worker["containers"][0])
    assert env["MESHGEN_BLUEPRINTS_URL"] == "https://git.example.com/platform/blueprints.git"
    assert env["MESHGEN_BLUEPRINTS_BRANCH"] == "main" and env["MESHGEN_STATE_DIR"] == "/var/lib/meshgen/state"
    assert "blueprints_url" in Settings.model_fields
    for comp in ("api", "beat"):
        other = _one(docs, "Deployment", comp)["spec"]["template"]["spec"]["containers"][0]
        assert "MESHGEN_BLUEPRINTS_URL" not in _env(other)
    # the guard stays: without a URL an init container refuses to start the worker
    default = _one(template(), "Deployment", "worker")["spec"]["template"]["spec"]
    assert [c["name"] for c in default["initContainers"]] == ["require-blueprints-url"]
    assert "MESHGEN_BLUEPRINTS_URL" not in _env(default["containers"][0])


def test_the_guard_init_container_says_what_to_set() -> None:
    init = _one(template(), "Deployment", "worker")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"] == ["python", "-c"]
    proc = subprocess.run([sys.executable, "-c", *init["args"]], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "set the Helm value blueprints.git.url" in proc.stderr


def test_git_token_file() -> None:
    """secrets.gitToken is mounted, and meshgen.yaml's envRepo.git.tokenFile points at it."""
    docs = template("-f", str(FULL_VALUES))
    worker = _one(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    sources = {v["name"]: v for v in worker["volumes"]}["secrets"]["projected"]["sources"]
    assert {"key": "git-token", "path": "git-token"} in [i for s in sources for i in s["secret"]["items"]]
    assert "MESHGEN_GIT_TOKEN_FILE" not in _env(worker["containers"][0])
    text = _one(docs, "ConfigMap", "config")["data"]["meshgen.yaml"]
    assert yaml.safe_load(text)["envRepo"]["git"] == {"tokenFile": "/etc/meshgen/secrets/git-token"}
    assert Config.model_validate(yaml.safe_load(text)).env_repo.git is not None
    # a config that says where the git token comes from is left as it is
    docs = template("-f", str(FULL_VALUES), "--set", "blueprints.config.envRepo.git.tokenEnv=GIT_TOKEN")
    text = _one(docs, "ConfigMap", "config")["data"]["meshgen.yaml"]
    assert yaml.safe_load(text)["envRepo"]["git"] == {"tokenEnv": "GIT_TOKEN"}
    # without gitToken the config is the values' config, untouched
    default = _one(template(), "ConfigMap", "config")["data"]["meshgen.yaml"]
    assert yaml.safe_load(default) == values()["blueprints"]["config"]


@pytest.mark.parametrize("setting", ["blueprints.git.existingSecret=blueprints-git", "blueprints.git.tokenKey=token"])
def test_moved_blueprints_token_values_say_where_they_went(setting: str) -> None:
    proc = run_helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0 and "secrets.blueprintsToken.existingSecret" in proc.stderr


@pytest.mark.parametrize("url", ["https://x-access-token:ghs_secret@github.com/acme/bp.git",
                                 "https://ghs_secret@github.com/acme/bp.git", "ssh://git:pw@github.com/acme/bp.git"])
def test_a_blueprints_url_with_credentials_fails_the_install(url: str) -> None:
    proc = run_helm("template", RELEASE, str(CHART), "--set", f"blueprints.git.url={url}", check=False)
    assert proc.returncode != 0 and "secrets.blueprintsToken" in proc.stderr and "ghs_secret" not in proc.stderr


def test_ssh_remote_secrets() -> None:
    docs = template("--set", "blueprints.git.url=git@github.com:example/blueprints.git",
                    "--set", "secrets.gitSshKey.existingSecret=meshgen-ssh",
                    "--set", "secrets.gitKnownHosts.existingSecret=meshgen-ssh",
                    "--set", "secrets.gitKnownHosts.key=known_hosts")
    worker = _one(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    env = _env(worker["containers"][0])
    assert env["MESHGEN_BLUEPRINTS_URL"] == "git@github.com:example/blueprints.git"
    assert env["MESHGEN_GIT_SSH_KEY_FILE"] == "/etc/meshgen/secrets/git-ssh-key"
    assert env["MESHGEN_GIT_KNOWN_HOSTS_FILE"] == "/etc/meshgen/secrets/git-known-hosts"
    assert "MESHGEN_GIT_SSH_KEY_PASSPHRASE_FILE" not in env and "MESHGEN_BLUEPRINTS_USERNAME" not in env
    sources = {v["name"]: v for v in worker["volumes"]}["secrets"]["projected"]["sources"]
    assert [(s["secret"]["name"], s["secret"]["items"]) for s in sources] == [
        ("meshgen-ssh", [{"key": "git-ssh-key", "path": "git-ssh-key"}]),
        ("meshgen-ssh", [{"key": "known_hosts", "path": "git-known-hosts"}]),
    ]
    for comp in ("api", "beat"):  # only the worker holds git credentials
        other = _one(docs, "Deployment", comp)["spec"]["template"]["spec"]["containers"][0]
        assert not any(n.startswith("MESHGEN_GIT_") for n in _env(other))


def test_external_redis() -> None:
    docs = template(*VARIANTS["external-redis"])
    assert not _by_kind(docs, "StatefulSet")
    env = _env(_one(docs, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0])
    assert env["MESHGEN_REDIS_URL"] == {"secretKeyRef": {"name": "redis-url", "key": "redis-url"}}
    proc = run_helm("template", RELEASE, str(CHART), "--set", "redis.enabled=false", check=False)
    assert proc.returncode != 0 and "redis.external.url" in proc.stderr


def test_notes() -> None:
    proc = run_helm("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", "meshgen", check=False)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "port-forward svc/mg-meshgen-api" in notes
    assert "blueprints.git.url is not set" in notes
    assert "meshgen bootstrap argocd" in notes
    assert "exec deploy/mg-meshgen-worker -- meshgen doctor /var/lib/meshgen/blueprints" in notes
    for args, says in ((VARIANTS["public-git"], "Every sync fetches https://git.example.com/platform/blueprints.git"),
                       (VARIANTS["full"], "with secrets.blueprintsToken")):
        proc = run_helm("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", "meshgen", *args)
        notes = proc.stdout.split("NOTES:", 1)[1]
        assert says in notes and "rollout restart" not in notes and "blueprints.git.url is not set" not in notes
    proc = run_helm("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", "meshgen",
                    "--set", "secrets.gitToken.existingSecret=git", "--set", "blueprints.existingConfigMap=mine")
    assert "set envRepo.git.tokenFile to that\npath in the meshgen.yaml of ConfigMap mine" in proc.stdout
