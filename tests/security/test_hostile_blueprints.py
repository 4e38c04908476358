"""Hostile blueprints, as an author with a pull request to the blueprints repository writes them.

Each attack of issue 13 runs through the real command (`python -m meshgen render|validate`):
the outcome must be a `file:line:col:` error naming the blueprint, exit status 1, no
traceback, and nothing written. The corpus of attacks that already held is kept beside them.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DEFAULT_CONFIG, write_repo

API = """\
service: api
namespace: payments
versions: {v1: {version: v1}}
routes:
  - name: default
    to: v1
"""
LINE = re.compile(r"^(blueprints/\S+|meshgen\.yaml):\d+:\d+: ")


def meshgen(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshgen", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def refused(root: Path, out: Path, *, where: str, says: str) -> str:
    """Render ROOT: exit 1, an error at WHERE (file:line) containing SAYS, no traceback, nothing written."""
    run = meshgen("render", root, "--out", out)
    assert run.returncode == 1, (run.returncode, run.stderr[-3000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = run.stderr.splitlines()
    assert lines[-1].startswith("meshgen: ") and "nothing was written" in lines[-1], lines[-1]
    for line in lines[:-1]:
        assert LINE.match(line), f"not a diagnostic line: {line!r}"
    assert any(line.startswith(where) and says in line for line in lines), run.stderr
    assert not out.exists() or not any(out.rglob("*.yaml")), "something was written"
    validate = meshgen("validate", root)
    assert validate.returncode == 1 and "Traceback" not in validate.stderr, validate.stderr[-3000:]
    return run.stderr


def _repo(tmp_path: Path, text: str, name: str = "payments/api.yaml", config: str = DEFAULT_CONFIG) -> Path:
    root = write_repo(tmp_path / "repo", {"payments/ok.yaml": API.replace("service: api", "service: ok")},
                      config=config)
    path = root / "blueprints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return root


# ---- 2. deep nesting, 3. huge integers, 5. durations --------------------------------------------------

@pytest.mark.parametrize(("text", "where", "says"), [
    pytest.param(API + "timeout: " + "[" * 600 + "]" * 600 + "\n", "blueprints/payments/api.yaml:7:",
                 "nest more than 64 levels", id="600-flow-brackets"),
    pytest.param(API + "".join("  " * i + f"k{i}:\n" for i in range(500)) + "  " * 500 + "x: 1\n",
                 "blueprints/payments/api.yaml:", "nest more than 64 levels", id="500-block-levels"),
    pytest.param(API + "ports: [{name: http, port: " + "9" * 5000 + "}]\n", "blueprints/payments/api.yaml:7:",
                 "too large", id="5000-digit-int"),
    pytest.param(API + "ports: [{name: http, port: 0x" + "f" * 40 + "}]\n", "blueprints/payments/api.yaml:7:",
                 "too large", id="huge-hex"),
    pytest.param(API + "timeout: 99999999999999999999h\n", "blueprints/payments/api.yaml:7:1: timeout:",
                 "the largest duration is 2562047h", id="duration-20-digit-hours"),
    pytest.param(API + "timeout: 2562048h\n", "blueprints/payments/api.yaml:7:1: timeout:",
                 "the largest duration is 2562047h", id="duration-just-over-go"),
    pytest.param(API + "timeout: " + "9" * 5000 + "ms\n", "blueprints/payments/api.yaml:7:1: timeout:",
                 "the largest duration is 2562047h", id="duration-5000-digits"),
    pytest.param(API + "retries: {attempts: 2, perTryTimeout: 9223372037s}\n", "blueprints/payments/api.yaml:7:",
                 "the largest duration is 2562047h", id="per-try-timeout-over-int64-ns"),
])
def test_attack_is_a_clear_error(tmp_path: Path, text: str, where: str, says: str) -> None:
    refused(_repo(tmp_path, text), tmp_path / "out", where=where, says=says)


def test_the_largest_duration_that_works_renders(tmp_path: Path) -> None:
    root = _repo(tmp_path, API + "timeout: 2562047h\n")
    run = meshgen("render", root, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    vs = (tmp_path / "out/staging/payments/api/virtualservice-api.yaml").read_text()
    assert "timeout: 2562047h" in vs


def test_meshgen_yaml_durations_use_the_same_rule(tmp_path: Path) -> None:
    config = DEFAULT_CONFIG + "argocd: {url: 'http://127.0.0.1:1', pollInterval: 99999999999999h}\n"
    root = _repo(tmp_path, API, config=config)
    run = meshgen("validate", root)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert re.search(r"^meshgen\.yaml:\d+:\d+: argocd\.pollInterval: .*largest duration is 2562047h", run.stderr,
                     re.MULTILINE), run.stderr


# ---- 4. kind: Mesh is the platform team's ------------------------------------------------------------

MESH_CONFIG = DEFAULT_CONFIG + "  platform: {namespaces: [istio-system], mesh: true}\n"
MESH = "kind: Mesh\nmtls: disable\n"


def test_mesh_from_a_team_without_mesh_true_is_refused(tmp_path: Path) -> None:
    root = _repo(tmp_path, "team: payments\n" + MESH, name="_mesh.yaml", config=MESH_CONFIG)
    err = refused(root, tmp_path / "out", where="blueprints/_mesh.yaml:1:1: team:",
                  says="team 'payments' does not have `mesh: true`")
    assert "teams that may: platform" in err


def test_mesh_without_a_team_is_refused_when_teams_are_listed(tmp_path: Path) -> None:
    root = _repo(tmp_path, MESH, name="_mesh.yaml", config=MESH_CONFIG)
    refused(root, tmp_path / "out", where="blueprints/_mesh.yaml:1:1: kind:", says="needs `team:`")


def test_mesh_from_an_unknown_team_is_refused(tmp_path: Path) -> None:
    root = _repo(tmp_path, "team: intruders\n" + MESH, name="_mesh.yaml", config=MESH_CONFIG)
    refused(root, tmp_path / "out", where="blueprints/_mesh.yaml:1:1: team:", says="is not in meshgen.yaml")


def test_mesh_from_the_platform_team_renders(tmp_path: Path) -> None:
    root = _repo(tmp_path, "team: platform\n" + MESH, name="_mesh.yaml", config=MESH_CONFIG)
    run = meshgen("render", root, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    pa = (tmp_path / "out/staging/_mesh/peerauthentication-default.yaml").read_text()
    assert "mode: DISABLE" in pa and "meshgen.dev/team: platform" in pa


def test_mesh_without_teams_in_meshgen_yaml_stays_open(tmp_path: Path) -> None:
    config = "environments:\n  staging: {mesh: istio}\n"
    root = _repo(tmp_path, MESH, name="_mesh.yaml", config=config)
    assert meshgen("validate", root).returncode == 0


# ---- 6. a newline in a file name, 7. symlinks ----------------------------------------------------------

def test_newline_in_a_file_name_cannot_forge_a_diagnostic_line(tmp_path: Path) -> None:
    name = "payments/x.yaml\n/tmp/fake.yaml:1:1: routes: all good.yaml"
    root = _repo(tmp_path, "service: [unclosed\n", name=name)
    err = refused(root, tmp_path / "out", where="blueprints/payments/x.yaml\\n/tmp/fake.yaml:1:1",
                  says="invalid YAML")
    assert not any(line.startswith("/tmp/fake.yaml") for line in err.splitlines())


def test_symlink_out_of_the_repository_is_refused_without_its_content(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("ghp_" + "S3CRETtokenVALUE" * 3 + "\n")
    root = _repo(tmp_path, API)
    (root / "blueprints/payments/api.yaml").unlink()
    os.symlink(secret, root / "blueprints/payments/api.yaml")
    err = refused(root, tmp_path / "out", where="blueprints/payments/api.yaml:1:1:",
                  says="symbolic link to a file outside the repository")
    assert "S3CRET" not in err and "ghp_" not in err


def test_symlink_inside_the_repository_is_read(tmp_path: Path) -> None:
    root = _repo(tmp_path, API, name="shared/api-source.txt")
    os.symlink("../shared/api-source.txt", root / "blueprints/payments/api.yaml")
    assert meshgen("validate", root).returncode == 0


def test_a_fifo_named_like_a_blueprint_does_not_hang(tmp_path: Path) -> None:
    root = _repo(tmp_path, API)
    os.mkfifo(root / "blueprints/payments/pipe.yaml")
    refused(root, tmp_path / "out", where="blueprints/payments/pipe.yaml:1:1:", says="not a regular file")


def test_a_file_that_is_one_long_value_is_not_echoed(tmp_path: Path) -> None:
    root = _repo(tmp_path, "ghp_" + "S3CRETtokenVALUE" * 3 + "\n")
    err = refused(root, tmp_path / "out", where="blueprints/payments/api.yaml:1:1:", says="single text value")
    assert "S3CRET" not in err


def test_long_values_are_cut_to_a_short_excerpt(tmp_path: Path) -> None:
    root = _repo(tmp_path, API.replace("service: api", "service: " + "A" * 5000))
    err = refused(root, tmp_path / "out", where="blueprints/payments/api.yaml:1:1: service:",
                  says="not a DNS-1123 label")
    assert "A" * 50 not in err and "(5000 characters)" in err


# ---- 1. the render cache is data, and only meshgen's own ----------------------------------------------

class _Boom:
    """Unpickling this runs `touch MARK`: what a pickle committed to a blueprints repository can do."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.mark}",))


