"""`meshgen sync` end to end over authenticated transports: the environment repository behind real
smart HTTP (each forge's token convention) or real sshd, the blueprints repository fetched with
MESHGEN_BLUEPRINTS_TOKEN, the forge API on the fake GitHub / GitLab / Gitea servers, records in Redis.

Checked every time: the tokens appear in no output and in no file under the state folder (mirror
configs included); failures exit 3 with a message naming the repository, the operation and the fix,
and the job record ends `failed` with that message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from forges._gitea_fake import GiteaFake
from forges._github_fake import GitHubFake
from forges._gitlab_fake import GitLabFake
from forges._gitrepo import BareRepo
from forges._server import FakeForge
from gitserver import Account, SshServer, ssh_keygen
from sync_support import MESHGEN_YAML, REDIS_DB_URL, RedisNS, blueprint

from .conftest import BLUEPRINTS_TOKEN, TOKEN

pytestmark = pytest.mark.slow

_FAKES: dict[str, type[FakeForge]] = {"github": GitHubFake, "gitlab": GitLabFake, "gitea": GiteaFake}


@pytest.fixture
def blueprints_repo(served: Path) -> BareRepo:
    repo = BareRepo(served / "blueprints.git")
    repo.commit_files("main", {"meshgen.yaml": MESHGEN_YAML, "blueprints/cart.yaml": blueprint("cart", 10)},
                      "blueprints")
    return repo


def _forge_yaml(kind: str, fake: FakeForge) -> str:
    if kind == "github":
        return f"{{kind: github, owner: acme, repo: env, baseUrl: {fake.url}}}"
    if kind == "gitea":
        return f"{{kind: gitea, owner: acme, repo: env, baseUrl: {fake.root}}}"
    return f"{{kind: gitlab, project: acme/platform/env, baseUrl: {fake.root}}}"


def _root(tmp_path: Path, env_url: str, forge: str) -> Path:
    """ROOT with meshgen.yaml and blueprints/ (ignored when MESHGEN_BLUEPRINTS_URL is set: then fetched)."""
    root = tmp_path / "root"
    (root / "blueprints").mkdir(parents=True)
    (root / "meshgen.yaml").write_text(MESHGEN_YAML + f"envRepo:\n  url: {env_url}\n  forge: {forge}\n")
    (root / "blueprints" / "cart.yaml").write_text(blueprint("cart", 20))
    return root


def _sync(root: Path, rns: RedisNS, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESHGEN_")}
    return subprocess.run(
        [sys.executable, "-m", "meshgen", "sync", str(root)], capture_output=True, text=True, check=False,
        timeout=120, env={**base, "MESHGEN_REDIS_URL": REDIS_DB_URL, "MESHGEN_REDIS_PREFIX": rns.prefix, **env})


def _no_secret_anywhere(root: Path, run: subprocess.CompletedProcess[str], *secrets: str) -> None:
    state = root / ".meshgen"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name == "config" and "mirrors" in p.parts for p in files)  # the mirrors' configs are searched
    for secret in secrets:
        assert secret not in run.stdout and secret not in run.stderr
        leaked = [p for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"token found in {leaked}"


def _start(kind: str, origin: BareRepo) -> FakeForge:
    fake = _FAKES[kind](origin, TOKEN).start()
    # The blueprints repository lives on the same git server, readable with its own token.
    fake.git.accounts.append(Account(BLUEPRINTS_TOKEN, "x-access-token", write=False))
    return fake


@pytest.mark.parametrize("kind", ["github", "gitlab", "gitea"])
def test_sync_over_https_with_the_forge_token_and_a_blueprints_token(
        tmp_path: Path, origin: BareRepo, blueprints_repo: BareRepo, rns: RedisNS, kind: str) -> None:
    fake = _start(kind, origin)
    try:
        root = _root(tmp_path, fake.git_url, _forge_yaml(kind, fake))
        run = _sync(root, rns, MESHGEN_FORGE_TOKEN=TOKEN, MESHGEN_BLUEPRINTS_URL=fake.git.url("blueprints.git"),
                    MESHGEN_BLUEPRINTS_TOKEN=BLUEPRINTS_TOKEN)
        assert run.returncode == 0, run.stderr
        branch = "meshgen/production/shop/cart"
        assert origin.tip(branch) is not None  # pushed over smart HTTP with the forge's convention
        assert [pr.head for pr in fake.prs.values()] == [branch]
        pushes = {user for method, path, user, status in fake.git.log if path.endswith("git-receive-pack") and status == 200}
        assert pushes == {fake.git_username or "meshgen"}
        fetched = {user for method, path, user, status in fake.git.log if "blueprints.git" in path and status == 200}
        assert fetched == {"x-access-token"}
        job = rns.records.recent_jobs(1)[0]
        assert job.state == "succeeded" and job.blueprint_commit == blueprints_repo.tip("main")
        _no_secret_anywhere(root, run, TOKEN, BLUEPRINTS_TOKEN)
        assert TOKEN not in job.model_dump_json() and BLUEPRINTS_TOKEN not in job.model_dump_json()
        assert not fake.violations, fake.violations
    finally:
        fake.stop()


def test_wrong_forge_token_fails_clearly_exit_3(tmp_path: Path, origin: BareRepo, rns: RedisNS) -> None:
    fake = _start("github", origin)
    wrong = "mgtok_wrong_9999999999999999999999999999"
    try:
        root = _root(tmp_path, fake.git_url, _forge_yaml("github", fake))
        run = _sync(root, rns, MESHGEN_FORGE_TOKEN=wrong)
        assert run.returncode == 3
        assert f"fetch environment repository {fake.git_url}" in run.stderr
        assert "rejected the credentials (HTTP 401" in run.stderr and "MESHGEN_FORGE_TOKEN" in run.stderr
        job = rns.records.recent_jobs(1)[0]
        assert job.state == "failed" and "rejected the credentials" in job.errors[0]
        _no_secret_anywhere(root, run, wrong)
        assert wrong not in job.model_dump_json()
        assert not fake.prs
    finally:
        fake.stop()


def test_wrong_blueprints_token_fails_clearly_exit_3(tmp_path: Path, origin: BareRepo, blueprints_repo: BareRepo,
                                                     rns: RedisNS) -> None:
    fake = _start("github", origin)
    try:
        root = _root(tmp_path, fake.git_url, _forge_yaml("github", fake))
        run = _sync(root, rns, MESHGEN_FORGE_TOKEN=TOKEN, MESHGEN_BLUEPRINTS_URL=fake.git.url("blueprints.git"),
                    MESHGEN_BLUEPRINTS_TOKEN="not-it")
        assert run.returncode == 3
        assert f"fetch blueprints repository {fake.git.url('blueprints.git')}" in run.stderr
        assert "MESHGEN_BLUEPRINTS_TOKEN" in run.stderr
        assert rns.records.recent_jobs(1)[0].state == "failed"
    finally:
        fake.stop()


def _ssh_env(sshd: SshServer, key: Path | None = None, known_hosts: Path | None = None) -> dict[str, str]:
    return {"MESHGEN_GIT_SSH_KEY_FILE": str(key or sshd.client_key),
            "MESHGEN_GIT_KNOWN_HOSTS_FILE": str(known_hosts or sshd.known_hosts)}


def test_sync_over_ssh(tmp_path: Path, origin: BareRepo, blueprints_repo: BareRepo, sshd: SshServer,
                       rns: RedisNS) -> None:
    fake = _start("github", origin)  # its REST API opens the pull request; git goes over SSH
    try:
        root = _root(tmp_path, sshd.url("env.git"), _forge_yaml("github", fake))
        env = {"MESHGEN_FORGE_TOKEN": TOKEN, "MESHGEN_BLUEPRINTS_URL": sshd.url("blueprints.git"), **_ssh_env(sshd)}
        run = _sync(root, rns, **env)
        assert run.returncode == 0, run.stderr
        assert origin.tip("meshgen/production/shop/cart") is not None
        assert [pr.head for pr in fake.prs.values()] == ["meshgen/production/shop/cart"]
        assert not fake.git.log  # nothing went over HTTP: both repositories over SSH
        job = rns.records.recent_jobs(1)[0]
        assert job.state == "succeeded" and job.blueprint_commit == blueprints_repo.tip("main")
        _no_secret_anywhere(root, run, TOKEN)
        # a push to the blueprints repository: the next sync force-pushes the branch over SSH, with its lease
        before = origin.tip("meshgen/production/shop/cart")
        blueprints_repo.commit_files("main", {"blueprints/cart.yaml": blueprint("cart", 30)}, "cart: 30")
        run = _sync(root, rns, **env)
        assert run.returncode == 0, run.stderr
        assert origin.tip("meshgen/production/shop/cart") not in (None, before)
    finally:
        fake.stop()


def test_a_token_in_the_blueprints_url_is_refused(tmp_path: Path, origin: BareRepo, rns: RedisNS) -> None:
    fake = _start("github", origin)
    try:
        root = _root(tmp_path, fake.git_url, _forge_yaml("github", fake))
        url = fake.git.url("blueprints.git").replace("http://", f"http://x-access-token:{BLUEPRINTS_TOKEN}@")
        run = _sync(root, rns, MESHGEN_FORGE_TOKEN=TOKEN, MESHGEN_BLUEPRINTS_URL=url)
        assert run.returncode == 3
        assert "MESHGEN_BLUEPRINTS_URL contains credentials" in run.stderr
        assert "MESHGEN_BLUEPRINTS_TOKEN" in run.stderr and BLUEPRINTS_TOKEN not in run.stderr
        job = rns.records.recent_jobs(1)[0]
        assert job.state == "failed" and BLUEPRINTS_TOKEN not in job.model_dump_json()
        assert not fake.git.log  # refused before anything was sent
        assert not (root / ".meshgen" / "mirrors").exists() or not any((root / ".meshgen" / "mirrors").iterdir())
    finally:
        fake.stop()


@pytest.mark.parametrize("fault", ["wrong-key", "unknown-host-key", "changed-host-key"])
def test_ssh_failures_exit_3_with_the_fix(tmp_path: Path, origin: BareRepo, sshd: SshServer, rns: RedisNS,
                                          fault: str) -> None:
    fake = _start("github", origin)
    try:
        root = _root(tmp_path, sshd.url("env.git"), _forge_yaml("github", fake))
        known = tmp_path / "known_hosts"
        if fault == "wrong-key":
            env = _ssh_env(sshd, key=ssh_keygen(tmp_path / "stranger"))
            expected = "the server refused the SSH key"
        elif fault == "unknown-host-key":
            known.write_text("")
            env = _ssh_env(sshd, known_hosts=known)
            expected = "is not in MESHGEN_GIT_KNOWN_HOSTS_FILE"
        else:
            kind, key = ssh_keygen(tmp_path / "impostor").with_suffix(".pub").read_text().split()[:2]
            known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
            env = _ssh_env(sshd, known_hosts=known)
            expected = "does not match the one in MESHGEN_GIT_KNOWN_HOSTS_FILE"
        run = _sync(root, rns, MESHGEN_FORGE_TOKEN=TOKEN, **env)
        assert run.returncode == 3, run.stderr
        assert f"fetch environment repository {sshd.url('env.git')}" in run.stderr and expected in run.stderr
        job = rns.records.recent_jobs(1)[0]
        assert job.state == "failed" and expected in job.errors[0]
        assert not fake.prs and origin.tip("meshgen/production/shop/cart") is None
    finally:
        fake.stop()


def _root_with_git(tmp_path: Path, fake: FakeForge, git: str) -> Path:
    root = _root(tmp_path, fake.git_url, _forge_yaml("github", fake))
    with open(root / "meshgen.yaml", "a") as handle:
        handle.write(f"  git: {git}\n")
    return root


def test_separate_git_credential_from_envrepo_git(tmp_path: Path, origin: BareRepo, rns: RedisNS) -> None:
    fake = _start("github", origin)
    git_token = "mgtok_deploy_5a6b9f3c1a7e5b2d4c6e8a0b1c2d3e4f"
    fake.git.accounts.append(Account(git_token, "deploy-bot"))
    try:
        (tmp_path / "git.token").write_text(git_token + "\n")
        root = _root_with_git(tmp_path, fake, f"{{tokenFile: {tmp_path / 'git.token'}, username: deploy-bot}}")
        run = _sync(root, rns, MESHGEN_FORGE_TOKEN=TOKEN)
        assert run.returncode == 0, run.stderr
        assert origin.tip("meshgen/production/shop/cart") is not None
        users = {user for method, path, user, status in fake.git.log if status == 200}
        assert users == {"deploy-bot"}  # git used the separate credential, the API the forge token
        _no_secret_anywhere(root, run, TOKEN, git_token)
    finally:
        fake.stop()


def test_token_without_push_access_fails_clearly_exit_3(tmp_path: Path, origin: BareRepo, rns: RedisNS) -> None:
    fake = _start("github", origin)
    read_only = "mgtok_readonly_e8a0b1c2d3e4f5a6b9f3c1a7e5b2d4c6"
    fake.git.accounts.append(Account(read_only, "x-access-token", write=False))
    try:
        root = _root_with_git(tmp_path, fake, "{tokenEnv: MG_GIT_TOKEN}")
        run = _sync(root, rns, MESHGEN_FORGE_TOKEN=TOKEN, MG_GIT_TOKEN=read_only)
        assert run.returncode == 3
        assert f"push environment repository {fake.git_url}: push refused (HTTP 403)" in run.stderr
        assert "write access" in run.stderr
        job = rns.records.recent_jobs(1)[0]
        assert job.state == "failed" and "push refused (HTTP 403)" in job.errors[0]
        assert origin.tip("meshgen/production/shop/cart") is None and not fake.prs
        _no_secret_anywhere(root, run, read_only)
    finally:
        fake.stop()
