"""`meshgen sync` as a GitHub App, end to end: the app JWT is exchanged on the fake GitHub, and the
installation token pushes over authenticated smart HTTP (username x-access-token) and opens the
pull request. No token (installation token, key material) in the output or under the state folder."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sync_support import MESHGEN_YAML, blueprint

from ._github_fake import _APP_TOKENS, GitHubFake
from ._gitrepo import BareRepo
from .conftest import TOKEN

pytestmark = pytest.mark.slow  # runs meshgen sync in a subprocess


def test_sync_as_a_github_app(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    key_file = tmp_path / "app.pem"
    key_file.write_bytes(pem)
    origin = BareRepo(tmp_path / "srv" / "env.git")
    fake = GitHubFake(origin, TOKEN)
    fake.enable_app("777", 4321, key.public_key())
    fake.start()
    try:
        root = tmp_path / "root"
        (root / "blueprints").mkdir(parents=True)
        (root / "meshgen.yaml").write_text(
            MESHGEN_YAML + f"envRepo:\n  url: {fake.git_url}\n  forge: {{kind: github, owner: acme, repo: env, "
            f"baseUrl: {fake.url}, app: {{id: 777, installationId: 4321}}}}\n")
        (root / "blueprints" / "cart.yaml").write_text(blueprint("cart", 20))
        base = {k: v for k, v in os.environ.items() if not k.startswith("MESHGEN_")}
        run = subprocess.run([sys.executable, "-m", "meshgen", "sync", str(root), "--no-records"],
                             capture_output=True, text=True, check=False, timeout=120,
                             env={**base, "MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE": str(key_file)})
        assert run.returncode == 0, run.stderr
        assert [pr.state for pr in fake.prs.values()] == ["open"]
        pr = next(iter(fake.prs.values()))
        assert origin.tip(pr.head) is not None  # pushed before the pull request was opened
        assert fake.count("POST", _APP_TOKENS) == 1 and fake.jwt_rejections == []
        (token,) = fake.app_tokens
        pushed = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        assert any(pushed in seen for seen in fake.git.auth_seen)
        files = [p for p in (root / ".meshgen").rglob("*") if p.is_file()]
        pem_line = pem.decode().splitlines()[1]
        for secret in (token, pem_line):
            assert secret not in run.stdout and secret not in run.stderr
            assert not [p for p in files if secret.encode() in p.read_bytes()]
    finally:
        fake.stop()
    assert not fake.violations, "\n".join(fake.violations)