def test_a_committed_pickle_in_the_cache_never_runs(tmp_path: Path) -> None:
    root = _repo(tmp_path, API)
    out = tmp_path / "out"
    assert meshgen("render", root, "--out", out).returncode == 0
    mark = tmp_path / "pwned"
    for folder in (root / ".meshgen/cache").iterdir():  # what `git add -f .meshgen/cache` in a PR carries
        for name in ("base.pickle", "journal.pickle", "base.json", "journal.json"):
            (folder / name).write_bytes(pickle.dumps(("6|x|y", _Boom(mark))))
    (root / "blueprints/payments/api.yaml").write_text(API + "timeout: 3s\n")
    run = meshgen("render", root, "--out", out)
    assert run.returncode == 0, run.stderr
    assert not mark.exists(), "cache content was executed"
    assert "timeout: 3s" in (out / "staging/payments/api/virtualservice-api.yaml").read_text()


def test_a_forged_json_cache_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    """A cache meshgen did not write (no valid HMAC under the user's key) is not trusted: here it
    claims the changed blueprint is unchanged, which would keep a stale (or planted) output file."""
    root = _repo(tmp_path, API)
    out = tmp_path / "out"
    assert meshgen("render", root, "--out", out).returncode == 0
    (folder,) = (root / ".meshgen/cache").iterdir()
    base = (folder / "base.json").read_bytes()
    planted = out / "staging/payments/api/virtualservice-api.yaml"
    planted.write_text("planted: true\n")
    (folder / "base.json").write_bytes(base[:-1] + b" ")  # any change breaks the seal
    (folder / "journal.json").unlink()
    run = meshgen("render", root, "--out", out)
    assert run.returncode == 0, run.stderr
    assert "planted" not in planted.read_text()


