"""SSH transport against a real OpenSSH server: keys, passphrases, known_hosts, leases, clear errors."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest
from forges._gitrepo import BareRepo, push_files
from gitserver import SshServer, ssh_keygen

from meshgen.gitops.envrepo import EnvRepo, LeaseError
from meshgen.gitops.transport import GitTransportError, RemoteAccess, SshIdentity, check_push, ls_remote
from meshgen.settings import Settings


def _access(sshd: SshServer, *, key: Path | None = None, known_hosts: Path | None = None,
            passphrase: Path | None = None, rel: str = "env.git") -> RemoteAccess:
    return RemoteAccess(sshd.url(rel), "environment repository",
                        ssh=SshIdentity(key or sshd.client_key, known_hosts or sshd.known_hosts, passphrase))


def test_fetch_and_leased_push_over_ssh(tmp_path: Path, sshd: SshServer, origin: BareRepo) -> None:
    repo = EnvRepo(sshd.url("env.git"), cache_dir=tmp_path / "cache", access=_access(sshd))
    sha = push_files(repo, "meshgen/prod/api", {"prod/api/a.yaml": "a: 1\n"}, "one", start="main")
    assert origin.tip("meshgen/prod/api") == sha
    # force-with-lease: a branch that moved under us is not overwritten, and the error says where it is now
    other = origin.commit_files("meshgen/prod/api", {"x": "y"}, "someone else")
    new = repo.commit(repo.commit_at("main").tree.id, [repo.tip("main")], "ours")  # type: ignore[union-attr]
    with pytest.raises(LeaseError) as caught:
        repo.push("meshgen/prod/api", new, expected=pygit2.Oid(hex=sha))
    assert str(caught.value.actual) == other and origin.tip("meshgen/prod/api") == other
    # "must not exist" is a lease too
    with pytest.raises(LeaseError):
        repo.push("meshgen/prod/api", new, expected=None)
    # a rewrite over what we last saw is allowed (generated branches are force-pushed)
    repo.fetch()
    repo.push("meshgen/prod/api", new, expected=pygit2.Oid(hex=other))
    assert origin.tip("meshgen/prod/api") == str(new)
    # no temporary refs left behind in the mirror, and its config has only the URL
    assert not [r for r in repo.repo.references if r.startswith("refs/meshgen/tmp/")]
    assert "url = " + sshd.url("env.git") in (Path(repo.repo.path) / "config").read_text()


def test_passphrase_protected_key(tmp_path: Path, sshd: SshServer, origin: BareRepo) -> None:
    key = ssh_keygen(tmp_path / "locked", passphrase="correct horse battery")
    with open(sshd.dir / "authorized_keys", "a") as handle:
        handle.write(key.with_suffix(".pub").read_text())
    phrase = tmp_path / "phrase"
    phrase.write_text("correct horse battery\n")
    assert ls_remote(_access(sshd, key=key, passphrase=phrase))["refs/heads/main"] == origin.tip("main")
    phrase.write_text("wrong\n")
    with pytest.raises(GitTransportError) as caught:
        ls_remote(_access(sshd, key=key, passphrase=phrase))
    assert caught.value.reason == "auth" and "MESHGEN_GIT_SSH_KEY_PASSPHRASE_FILE" in str(caught.value)


def test_wrong_key_is_refused_with_the_fix(tmp_path: Path, sshd: SshServer) -> None:
    stranger = ssh_keygen(tmp_path / "stranger")
    repo = EnvRepo(sshd.url("env.git"), cache_dir=tmp_path / "cache", access=_access(sshd, key=stranger))
    with pytest.raises(GitTransportError) as caught:
        repo.fetch()
    err = caught.value
    assert (err.reason, err.operation) == ("auth", "fetch")
    assert f"fetch environment repository {sshd.url('env.git')}" in str(err)
    assert "deploy key" in str(err) and str(stranger) in str(err)


def test_unknown_host_key_is_never_trusted_on_first_use(tmp_path: Path, sshd: SshServer) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(GitTransportError) as caught:
        ls_remote(_access(sshd, known_hosts=empty))
    assert caught.value.reason == "host-key-unknown"
    assert "MESHGEN_GIT_KNOWN_HOSTS_FILE" in str(caught.value) and "first use" in str(caught.value)
    assert empty.read_text() == ""  # nothing was added to the file


def test_changed_host_key_is_refused(tmp_path: Path, sshd: SshServer) -> None:
    impostor = ssh_keygen(tmp_path / "impostor_host")
    kind, key = impostor.with_suffix(".pub").read_text().split()[:2]
    pinned = tmp_path / "known_hosts"
    pinned.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")  # what we trust is not what the server has
    with pytest.raises(GitTransportError) as caught:
        EnvRepo(sshd.url("env.git"), cache_dir=tmp_path / "c", access=_access(sshd, known_hosts=pinned)).fetch()
    assert caught.value.reason == "host-key-changed"
    assert "does not match" in str(caught.value) and "intercepting" in str(caught.value)


def test_missing_repository_over_ssh(sshd: SshServer) -> None:
    with pytest.raises(GitTransportError) as caught:
        ls_remote(_access(sshd, rel="nope.git"))
    assert caught.value.reason == "not-found" and "nope.git" in str(caught.value)


def test_push_check_over_ssh(tmp_path: Path, sshd: SshServer, origin: BareRepo) -> None:
    check_push(_access(sshd))
    assert set(ls_remote(_access(sshd))) == {"HEAD", "refs/heads/main"}  # the check pushed nothing
    stranger = ssh_keygen(tmp_path / "stranger")
    with pytest.raises(GitTransportError) as caught:
        check_push(_access(sshd, key=stranger))
    assert (caught.value.reason, caught.value.operation) == ("auth", "push")


def test_ssh_url_without_key_or_known_hosts_is_a_config_error(tmp_path: Path) -> None:
    from meshgen.gitops.transport import blueprints_access

    settings = Settings(root=tmp_path, git_ssh_key_file=tmp_path / "key")
    with pytest.raises(GitTransportError) as caught:
        blueprints_access("git@github.com:acme/blueprints.git", settings)
    assert caught.value.reason == "config"
    assert "MESHGEN_GIT_KNOWN_HOSTS_FILE" in str(caught.value) and "first use" in str(caught.value)


def test_a_key_mounted_world_readable_still_works(tmp_path: Path, sshd: SshServer, origin: BareRepo) -> None:
    # Kubernetes mounts secrets 0644 (0440 with an fsGroup); OpenSSH alone would skip such a key.
    key = tmp_path / "mounted_key"
    key.write_bytes(sshd.client_key.read_bytes())
    key.chmod(0o644)
    assert ls_remote(_access(sshd, key=key))["refs/heads/main"] == origin.tip("main")
    assert key.stat().st_mode & 0o777 == 0o644  # the mounted file is left as it is
