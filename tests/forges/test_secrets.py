"""Tokens never reach a log record, an exception message or repr, or the forge's repr."""

from __future__ import annotations

import logging
import pickle
import socket
import traceback
from pathlib import Path

import pytest

from meshgen.forges._http import _resolve_token
from meshgen.forges.base import ForgeError
from meshgen.forges.gitea import GiteaForge
from meshgen.forges.github import GitHubForge
from meshgen.forges.gitlab import GitLabForge

from .conftest import TOKEN, ForgeEnv
from .test_faults import GET

WRONG = "mgtok_wrong_0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5"


def _texts(exc: BaseException) -> list[str]:
    out: list[str] = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return out


def _assert_clean(secret: str, texts: list[str], caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "expected some log records (httpx and meshgen log at DEBUG/INFO/WARNING)"
    for record in caplog.records:
        rendered = logging.Formatter("%(name)s %(message)s %(exc_info)s").format(record)
        assert secret not in rendered, f"token leaked into log record from {record.name}"
        assert secret not in repr(record.args)
    for text in texts:
        assert secret not in text


def test_token_never_leaks(forge_env: ForgeEnv, caplog: pytest.LogCaptureFixture, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)  # everything: meshgen, httpx, httpcore
    errors: list[BaseException] = []
    forge_env.push("meshgen/x")
    good = forge_env.make()
    number = good.create(branch="meshgen/x", base="main", title="t", body="", labels=()).number

    def expect_error(call: object) -> None:
        with pytest.raises(ForgeError) as err:
            call()  # type: ignore[operator]
        errors.append(err.value)

    # 401: the fake echoes the presented credentials in its error body, as a bad proxy might.
    monkeypatch.setenv("MESHGEN_TEST_TOKEN", WRONG)
    wrong = forge_env.make(token_env="MESHGEN_TEST_TOKEN")
    expect_error(lambda: wrong.get(number))
    assert "<redacted>" in str(errors[-1])
    # 404, persistent 500, rate limit beyond budget.
    expect_error(lambda: wrong.get(4711))
    forge_env.fake.inject("GET", GET[forge_env.kind], 500, times=None, body={"message": f"boom {WRONG}"})
    expect_error(lambda: wrong.get(number))
    forge_env.fake.faults.clear()
    forge_env.fake.inject("GET", GET[forge_env.kind], 429, times=None, headers=lambda: {"Retry-After": "99"})
    expect_error(lambda: wrong.get(number))
    # Connection refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token_file = tmp_path / "token"
    token_file.write_text(WRONG + "\n")
    offline = forge_env.make(token_file=token_file, base_url=f"http://127.0.0.1:{port}")
    expect_error(lambda: offline.get(1))

    texts = [t for e in errors for t in _texts(e)]
    texts += [repr(wrong), str(wrong), repr(vars(wrong)), repr(offline), repr(good)]
    _assert_clean(WRONG, texts, caplog)
    _assert_clean(TOKEN, texts, caplog)


@pytest.mark.parametrize("make", [
    lambda **kw: GitHubForge("acme", "env", **kw),
    lambda **kw: GiteaForge("https://gitea.test", "acme", "env", **kw),
    lambda **kw: GitLabForge("acme/env", **kw),
])
def test_repr_names_the_target_not_the_token(make: object) -> None:
    forge = make(token=TOKEN)  # type: ignore[operator]
    try:
        text = repr(forge)
        assert TOKEN not in text and TOKEN not in str(forge)
        assert "acme" in text and "base_url=" in text
    finally:
        forge.close_connections()


def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MG_TOKEN", f"  {TOKEN}\n")
    assert _resolve_token("GitHub", token=None, token_env="MG_TOKEN", token_file=None).reveal() == TOKEN
    path = tmp_path / "tok"
    path.write_text(TOKEN + "\n")
    assert _resolve_token("GitHub", token=None, token_env=None, token_file=path).reveal() == TOKEN
    secret = _resolve_token("GitHub", token=TOKEN, token_env=None, token_file=None)
    assert TOKEN not in repr(secret) and TOKEN not in str(secret) and TOKEN not in f"{secret}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "exactly one of token, token_env or token_file"),
    ({"token": TOKEN, "token_env": "X"}, "got token, token_env"),
    ({"token_env": "MG_UNSET_VARIABLE"}, "environment variable MG_UNSET_VARIABLE is not set"),
    ({"token_env": "MG_EMPTY"}, "environment variable MG_EMPTY is empty"),
    ({"token_file": "/nonexistent/meshgen/token"}, "cannot read token file /nonexistent/meshgen/token"),
    ({"token": f"{TOKEN}\nsecond line"}, "more than one line"),
])
def test_token_source_errors_say_what_to_do(kwargs: dict[str, str], message: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MG_EMPTY", "  ")
    monkeypatch.delenv("MG_UNSET_VARIABLE", raising=False)
    with pytest.raises(ForgeError, match=message) as err:
        GitHubForge("acme", "env", **kwargs)  # type: ignore[arg-type]
    assert TOKEN not in str(err.value)


def test_token_file_content_is_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "tok"
    path.write_text(f"{TOKEN}\n{TOKEN}\n")
    with pytest.raises(ForgeError, match="more than one line") as err:
        GitLabForge(1, token_file=path)
    assert TOKEN not in "".join(_texts(err.value))
