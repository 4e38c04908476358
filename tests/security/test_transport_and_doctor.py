"""Git transport URLs and `meshgen doctor` under attack, through the real command.

* A URL git would read as an option (`--upload-pack=...`) or as a remote helper (`ext::sh -c ...`
  runs a command) is refused with a message naming the setting, nothing run.
* `meshgen doctor` against servers that echo whatever credentials they get back into their error
  answers never prints a token.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port

SECRETS = {"MESHGEN_FORGE_TOKEN": "ghp_FORGE0secret0123456789", "MESHGEN_ARGOCD_TOKEN": "ARGO0secret0123456789",
           "MESHGEN_BLUEPRINTS_TOKEN": "BP0secret0123456789", "MESHGEN_BLUEPRINTS_FORGE_TOKEN": "BPF0secret0123456789",
           "PROM_TOKEN": "PROM0secret0123456789"}


def doctor(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", "doctor", str(root)], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "MESHGEN_REDIS_URL": "redis://127.0.0.1:1/0", **env},
                          cwd=root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "blueprints").mkdir()
    (tmp_path / "meshgen.yaml").write_text("environments:\n  staging: {}\n")
    key = tmp_path / "deploy-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "known_hosts").write_text("example.com ssh-ed25519 "
                                          "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    return tmp_path


@pytest.mark.parametrize(("url", "says"), [
    ("--upload-pack=touch PWNED;true:x", "starts with '-'"),
    ("-oProxyCommand=touch PWNED;:x", "starts with '-'"),
    ("ext::sh -c touch% PWNED", "uses git's remote-helper syntax ('ext::')"),
    ("fd::3", "uses git's remote-helper syntax ('fd::')"),
])
@pytest.mark.parametrize("where", ["MESHGEN_BLUEPRINTS_URL", "envRepo.url"])
def test_git_urls_that_would_run_a_command_are_refused(root: Path, url: str, says: str, where: str) -> None:
    env = {"MESHGEN_GIT_SSH_KEY_FILE": str(root / "deploy-key"), "MESHGEN_GIT_KNOWN_HOSTS_FILE": str(root / "known_hosts")}
    if where == "envRepo.url":
        (root / "meshgen.yaml").write_text(f"environments:\n  staging: {{}}\nenvRepo:\n  url: '{url}'\n")
    else:
        env["MESHGEN_BLUEPRINTS_URL"] = url
    run = doctor(root, **env)
    assert run.returncode == 1 and "Traceback" not in run.stderr + run.stdout
    assert f"{where} {says}" in run.stdout + run.stderr, run.stdout + run.stderr
    assert not list(root.rglob("PWNED*")) and not Path("PWNED").exists()


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers everything with an error that repeats the Authorization header and the path."""

    def _any(self) -> None:
        body = f"denied: {self.headers.get('Authorization')} at {self.path}".encode()
        self.send_response(401 if "info/refs" in self.path else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_doctor_never_prints_a_token_even_when_servers_echo_them(root: Path, echo: str) -> None:
    (root / "meshgen.yaml").write_text(f"""\
environments:
  staging: {{}}
envRepo:
  url: {echo}/acme/env.git
  forge: {{kind: github, owner: acme, repo: env, baseUrl: "{echo}/api/v3"}}
argocd: {{url: "{echo}"}}
prometheus: {{url: "{echo}", tokenEnv: PROM_TOKEN}}
""")
    run = doctor(root, MESHGEN_BLUEPRINTS_URL=f"{echo}/blueprints.git", MESHGEN_BLUEPRINTS_FORGE_URL=echo,
                 MESHGEN_ARGOCD_URL=echo, **SECRETS)
    out = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in out, out
    assert "✘ forge API" in out and "✘ blueprints repository" in out and "✘ Argo CD" in out, out
    for name, secret in SECRETS.items():
        assert secret not in out, f"{name} printed: {out}"
