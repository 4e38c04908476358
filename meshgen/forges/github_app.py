"""GitHub App authentication: installation access tokens, minted from a signed app JWT and refreshed.

Organisations run bots as GitHub Apps rather than as users with personal tokens. The app proves
who it is with a JSON Web Token signed (RS256) by its private key; GitHub's REST docs
("Generating a JSON Web Token (JWT) for a GitHub App") ask for `iat` 60 s in the past against
clock drift, `exp` at most 10 minutes ahead and `iss` = the app's id (or client id). That JWT only
buys an installation access token (`POST /app/installations/{installation_id}/access_tokens`,
"Generating an installation access token for a GitHub App"), valid for one hour, which then acts
for the installation on the REST API (`Authorization: Bearer`) and on git over HTTPS (user name
`x-access-token`, the token as password).

`InstallationTokens` is a `_Secret` whose value rotates: every `reveal()` returns a token that is
valid for at least `refresh_before` more seconds, minting a new one when needed. It is shared by
the REST client and the git credential of a forge, and, through `InstallationTokens.shared`, by
every forge of the process configured for the same installation (a worker builds a forge per
sync; they all reuse one token until it is due). It is safe to use from several threads (one
lock; only one thread mints, the others wait for its token).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ._http import _ApiClient, _RetryPolicy, _Secret
from .base import ForgeError, read_secret_file

_log = logging.getLogger("meshgen.forges")

#: GitHub's documented maximum JWT lifetime is 10 minutes; stay a little inside it so a request
#: that takes a while to arrive is not refused.
JWT_LIFETIME = 9 * 60
#: iat is backdated this much, as GitHub's docs recommend, for clock drift between us and GitHub.
JWT_BACKDATE = 60
#: Mint a new installation token this long before the current one expires (tokens last an hour).
REFRESH_BEFORE = 5 * 60
#: A private key file is a few KiB; refuse to read anything much larger.
_MAX_KEY_BYTES = 64 * 1024

_SHARED: dict[tuple[Any, ...], InstallationTokens] = {}
_SHARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class GitHubApp:
    """Which app, which installation, and where its private key is.

    `app_id` is the numeric app id or the client id (`Iv1.…`), both accepted by GitHub as `iss`.
    `clock` returns epoch seconds; tests pass a controllable one.
    """

    app_id: str
    installation_id: int
    private_key_file: Path
    clock: Callable[[], float] = time.time
    refresh_before: float = REFRESH_BEFORE


def load_private_key(path: Path) -> RSAPrivateKey:
    """The app's RSA private key from a PEM file, or a ForgeError saying what to fix (never the content)."""
    fix = ("download a private key from the GitHub App's settings page (\"Private keys\" → \"Generate a "
           "private key\") and point MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE at the .pem file")
    try:
        data = read_secret_file(path, _MAX_KEY_BYTES)
    except OSError as exc:
        raise ForgeError(f"GitHub App: cannot read the private key file {path}: {exc.strerror}; {fix}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # The library's message says what kind of problem (not PEM, encrypted, ...), never the bytes.
        reason = str(exc).split("\n", 1)[0][:200]
        raise ForgeError(f"GitHub App: the private key file {path} is not an unencrypted PEM private key "
                         f"({reason}); {fix}") from None
    if not isinstance(key, RSAPrivateKey):
        raise ForgeError(f"GitHub App: the private key file {path} holds a {type(key).__name__.lstrip('_')}, "
                         f"but GitHub Apps sign with RSA (RS256); {fix}")
    return key


def _parse_expiry(value: Any) -> float:
    if not isinstance(value, str):
        raise TypeError(f"expires_at is {type(value).__name__}, not a timestamp")
    return datetime.fromisoformat(value).timestamp()  # Python 3.11 reads the trailing Z


class _AppJWT(_Secret):
    """The app's JWT: signed anew for every request (a retry after a long backoff gets a fresh one)."""

    def __init__(self, sign: Callable[[], str]) -> None:
        super().__init__("")
        self._sign = sign

    def reveal(self) -> str:
        self._value = self._sign()
        return self._value


@dataclass(frozen=True)
class _Minted:
    token: _Secret
    expires_at: float
    permissions: Mapping[str, str]


class InstallationTokens(_Secret):
    """The current installation access token of one app installation (a rotating `_Secret`)."""

    def __init__(self, app: GitHubApp, base_url: str, *, timeout: float = 30.0,
                 retry: _RetryPolicy | None = None) -> None:
        super().__init__("", f"installation tokens of GitHub App {app.app_id}, installation {app.installation_id}")
        self.app = app
        self._key = load_private_key(app.private_key_file)
        self._lock = threading.Lock()
        self._current: _Minted | None = None
        # Every token this object handed out, for scrubbing: a late error body may echo an old one.
        self._issued: list[_Secret] = []
        self._jwt = _AppJWT(self._sign)
        self._timeout = timeout
        self._retry = retry or _RetryPolicy()
        self._base_url = base_url
        self._api = self._new_client()
        self._installation_path = f"app/installations/{int(app.installation_id)}/access_tokens"

    def _new_client(self) -> _ApiClient:
        app = self.app
        app_id = app.app_id
        return _ApiClient(
            "GitHub App", self._base_url, self._jwt, lambda value: ("Authorization", f"Bearer {value}"),
            timeout=self._timeout, retry=self._retry,
            extra_headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
            hint_not_found=(f"installation {app.installation_id} of app {app_id} was not found: install the app "
                            "on the environment repository (or its organisation) and set "
                            "envRepo.forge.app.installationId to that installation's id (the number at the "
                            "end of the installation's settings URL)"),
            hint_auth=(f"GitHub did not accept the app's JWT: check that envRepo.forge.app.id ({app_id}) is "
                       "the app's id, that MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE holds a current (not deleted) "
                       "private key of that app, and that this machine's clock is right (NTP)"),
        )

    @classmethod
    def shared(cls, app: GitHubApp, base_url: str, *, timeout: float = 30.0,
               retry: _RetryPolicy | None = None) -> InstallationTokens:
        """The process-wide tokens of this installation (one per app, base URL and key file
        content): a new forge per sync reuses the current token instead of minting one."""
        try:
            stat = app.private_key_file.stat()
            version: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            version = (0, 0)  # load_private_key below reports the problem
        key = (app, base_url.rstrip("/"), version)
        with _SHARED_LOCK:
            tokens = _SHARED.get(key)
            if tokens is None:
                tokens = _SHARED[key] = cls(app, base_url, timeout=timeout, retry=retry)
            return tokens

    # -- _Secret -------------------------------------------------------------------------------

    def reveal(self) -> str:
        """A token valid for at least `refresh_before` more seconds (minted now if needed)."""
        return self._valid().token.reveal()

    def scrub(self, text: str) -> str:
        for secret in (*self._issued, self._jwt):
            text = secret.scrub(text)
        return text

    # -- public --------------------------------------------------------------------------------

    @property
    def permissions(self) -> Mapping[str, str]:
        """What the installation may do (`contents: write`, `pull_requests: write`, ...), per the
        current token; mints one when there is none yet."""
        return self._valid().permissions

    @property
    def expires_at(self) -> float:
        return self._valid().expires_at

    def close(self) -> None:
        """Release the HTTP connections of the token exchange (it reconnects if used again)."""
        self._api.close()
        self._api = self._new_client()

    # -- internals -----------------------------------------------------------------------------

    def _valid(self) -> _Minted:
        with self._lock:
            current = self._current
            if current is None or current.expires_at - self.app.clock() <= self.app.refresh_before:
                current = self._current = self._mint()
            return current

    def _sign(self) -> str:
        now = int(self.app.clock())
        claims = {"iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME, "iss": str(self.app.app_id)}
        return jwt.encode(claims, self._key, algorithm="RS256")

    def refresh(self) -> None:
        """Mint a new token now (`meshgen doctor` checks the permissions GitHub grants today)."""
        with self._lock:
            self._current = self._mint()

    def rejected(self) -> None:
        # GitHub revokes installation tokens early (the app's permissions changed, the app was
        # reinstalled): forget the current one so the next call mints a fresh token.
        with self._lock:
            self._current = None

    def _mint(self) -> _Minted:
        minted = self._api.call(
            f"create an installation access token for installation {self.app.installation_id}",
            "POST", self._installation_path, ok=(201,), parse=self._parse,
        )
        self._issued.append(minted.token)
        lifetime = minted.expires_at - self.app.clock()
        if lifetime <= self.app.refresh_before:
            raise ForgeError(f"GitHub App: the installation token GitHub issued expires in {lifetime:.0f} s, "
                             f"sooner than meshgen refreshes ({self.app.refresh_before:.0f} s before expiry); "
                             "check this machine's clock (NTP)")
        _log.info("GitHub App %s: new installation token for installation %s, valid for %.0f s",
                  self.app.app_id, self.app.installation_id, lifetime)
        return minted

    @staticmethod
    def _parse(data: Any) -> _Minted:
        token = data["token"]
        if not isinstance(token, str) or not token or any(ch in token for ch in "\r\n\0 "):
            raise ValueError("the token field is not a single-line string")
        permissions = data.get("permissions") or {}
        return _Minted(_Secret(token), _parse_expiry(data["expires_at"]),
                       MappingProxyType({str(k): str(v) for k, v in dict(permissions).items()}))
