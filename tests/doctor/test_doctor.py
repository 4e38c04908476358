"""`meshgen doctor` against real loopback servers: the GitHub/GitLab/Gitea fakes (REST + git smart
HTTP behind basic auth), a second git server for the blueprints repository, the Argo CD fake,
the real Redis, and closed ports for what is down. No output line may contain a token."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from argo_fakes import ArgoCDServer, application
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from forges._gitea_fake import GiteaFake
from forges._github_fake import GitHubFake
from forges._gitlab_fake import GitLabFake
from forges._gitrepo import BareRepo
from gitserver import Account, GitHttpServer
from helpers import free_port

from meshgen.cli import main
from meshgen.doctor import _Failed, prometheus_buildinfo, redact_url

FORGE_TOKEN = "mgtok_doctor_forge_5b2d4c6e8a0b1c2d3e4f5a6b9f3c1a7e"
WRONG_TOKEN = "mgtok_doctor_wrong_0b1c2d3e4f5a6b9f3c1a7e5b2d4c6e8a"
BLUEPRINTS_TOKEN = "mgtok_doctor_bp_3e4f5a6b9f3c1a7e5b2d4c6e8a0b1c2d"
ARGO_TOKEN = "mgtok_doctor_argo_a6b9f3c1a7e5b2d4c6e8a0b1c2d3e4f5"
REDIS_URL = "redis://127.0.0.1:6379/13"
ALL_SECRETS = (FORGE_TOKEN, WRONG_TOKEN, BLUEPRINTS_TOKEN, ARGO_TOKEN)


@dataclass
class Setup:
    root: Path
    forge: GitHubFake
    blueprints: GitHttpServer
    argo: ArgoCDServer
    env: dict[str, str | None]

    def write_config(self, **forge: Any) -> None:
        config = {
            "environments": {"staging": {}},
            "envRepo": {"url": self.forge.git_url,
                        "forge": {"kind": "github", "baseUrl": self.forge.url, "owner": "acme", "repo": "env",
                                  "tokenFile": str(self.root / "forge-token"), **forge}},
            "argocd": {"mode": "rest", "url": self.argo.url},
        }
        (self.root / "meshgen.yaml").write_text(json.dumps(config))

    def doctor(self, **env: str | None) -> tuple[int, list[str]]:
        result = CliRunner().invoke(main, ["doctor", str(self.root)], env={**self.env, **env})
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        for secret in ALL_SECRETS:
            assert secret not in result.output
        return result.exit_code, result.output.splitlines()


def _line(lines: list[str], name: str) -> str:
    found = [line for line in lines if line[2:].startswith(f"{name}:")]
    assert len(found) == 1, (name, lines)
    return found[0]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "forge-token").write_text(FORGE_TOKEN + "\n")
    (root / "blueprints-token").write_text(BLUEPRINTS_TOKEN + "\n")
    forge = GitHubFake(BareRepo(tmp_path / "srv" / "env.git"), FORGE_TOKEN).start()
    served = tmp_path / "bp"
    BareRepo(served / "blueprints.git").commit_files("main", {"meshgen.yaml": "environments: {staging: {}}\n"},
                                                     "blueprints")
    blueprints = GitHttpServer(served, [Account(BLUEPRINTS_TOKEN, "x-access-token", write=False)]).start()
    argo = ArgoCDServer(ARGO_TOKEN)
    argo.put(application("api-staging", labels={"app.kubernetes.io/managed-by": "meshgen"}))
    argo.put(application("someone-else"))  # not meshgen's: not listed
    env = {
        "MESHGEN_REDIS_URL": REDIS_URL,
        "MESHGEN_STATE_DIR": str(tmp_path / "state"),
        "MESHGEN_BLUEPRINTS_URL": blueprints.url("blueprints.git"),
        "MESHGEN_BLUEPRINTS_TOKEN_FILE": str(root / "blueprints-token"),
        "MESHGEN_ARGOCD_TOKEN": ARGO_TOKEN,
        "MESHGEN_FORGE_TOKEN": None, "MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE": None,
    }
    made = Setup(root, forge, blueprints, argo, env)
    made.write_config()
    try:
        yield made
    finally:
        forge.stop()
        blueprints.stop()
        argo.stop()
    assert not forge.violations, "\n".join(forge.violations)


def test_everything_configured_and_working(setup: Setup) -> None:
    code, lines = setup.doctor()
    assert code == 0, lines
    assert [line[0] for line in lines] == ["✔", "✔", "✔", "✔", "✔", "✔", "✔", "–"], lines
    assert "acme/env: the token can push and open pull requests" in _line(lines, "forge API")
    assert f"{setup.forge.git_url}: reachable with these credentials, branch main at" in \
        _line(lines, "environment repository (fetch)")
    assert "nothing was pushed" in _line(lines, "environment repository (push)")
    assert "branch main at" in _line(lines, "blueprints repository")
    assert "1 application(s)" in _line(lines, "Argo CD")
    assert _line(lines, "Redis") == f"✔ Redis: {REDIS_URL} answers PING"
    assert _line(lines, "Prometheus") == "– Prometheus: meshgen.yaml has no prometheus.url"
    # the git servers saw the configured credentials (not anonymous access)
    assert {entry[2] for entry in setup.forge.git.log} - {""} == {"x-access-token"}
    assert {entry[2] for entry in setup.blueprints.log} - {""} == {"x-access-token"}


def test_wrong_credentials_and_unreachable_services(setup: Setup) -> None:
    (setup.root / "forge-token").write_text(WRONG_TOKEN)
    (setup.root / "blueprints-token").write_text(WRONG_TOKEN)
    code, lines = setup.doctor(MESHGEN_ARGOCD_TOKEN=WRONG_TOKEN, MESHGEN_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert code == 1
    forge = _line(lines, "forge API")
    assert forge.startswith("✘") and "HTTP 401" in forge and "check that the token is valid" in forge
    fetch = _line(lines, "environment repository (fetch)")
    assert fetch.startswith("✘") and setup.forge.git_url in fetch
    assert _line(lines, "environment repository (push)").startswith("– environment repository (push): not checked")
    assert _line(lines, "blueprints repository").startswith("✘")
    assert "401" in _line(lines, "Argo CD") and "MESHGEN_ARGOCD_TOKEN" in _line(lines, "Argo CD")
    redis_line = _line(lines, "Redis")
    assert redis_line.startswith("✘") and "start Redis there or point MESHGEN_REDIS_URL at it" in redis_line


def test_push_refused_is_reported_apart_from_fetch(setup: Setup) -> None:
    setup.forge.git.accounts[:] = [Account(FORGE_TOKEN, "x-access-token", write=False)]
    setup.forge.repo_permissions["push"] = False
    code, lines = setup.doctor()
    assert code == 1
    assert _line(lines, "environment repository (fetch)").startswith("✔")
    assert _line(lines, "environment repository (push)").startswith("✘")
    forge = _line(lines, "forge API")
    assert forge.startswith("✘") and "can read acme/env but not push to it" in forge


def test_argocd_and_forge_down(setup: Setup) -> None:
    port = free_port()
    setup.write_config(baseUrl=f"http://127.0.0.1:{port}/api/v3")
    config = json.loads((setup.root / "meshgen.yaml").read_text())
    config["argocd"]["url"] = f"http://127.0.0.1:{free_port()}"
    (setup.root / "meshgen.yaml").write_text(json.dumps(config))
    code, lines = setup.doctor()
    assert code == 1
    assert _line(lines, "forge API").startswith("✘") and "network error" in _line(lines, "forge API")
    assert "unreachable" in _line(lines, "Argo CD") and "check argocd.url" in _line(lines, "Argo CD")


def test_bad_meshgen_yaml_skips_what_needs_it(setup: Setup) -> None:
    (setup.root / "meshgen.yaml").write_text("environments: {staging: {}}\nenvRepo: {forge: {kind: gihub}}\n")
    code, lines = setup.doctor()
    assert code == 1
    assert lines[0].startswith("✘ meshgen.yaml: meshgen.yaml:2:")
    assert [line.split(":")[0][2:] for line in lines] == ["meshgen.yaml", "blueprints repository", "Redis"]


def test_github_app(setup: Setup, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "app.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    setup.forge.enable_app("4242", 99, key.public_key())
    config = json.loads((setup.root / "meshgen.yaml").read_text())
    del config["envRepo"]["forge"]["tokenFile"]
    config["envRepo"]["forge"]["app"] = {"id": 4242, "installationId": 99}
    (setup.root / "meshgen.yaml").write_text(json.dumps(config))
    code, lines = setup.doctor(MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE=str(key_file))
    assert code == 0, lines
    assert "GitHub App 4242 (installation 99) can push and open pull requests" in _line(lines, "forge API")
    assert _line(lines, "environment repository (fetch)").startswith("✔")  # with the installation token
    assert _line(lines, "environment repository (push)").startswith("✔")
    for token in setup.forge.app_tokens:
        assert all(token not in line for line in lines)
    # an installation without Contents: write cannot push
    assert setup.forge.app is not None
    setup.forge.app["permissions"] = {"contents": "read", "pull_requests": "write", "metadata": "read"}
    code, lines = setup.doctor(MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE=str(key_file))
    assert code == 1
    assert "lacks write access to contents" in _line(lines, "forge API")
    # and without the key file setting, doctor says which setting is missing
    code, lines = setup.doctor()
    assert "MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE is not" in _line(lines, "forge API")


@pytest.mark.parametrize("kind", ["gitea", "gitlab"])
def test_gitea_and_gitlab_access(kind: str, tmp_path: Path) -> None:
    from meshgen.forges.base import ForgeError
    from meshgen.forges.gitea import GiteaForge
    from meshgen.forges.gitlab import GitLabForge

    fake: Any = (GiteaFake if kind == "gitea" else GitLabFake)(BareRepo(tmp_path / "env.git"), FORGE_TOKEN).start()
    try:
        forge: Any = (GiteaForge(fake.root, "acme", "env", token=FORGE_TOKEN, max_attempts=1) if kind == "gitea"
                      else GitLabForge("acme/platform/env", base_url=fake.root, token=FORGE_TOKEN, max_attempts=1))
        assert "can push and open" in forge.check_access()
        if kind == "gitea":
            fake.repo_permissions["push"] = False
            fix = "give the token's user write access"
        else:
            fake.access_levels = {"project_access": 20, "group_access": None}  # Reporter
            fix = "needs Developer (30) or more"
        with pytest.raises(ForgeError, match=fix.replace("(", r"\(").replace(")", r"\)")):
            forge.check_access()
        if kind == "gitlab":
            fake.access_levels = {"project_access": 20, "group_access": 40}  # a group Maintainer
            assert "access level 40" in forge.check_access()
        forge.close_connections()
    finally:
        fake.stop()
    assert not fake.violations, "\n".join(fake.violations)


class _Prometheus:
    """Prometheus' GET /api/v1/status/buildinfo, as its HTTP API documents it."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/api/v1/status/buildinfo":
                    body, status = {"status": "error", "errorType": "not_found"}, 404
                else:
                    body, status = {"status": "success", "data": {
                        "version": "3.5.0", "revision": "abc", "branch": "HEAD", "buildUser": "root@x",
                        "buildDate": "20251201-00:00:00", "goVersion": "go1.25"}}, 200
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_prometheus_check() -> None:
    prom = _Prometheus()
    try:
        assert prometheus_buildinfo(prom.url) == f"{prom.url}: Prometheus 3.5.0 answers"
        with pytest.raises(_Failed, match="not Prometheus' API; check prometheus.url"):
            prometheus_buildinfo(prom.url + "/sub")
    finally:
        prom.server.shutdown()
        prom.server.server_close()
    with pytest.raises(_Failed, match="unreachable .* check prometheus.url"):
        prometheus_buildinfo(f"http://127.0.0.1:{free_port()}")


