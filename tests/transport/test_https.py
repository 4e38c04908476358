"""HTTPS transport against real `git http-backend` behind basic auth: tokens, errors, doctor checks."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest
from forges._gitrepo import BareRepo, push_files
from gitserver import GitHttpServer

from meshgen.gitops.envrepo import EnvRepo, LeaseError
from meshgen.forges.base import GitCredential
from meshgen.gitops.transport import GitTransportError, RemoteAccess, check_push, ls_remote

from .conftest import READ_ONLY_TOKEN, TOKEN


def _access(server: GitHttpServer, token: str | None, user: str = "x-access-token", rel: str = "env.git",
            ) -> RemoteAccess:
    cred = GitCredential(user, lambda: token, "TEST_TOKEN_ENV") if token is not None else None
    return RemoteAccess(server.url(rel), "environment repository", credential=cred,
                        configure_hint="Set envRepo.git.tokenEnv")


def _mirror(tmp_path: Path, access: RemoteAccess) -> EnvRepo:
    return EnvRepo(access.url, cache_dir=tmp_path / "cache", access=access)


def test_fetch_and_leased_push_with_a_token(tmp_path: Path, http_git: GitHttpServer, origin: BareRepo) -> None:
    repo = _mirror(tmp_path, _access(http_git, TOKEN))
    sha = push_files(repo, "meshgen/prod/api", {"prod/api/a.yaml": "a: 1\n"}, "one", start="main")
    assert origin.tip("meshgen/prod/api") == sha  # it really reached the server
    assert ("POST", "/env.git/git-receive-pack", "x-access-token", 200) in http_git.log
    assert "/env.git/git-receive-pack" in http_git.chunked  # libgit2 uploads the pack chunked: de-chunked for CGI
    # The lease holds over HTTPS: someone else moves the branch, our next push is refused.
    other = origin.commit_files("meshgen/prod/api", {"x": "y"}, "someone else")
    new = repo.commit(repo.commit_at("main").tree.id, [repo.tip("main")], "ours")  # type: ignore[union-attr]
    with pytest.raises(LeaseError) as caught:
        repo.push("meshgen/prod/api", new, expected=pygit2.Oid(hex=sha))
    assert str(caught.value.actual) == other
    assert origin.tip("meshgen/prod/api") == other
    # The mirror's config holds the bare URL only.
    assert TOKEN not in (Path(repo.repo.path) / "config").read_text()


def test_the_token_source_is_asked_per_fetch_and_push(tmp_path: Path, http_git: GitHttpServer) -> None:
    asked: list[int] = []

    def source() -> str:
        asked.append(1)
        return TOKEN

    access = RemoteAccess(http_git.url("env.git"), "environment repository",
                          credential=GitCredential("x-access-token", source, "a refreshing source"))
    repo = _mirror(tmp_path, access)
    repo.fetch()
    repo.fetch()
    assert len(asked) == 2
    push_files(repo, "meshgen/a", {"a": "1"}, "a", start="main")  # one fetch, one push
    assert len(asked) == 4


def test_rotated_token_file_is_picked_up_without_rebuilding(tmp_path: Path, http_git: GitHttpServer) -> None:
    from meshgen.gitops.transport import _file_token

    token_file = tmp_path / "token"
    token_file.write_text(READ_ONLY_TOKEN + "\n")
    access = RemoteAccess(http_git.url("env.git"), "environment repository",
                          credential=GitCredential("x-access-token", _file_token(token_file, "u"), "token file"))
    repo = _mirror(tmp_path, access)
    repo.fetch()
    with pytest.raises(GitTransportError) as caught:
        check_push(access)
    assert caught.value.reason == "permission"
    token_file.write_text(TOKEN)  # the Secret was rotated to a token with write access...
    check_push(access)  # ...and the next operation uses it


def test_wrong_token_fails_with_the_fix_and_without_the_token(tmp_path: Path, http_git: GitHttpServer) -> None:
    wrong = "mgtok_wrong_1111111111111111111111111111"
    repo = _mirror(tmp_path, _access(http_git, wrong))
    with pytest.raises(GitTransportError) as caught:
        repo.fetch()
    err = caught.value
    message = str(err)
    assert (err.reason, err.operation, err.url) == ("auth", "fetch", http_git.url("env.git"))
    assert "fetch environment repository " + http_git.url("env.git") in message
    assert "HTTP 401" in message and "TEST_TOKEN_ENV" in message and "envRepo.git.tokenEnv" in message
    assert wrong not in message and wrong not in repr(err.args)
    # one try, not libgit2's fifteen replays of a token the server already refused
    assert sum(1 for entry in http_git.log if entry[2] == "x-access-token") == 1


def test_no_credentials_for_a_private_repository(tmp_path: Path, http_git: GitHttpServer) -> None:
    with pytest.raises(GitTransportError) as caught:
        _mirror(tmp_path, _access(http_git, None)).fetch()
    assert caught.value.reason == "auth"
    assert "none are configured" in str(caught.value) and "envRepo.git.tokenEnv" in str(caught.value)


def test_read_only_token_push_is_refused_as_missing_permission(tmp_path: Path, http_git: GitHttpServer,
                                                               origin: BareRepo) -> None:
    repo = _mirror(tmp_path, _access(http_git, READ_ONLY_TOKEN, user="someone"))
    repo.fetch()  # reading is fine
    with pytest.raises(GitTransportError) as caught:
        push_files(repo, "meshgen/a", {"a": "1"}, "a", start="main")
    err = caught.value
    assert (err.reason, err.operation) == ("permission", "push")
    assert "push refused (HTTP 403)" in str(err) and "write access" in str(err)
    assert READ_ONLY_TOKEN not in str(err)
    assert origin.tip("meshgen/a") is None


def test_missing_repository(tmp_path: Path, http_git: GitHttpServer) -> None:
    with pytest.raises(GitTransportError) as caught:
        _mirror(tmp_path, _access(http_git, TOKEN, rel="nope.git")).fetch()
    assert caught.value.reason == "not-found"
    assert "repository not found (HTTP 404)" in str(caught.value) and "nope.git" in str(caught.value)


def test_ls_remote_and_push_check(http_git: GitHttpServer, origin: BareRepo) -> None:
    refs = ls_remote(_access(http_git, TOKEN))
    assert refs["refs/heads/main"] == origin.tip("main")
    check_push(_access(http_git, TOKEN))
    with pytest.raises(GitTransportError) as caught:
        check_push(_access(http_git, READ_ONLY_TOKEN))
    assert (caught.value.reason, caught.value.operation) == ("permission", "push")
    with pytest.raises(GitTransportError) as caught:
        ls_remote(_access(http_git, "nope"))
    assert (caught.value.reason, caught.value.operation) == ("auth", "ls-remote")
    # nothing was pushed by the check
    assert set(ls_remote(_access(http_git, TOKEN))) == {"HEAD", "refs/heads/main"}