def test_a_cache_sealed_under_another_key_is_ignored(tmp_path: Path) -> None:
    root = _repo(tmp_path, API)
    out = tmp_path / "out"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "attacker-home")}
    assert meshgen("render", root, "--out", out, env=env).returncode == 0  # sealed with the attacker's key
    planted = out / "staging/payments/api/virtualservice-api.yaml"
    planted.write_text("planted: true\n")
    own = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "own-home")}
    run = meshgen("render", root, "--out", out, env=own)
    assert run.returncode == 0, run.stderr
    assert "planted" not in planted.read_text()
    assert (tmp_path / "own-home/meshgen/render-cache.key").stat().st_mode & 0o077 == 0


def test_the_cache_is_still_used_when_it_is_meshgens_own(tmp_path: Path) -> None:
    root = _repo(tmp_path, API)
    out = tmp_path / "out"
    assert meshgen("render", root, "--out", out).returncode == 0
    run = meshgen("render", root, "--out", out)
    assert run.returncode == 0 and "0 blueprints rendered, 2 unchanged" in run.stderr, run.stdout + run.stderr


def test_a_file_name_that_is_not_utf8_renders_without_a_cache(tmp_path: Path) -> None:
    root = _repo(tmp_path, API)
    os.rename(root / "blueprints/payments/api.yaml", os.fsencode(root / "blueprints/payments") + b"/\xff.yaml")
    for _ in range(2):  # JSON cannot hold the name: no cache is kept, the next render renders everything
        run = meshgen("render", root, "--out", tmp_path / "out")
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
        assert "2 blueprints rendered, 0 unchanged" in run.stderr, run.stderr


# ---- the render cache key's home (issue 13 verification) -------------------------------------------

def _renders_twice(root: Path, out: Path, cache_home: Path) -> str:
    """Render twice with XDG_CACHE_HOME=cache_home; the second run's summary line."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    for _ in range(2):
        run = meshgen("render", root, "--out", out, env=env)
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    return run.stderr


def test_a_world_writable_cache_home_keeps_no_key(tmp_path: Path) -> None:
    """Another user could plant a key they know in a world-writable (not sticky) folder, then forge
    caches that verify: meshgen keeps no key there (a key per process: slower, never wrong)."""
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(0o777)
    second = _renders_twice(_repo(tmp_path, API), tmp_path / "out", home)
    assert "2 blueprints rendered, 0 unchanged" in second, second
    assert not (home / "meshgen/render-cache.key").exists()


@pytest.mark.parametrize("how", ["symlink", "readable-by-others", "folder-writable-by-others", "folder-symlink"])
def test_a_planted_or_exposed_key_is_not_used(tmp_path: Path, how: str) -> None:
    home = tmp_path / "home"
    folder = home / "meshgen"
    known = tmp_path / "known.key"
    known.write_bytes(b"k" * 32)
    if how == "folder-symlink":
        home.mkdir()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        (elsewhere / "render-cache.key").write_bytes(b"k" * 32)
        (elsewhere / "render-cache.key").chmod(0o600)
        folder.symlink_to(elsewhere)
    else:
        folder.mkdir(parents=True, mode=0o700)
        key = folder / "render-cache.key"
        if how == "symlink":
            key.symlink_to(known)
        else:
            key.write_bytes(b"k" * 32)
            key.chmod(0o644 if how == "readable-by-others" else 0o600)
        if how == "folder-writable-by-others":
            folder.chmod(0o777)
    second = _renders_twice(_repo(tmp_path, API), tmp_path / "out", home)
    assert "2 blueprints rendered, 0 unchanged" in second, second  # the known key sealed nothing reused
    assert known.read_bytes() == b"k" * 32


def test_a_cache_home_that_is_a_symlink_to_a_private_folder_works(tmp_path: Path) -> None:
    real = tmp_path / "real-cache"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    second = _renders_twice(_repo(tmp_path, API), tmp_path / "out", tmp_path / "link")
    assert "0 blueprints rendered, 2 unchanged" in second, second
    assert (real / "meshgen/render-cache.key").stat().st_mode & 0o077 == 0