def test_redact_url() -> None:
    assert redact_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://user:s3cret@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"


@pytest.mark.slow  # starts sshd
def test_ssh_environment_repository(setup: Setup, tmp_path: Path) -> None:
    """An ssh:// environment repository: checked with the key and known_hosts settings, against sshd."""
    from gitserver import SshServer

    served = tmp_path / "ssh-srv"
    BareRepo(served / "env.git")
    sshd = SshServer(tmp_path / "sshd", served)
    try:
        setup.write_config()
        config = json.loads((setup.root / "meshgen.yaml").read_text())
        config["envRepo"]["url"] = sshd.url("env.git")
        (setup.root / "meshgen.yaml").write_text(json.dumps(config))
        keys = {"MESHGEN_GIT_SSH_KEY_FILE": str(sshd.client_key), "MESHGEN_GIT_KNOWN_HOSTS_FILE": str(sshd.known_hosts)}
        code, lines = setup.doctor(**keys)
        assert code == 0, lines
        assert f"{sshd.url('env.git')}: reachable with these credentials, branch main at" in \
            _line(lines, "environment repository (fetch)")
        assert _line(lines, "environment repository (push)").startswith("✔")
        # a known_hosts file without the server's key: refused, never trusted on first use
        empty = tmp_path / "known_hosts"
        empty.write_text("")
        code, lines = setup.doctor(**{**keys, "MESHGEN_GIT_KNOWN_HOSTS_FILE": str(empty)})
        assert code == 1
        fetch = _line(lines, "environment repository (fetch)")
        assert fetch.startswith("✘") and "MESHGEN_GIT_KNOWN_HOSTS_FILE" in fetch
    finally:
        sshd.stop()


def test_argocd_kubernetes_mode(setup: Setup, tmp_path: Path) -> None:
    from argo_fakes import KubernetesServer

    kube = KubernetesServer(ARGO_TOKEN)
    kube.put(application("api-staging", labels={"app.kubernetes.io/managed-by": "meshgen"}))
    try:
        config = json.loads((setup.root / "meshgen.yaml").read_text())
        config["argocd"] = {"mode": "kubernetes", "namespace": "argocd",
                            "kubeconfig": str(kube.kubeconfig(tmp_path / "kubeconfig", ARGO_TOKEN))}
        (setup.root / "meshgen.yaml").write_text(json.dumps(config))
        code, lines = setup.doctor()
        assert code == 0, lines
        assert _line(lines, "Argo CD") == ("✔ Argo CD: Kubernetes namespace argocd (kubernetes): 1 application(s) "
                                           "labelled app.kubernetes.io/managed-by=meshgen readable")
        config["argocd"]["kubeconfig"] = str(kube.kubeconfig(tmp_path / "wrong", WRONG_TOKEN))
        (setup.root / "meshgen.yaml").write_text(json.dumps(config))
        code, lines = setup.doctor()
        assert code == 1 and "the credentials in the kubeconfig are not accepted" in _line(lines, "Argo CD")
    finally:
        kube.stop()
