"""Authenticated git transport: one place that turns meshgen.yaml + MESHGEN_* settings into the
credentials for a remote, for the environment repository and the blueprints repository.

Which credential a remote gets
------------------------------
* **Local paths** (`/srv/env.git`, `./x`, `file://`): none (`None` from the builders below).
* **HTTPS** (`https://` and `http://`): basic auth with a token as the password, through pygit2
  (libgit2). Environment repository: meshgen.yaml `envRepo.git.tokenEnv` / `tokenFile` when set,
  else the forge's own token (`Forge.git_credential()`) in each forge's username convention
  (its registration's git_username: GitHub `x-access-token`, GitLab `oauth2`, Gitea/Forgejo any
  non-empty name, `meshgen`);
  `envRepo.git.username` overrides the username. Blueprints repository: MESHGEN_BLUEPRINTS_TOKEN
  or MESHGEN_BLUEPRINTS_TOKEN_FILE with MESHGEN_BLUEPRINTS_USERNAME (default `x-access-token`).
  No token configured: anonymous (a public repository).
* **SSH** (`ssh://` and scp-like `git@host:org/repo.git`): the key in MESHGEN_GIT_SSH_KEY_FILE
  (passphrase, if any, in MESHGEN_GIT_SSH_KEY_PASSPHRASE_FILE), host keys checked against
  MESHGEN_GIT_KNOWN_HOSTS_FILE. Both files are required: an unknown or changed host key is
  refused, never trusted on first use.

A credential's token is a zero-argument callable (`TokenSource`) asked once per fetch / push, so
a refreshed token (a GitHub App installation token) or a rotated token file is used without a
restart. URLs stay credential-free: a URL with `user:password@` or `token@` is refused
(`url_credentials_problem`), the mirror's git config holds the bare URL, and every error message
is scrubbed of the token that was sent.

Why SSH goes through the git CLI and OpenSSH
--------------------------------------------
pygit2 1.21 (libgit2 1.9 built with libssh2) hands its `certificate_check` callback no usable SSH
host key object, and offers no way to point libgit2 at a known_hosts file of our choosing (libgit2
only reads `~/.ssh/known_hosts`, a process-wide home directory, and accepts what the callback
says). Verifying host keys by hand would mean re-implementing known_hosts parsing (hashed names,
`[host]:port`, markers). OpenSSH does all of it and is what every git host documents, so for SSH
remotes meshgen runs `git fetch` / `git push` from the same bare mirror with
`GIT_SSH_COMMAND="ssh -F /dev/null -i KEY -o IdentitiesOnly=yes -o IdentityAgent=none
-o UserKnownHostsFile=KNOWN_HOSTS -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
-o BatchMode=yes ..."` (with a passphrase: SSH_ASKPASS + SSH_ASKPASS_REQUIRE=force reading the
passphrase file, BatchMode off but password and keyboard-interactive auth disabled). The lease
keeps its meaning: `git push --force-with-lease=refs/heads/B:EXPECTED` (empty: must not exist),
which receive-pack checks under its ref lock exactly like libgit2's push with an old value.
HTTPS stays in libgit2 (no process per fetch; the lease check runs in push negotiation).

API used by `meshgen doctor` (exact signatures)
-----------------------------------------------
    env_repo_access(root: Path, config: Config, settings: Settings, forge: Forge | None)
        -> RemoteAccess | None                 # None: a local path
    blueprints_access(url: str, settings: Settings) -> RemoteAccess | None
    ls_remote(access: RemoteAccess) -> dict[str, str]
        # {"refs/heads/main": "<sha>", ...}; raises GitTransportError (operation "ls-remote")
    check_push(access: RemoteAccess) -> None
        # asks the server for push access without sending anything (libgit2: connect in push
        # direction = GET info/refs?service=git-receive-pack, which forges authorise as a push;
        # SSH: start git-receive-pack, read its ref advertisement, send a flush = no commands).
        # Raises GitTransportError (operation "push") when push would be refused.
    GitTransportError(EnvRepoError): .url (no credentials), .operation ("fetch", "push",
        "ls-remote", "configure"), .reason ("auth", "permission", "not-found", "host-key-unknown",
        "host-key-changed", "rejected" (a server hook or protection rule), "config", "network"),
        .permanent (False only for "network"), str() = the whole message with the fix.

Both builders raise GitTransportError (reason "config") for incomplete settings (an SSH URL without
key or known_hosts file, an unreadable token file).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import pygit2

from meshgen.forges.base import GitCredential, TokenSource, read_secret_file
from meshgen.gitops.envrepo import EnvRepoError, LeaseError
from meshgen.giturls import is_ssh_url, url_credentials_problem

if TYPE_CHECKING:
    from meshgen.blueprint.config import Config
    from meshgen.forges.base import Forge
    from meshgen.settings import Settings

__all__ = [
    "GitCredential", "GitTransportError", "RemoteAccess", "SshIdentity", "TokenSource",
    "blueprints_access", "check_push", "env_repo_access", "is_ssh_url", "ls_remote",
    "url_credentials_problem",
]

Reason = Literal["auth", "permission", "not-found", "host-key-unknown", "host-key-changed", "config",
                 "network", "rejected"]

_GIT_TIMEOUT = 600.0  # one git CLI call (SSH fetch / push of a large repository)


class GitTransportError(EnvRepoError):
    """Talking to a remote failed. The message names the remote (no credentials), the operation and
    the fix; `meshgen sync` exits 3 and the job ends failed with it."""

    def __init__(self, url: str, operation: str, reason: Reason, message: str) -> None:
        self.url = url
        self.operation = operation
        self.reason = reason
        super().__init__(message)

    @property
    def permanent(self) -> bool:
        """A retry would fail the same way (credentials, permissions, host keys, configuration)."""
        return self.reason != "network"


# --------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------


def _check_url(url: str, where: str) -> None:
    problem = url_credentials_problem(url, where)
    if problem:
        raise GitTransportError(_display(url), "configure", "config", problem)


def _display(url: str) -> str:
    """`url` safe to show: any userinfo of an http(s) URL replaced."""
    if url.startswith(("http://", "https://")):
        parts = urlsplit(url)
        if "@" in parts.netloc:
            return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
    return url


# --------------------------------------------------------------------------------------
# Token sources
# --------------------------------------------------------------------------------------


def _checked(value: str, source: str, url: str) -> str:
    value = value.strip()
    if not value:
        raise GitTransportError(url, "configure", "config", f"{source} is empty; put the git token there")
    if any(ch in value for ch in "\r\n\0"):
        raise GitTransportError(url, "configure", "config",
                                f"{source} holds more than one line; it must contain only the token")
    return value


def _env_token(name: str, url: str) -> TokenSource:
    source = f"environment variable {name}"

    def read() -> str:
        raw = os.environ.get(name)
        if raw is None:
            raise GitTransportError(url, "configure", "config", f"{source} is not set; export it with the git token")
        return _checked(raw, source, url)

    read()  # fail at configuration time, not in the middle of a fetch
    return read


def _file_token(path: Path, url: str) -> TokenSource:
    source = f"token file {path}"

    def read() -> str:
        try:
            raw = read_secret_file(path).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:  # strerror only: the content is the secret
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise GitTransportError(url, "configure", "config",
                                    f"cannot read {source}: {reason}; check the path and its permissions"
                                    ) from None
        return _checked(raw, source, url)

    read()
    return read


def _value_token(value: str, source: str, url: str) -> TokenSource:
    token = _checked(value, source, url)
    return lambda: token


# --------------------------------------------------------------------------------------
# SSH
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshIdentity:
    """The SSH key (and optional passphrase file) and the known_hosts file host keys must match."""

    key_file: Path
    known_hosts_file: Path
    passphrase_file: Path | None = None


def _ssh_identity(settings: Settings, url: str) -> SshIdentity:
    missing = [name for name, value in (("MESHGEN_GIT_SSH_KEY_FILE", settings.git_ssh_key_file),
                                        ("MESHGEN_GIT_KNOWN_HOSTS_FILE", settings.git_known_hosts_file))
               if value is None]
    if missing:
        raise GitTransportError(
            url, "configure", "config",
            f"{url} is an SSH URL but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
            "set MESHGEN_GIT_SSH_KEY_FILE to the private key (a deploy key) and MESHGEN_GIT_KNOWN_HOSTS_FILE to a "
            "known_hosts file holding the server's host key (from the forge's documented fingerprints, "
            "checked out of band; meshgen never trusts a host key on first use)")
    assert settings.git_ssh_key_file is not None and settings.git_known_hosts_file is not None
    identity = SshIdentity(settings.git_ssh_key_file.resolve(), settings.git_known_hosts_file.resolve(),
                           settings.git_ssh_key_passphrase_file.resolve()
                           if settings.git_ssh_key_passphrase_file else None)
    for label, path in (("MESHGEN_GIT_SSH_KEY_FILE", identity.key_file),
                        ("MESHGEN_GIT_KNOWN_HOSTS_FILE", identity.known_hosts_file),
                        ("MESHGEN_GIT_SSH_KEY_PASSPHRASE_FILE", identity.passphrase_file)):
        if path is not None and not path.is_file():
            raise GitTransportError(url, "configure", "config",
                                    f"{label} points to {path}, which is not a readable file; fix the path")
    return identity


_ASKPASS: Path | None = None


def _askpass_program() -> Path:
    """A tiny SSH_ASKPASS program printing the file named by MESHGEN_SSH_PASSPHRASE_FILE.

    The passphrase stays in its file: it is never in an environment variable or an argument."""
    global _ASKPASS
    if _ASKPASS is None or not _ASKPASS.exists():
        folder = Path(tempfile.mkdtemp(prefix="meshgen-askpass-"))
        program = folder / "askpass"
        program.write_text('#!/bin/sh\nexec cat -- "$MESHGEN_SSH_PASSPHRASE_FILE"\n')
        program.chmod(0o700)
        _ASKPASS = program
    return _ASKPASS


_PRIVATE_KEYS: dict[tuple[Path, int, int], Path] = {}


def _private_key(path: Path) -> Path:
    """`path`, or a private copy when OpenSSH would refuse the file as too open.

    ssh ignores a key readable by group or others (Kubernetes mounts secrets 0644, or 0440 with an
    fsGroup). The copy lives in a 0700 temporary folder, is 0600, and is reused while the key file
    is unchanged; it holds what the mounted file already holds.
    """
    st = path.stat()
    if st.st_mode & 0o077 == 0 and st.st_uid == os.geteuid():
        return path
    key = (path, st.st_mtime_ns, st.st_size)
    copy = _PRIVATE_KEYS.get(key)
    if copy is None or not copy.exists():
        folder = Path(tempfile.mkdtemp(prefix="meshgen-ssh-key-"))  # 0700
        copy = folder / "key"
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(read_secret_file(path))
        _PRIVATE_KEYS[key] = copy
    return copy


def _ssh_env(identity: SshIdentity) -> dict[str, str]:
    options = [
        "ssh", "-F", "/dev/null", "-i", str(_private_key(identity.key_file)),
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={identity.known_hosts_file}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
        "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
        "-o", "PreferredAuthentications=publickey", "-o", "ConnectTimeout=30",
        "-o", f"BatchMode={'no' if identity.passphrase_file else 'yes'}",
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_SSH_VARIANT": "ssh",
        "GIT_ALLOW_PROTOCOL": "ssh",  # these git commands reach SSH remotes only: no ext::, file:: or other helpers
        # meshgen owns the mirror: no background gc/maintenance forked off a fetch
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "gc.auto", "GIT_CONFIG_VALUE_0": "0",
        "GIT_CONFIG_KEY_1": "maintenance.auto", "GIT_CONFIG_VALUE_1": "false",
        "GIT_SSH_COMMAND": " ".join(shlex.quote(part) for part in options),
    }
    if identity.passphrase_file is not None:
        env.update({"SSH_ASKPASS": str(_askpass_program()), "SSH_ASKPASS_REQUIRE": "force",
                    "DISPLAY": os.environ.get("DISPLAY", ":0"),
                    "MESHGEN_SSH_PASSPHRASE_FILE": str(identity.passphrase_file)})
    return env


# --------------------------------------------------------------------------------------
# The access object
# --------------------------------------------------------------------------------------


_SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian (the image), Ubuntu, Alpine
_ca_set = False


def _use_system_ca() -> None:
    """libgit2 in pygit2's wheels brings its own OpenSSL, which does not look at the system's CA
    bundle: point it there for HTTPS (as the chart's clone init container does)."""
    global _ca_set
    if not _ca_set and _SYSTEM_CA.exists():
        pygit2.settings.set_ssl_cert_locations(str(_SYSTEM_CA), str(_SYSTEM_CA.parent))
    _ca_set = True


def _origin(url: str) -> str:
    """scheme://host[:port] of an http(s) URL, lower-cased (what a token is bound to); "" otherwise."""
    if not url.startswith(("http://", "https://")):
        return ""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port or default}"


class _Rejected(Exception):
    """Raised from the credentials callback when libgit2 asks twice: the server refused the first."""


class _Callbacks(pygit2.RemoteCallbacks):
    """HTTPS credentials for one fetch or push: the token is read from its source at the first ask."""

    def __init__(self, credential: GitCredential | None, url: str = "") -> None:
        super().__init__()
        self._credential = credential
        self._origin = _origin(url)
        self.asked = 0
        self.sent: str | None = None  # what to scrub from messages
        self.redirected: str | None = None  # the other origin that asked for the token

    def credentials(self, url: str, username_from_url: str | None, allowed_types: int) -> Any:
        self.asked += 1
        if self._credential is None or not allowed_types & pygit2.enums.CredentialType.USERPASS_PLAINTEXT:
            raise _Rejected()
        if self._origin and _origin(url) != self._origin:
            # libgit2 follows a redirect of the first request to any host and asks us again there:
            # the token is only for the host of the configured URL.
            self.redirected = _origin(url)
            raise _Rejected()
        if self.asked > 1:
            raise _Rejected()  # libgit2 would replay the same token until it gives up
        self.sent = self._credential.token()
        return pygit2.UserPass(self._credential.username, self.sent)


@dataclass(frozen=True)
class RemoteAccess:
    """How meshgen reaches one remote: its credential-free URL and either HTTPS credentials
    (`credential`, None = anonymous) or an SSH identity (`ssh`)."""

    url: str
    what: str  # "environment repository" / "blueprints repository", for messages
    credential: GitCredential | None = None
    ssh: SshIdentity | None = None
    #: Where a reader fixes the credential ("envRepo.git.tokenEnv in meshgen.yaml"), for messages.
    configure_hint: str = ""

    @property
    def is_ssh(self) -> bool:
        return self.ssh is not None

    def callbacks(self) -> _Callbacks:
        """Fresh libgit2 callbacks for one HTTPS fetch or push (the token is read at its first use)."""
        _use_system_ca()
        return _Callbacks(self.credential, self.url)

    # ---- fetch and push (used by meshgen.gitops.envrepo.Mirror / EnvRepo) --------------

    def fetch(self, repo: pygit2.Repository, remote: str, refspecs: Sequence[str]) -> None:
        """Fetch `refspecs` from `remote` (a remote of `repo` whose URL is self.url), pruning."""
        if self.ssh is not None:
            self._git(["--git-dir", str(repo.path), "fetch", "--prune", "--no-tags", "--quiet", remote,
                       *refspecs], "fetch")
            return
        callbacks = self.callbacks()
        try:
            repo.remotes[remote].fetch(list(refspecs), callbacks=callbacks,
                                       prune=pygit2.enums.FetchPrune.PRUNE)
        except (pygit2.GitError, _Rejected) as exc:
            raise self.failure("fetch", exc, callbacks) from None

    def push_with_lease(self, repo: pygit2.Repository, remote: str, src: str, branch: str,
                        expected: pygit2.Oid | None) -> None:
        """SSH only: `git push --force-with-lease` of local ref `src` to `refs/heads/<branch>`.

        Raises LeaseError when the branch is not at `expected` (None: must not exist)."""
        assert self.ssh is not None, "HTTPS pushes go through libgit2 (EnvRepo._transport_push)"
        dst = f"refs/heads/{branch}"
        lease = f"--force-with-lease={dst}:{expected if expected is not None else ''}"
        out = self._git(["--git-dir", str(repo.path), "push", "--porcelain", lease, remote, f"{src}:{dst}"],
                        "push", allow_failure=True)
        if out.returncode == 0:
            return
        text = out.stdout + out.stderr
        if "stale info" in text:
            heads = ls_remote(self)
            actual = heads.get(dst)
            raise LeaseError(branch, expected, pygit2.Oid(hex=actual) if actual else None)
        rejected = [line for line in out.stdout.splitlines() if line.startswith("!")]
        if rejected and "Permission" not in text and "denied" not in text.lower():
            raise GitTransportError(self.url, "push", "rejected",
                                    f"push to the {self.what} {self.url} was rejected: "
                                    f"{'; '.join(r.split(chr(9))[-1] for r in rejected)}; check branch "
                                    "protection rules and server hooks for refs/heads/meshgen/*")
        raise self._ssh_failure("push", text)

    # ---- errors -----------------------------------------------------------------------

    def failure(self, operation: str, exc: BaseException, callbacks: _Callbacks | None = None) -> GitTransportError:
        """A GitTransportError for an HTTPS failure of `operation` (libgit2's exception `exc`)."""
        text = str(exc)
        if callbacks is not None and callbacks.sent:
            text = text.replace(callbacks.sent, "<redacted>")
        where = f"{operation} {self.what} {self.url}"
        status = re.search(r"status code: (\d{3})", text)
        code = int(status.group(1)) if status else None
        cred = self.credential
        if callbacks is not None and callbacks.redirected:
            return GitTransportError(self.url, operation, "config", (
                f"{where}: the server redirected to {callbacks.redirected}, another host, which then asked for "
                "credentials; meshgen sends the token only to the host of the configured URL. If the repository "
                "moved there, configure its new URL"))
        if isinstance(exc, _Rejected) or isinstance(exc, pygit2.GitError) and (
                code == 401 or "authentication" in text.lower()):
            if cred is None:
                return GitTransportError(self.url, operation, "auth", (
                    f"{where}: the server wants credentials (HTTP 401) and none are configured; "
                    f"{self.configure_hint or 'configure a token'}"))
            return GitTransportError(self.url, operation, "auth", (
                f"{where}: the server rejected the credentials (HTTP 401: user {cred.username!r} with "
                f"{cred.source}); check that the token is valid and not expired, and that it belongs to this "
                f"host. {self.configure_hint}".rstrip()))
        if code == 403:
            if operation == "push":
                return GitTransportError(self.url, operation, "permission", (
                    f"{where}: push refused (HTTP 403): the token may read but not write this repository. Give "
                    "it write access (GitHub: Contents read/write, or a classic token with 'repo'; GitLab: "
                    "write_repository scope and Developer role; Gitea/Forgejo: write:repository), or check "
                    "branch protection for meshgen/* branches"))
            return GitTransportError(self.url, operation, "permission", (
                f"{where}: access refused (HTTP 403): the token cannot read this repository. Give it read "
                "access (GitHub: Contents read; GitLab: read_repository; Gitea: read:repository)"))
        if code == 404:
            return GitTransportError(self.url, operation, "not-found", (
                f"{where}: repository not found (HTTP 404). Check the URL; private repositories also answer "
                "404 when the token cannot see them, so check the token's repository access too"))
        return GitTransportError(self.url, operation, "network", (
            f"{where} failed: {text}. Check the URL, DNS, proxy and TLS settings and that the server is "
            "reachable, then retry"))

    def _ssh_failure(self, operation: str, stderr: str) -> GitTransportError:
        where = f"{operation} {self.what} {self.url}"
        assert self.ssh is not None
        kh = self.ssh.known_hosts_file
        detail = " ".join(line.strip() for line in stderr.splitlines() if line.strip())[-400:]
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "Host key for" in stderr and "has changed" in stderr:
            return GitTransportError(self.url, operation, "host-key-changed", (
                f"{where}: the server's SSH host key does not match the one in MESHGEN_GIT_KNOWN_HOSTS_FILE ({kh}); "
                "refusing to connect (someone may be intercepting the connection). If the server's key was "
                "really rotated, check the new fingerprint with its operator and replace the line in that file"))
        if "Host key verification failed" in stderr or "host key is known" in stderr:
            return GitTransportError(self.url, operation, "host-key-unknown", (
                f"{where}: the server's SSH host key is not in MESHGEN_GIT_KNOWN_HOSTS_FILE ({kh}); refusing to "
                "connect (meshgen never trusts a host key on first use). Add the server's host key line, checked "
                "against the fingerprint its operator publishes, to that file"))
        if "incorrect passphrase" in stderr or "bad passphrase" in stderr.lower() or "Load key" in stderr:
            return GitTransportError(self.url, operation, "auth", (
                f"{where}: the SSH key {self.ssh.key_file} could not be loaded ({detail}); check the key file "
                "and MESHGEN_GIT_SSH_KEY_PASSPHRASE_FILE"))
        if "Permission denied (publickey" in stderr or "Permission denied, please try again" in stderr:
            unlock = (" If the key has a passphrase, check that MESHGEN_GIT_SSH_KEY_PASSPHRASE_FILE "
                      f"({self.ssh.passphrase_file}) holds the right one (ssh skips a key it cannot unlock)."
                      if self.ssh.passphrase_file else "")
            return GitTransportError(self.url, operation, "auth", (
                f"{where}: the server refused the SSH key {self.ssh.key_file} (Permission denied). Add its public "
                "key to the repository as a deploy key (with write access for pushes) or to the bot user, or "
                f"point MESHGEN_GIT_SSH_KEY_FILE at the right key.{unlock}"))
        if re.search(r"does not appear to be a git repository|repository .* not found|not found|"
                     r"No such file or directory|does not exist", stderr, re.IGNORECASE):
            return GitTransportError(self.url, operation, "not-found", (
                f"{where}: repository not found ({detail}). Check the URL; forges also answer so when the key "
                "has no access to a private repository"))
        if re.search(r"permission to .* denied|denied to|read.only|write access", stderr, re.IGNORECASE) \
                or operation == "push" and "rejected" in stderr:
            return GitTransportError(self.url, operation, "permission", (
                f"{where}: push refused ({detail}). The key may read but not write: give the deploy key write "
                "access, or check branch protection for meshgen/* branches"))
        return GitTransportError(self.url, operation, "network", (
            f"{where} failed: {detail or 'no message'}. Check the URL, that the SSH server is reachable, and "
            "the key and known_hosts files"))

    def _git(self, args: list[str], operation: str, *, allow_failure: bool = False,
             ) -> subprocess.CompletedProcess[str]:
        assert self.ssh is not None
        try:
            out = subprocess.run(["git", *args], env=_ssh_env(self.ssh), capture_output=True, text=True,
                                 timeout=_GIT_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise GitTransportError(self.url, operation, "config",
                                    "SSH remotes need the git command-line tool (and OpenSSH's ssh): install git "
                                    "and openssh-client (the meshgen image has both)") from None
        except subprocess.TimeoutExpired:
            raise GitTransportError(self.url, operation, "network",
                                    f"{operation} {self.what} {self.url}: no answer within {_GIT_TIMEOUT:.0f} s; "
                                    "check that the SSH server is reachable") from None
        if out.returncode != 0 and not allow_failure:
            raise self._ssh_failure(operation, out.stderr)
        return out


# --------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------


def _forge_token_source(root: Path, config: Config, settings: Settings) -> str:
    fs = config.env_repo.forge
    if fs.token_file:
        path = Path(fs.token_file)
        return f"the forge token from token file {path if path.is_absolute() else root / path}"
    if fs.token_env == "MESHGEN_FORGE_TOKEN" and os.environ.get("MESHGEN_FORGE_TOKEN_FILE"):
        return f"the forge token from MESHGEN_FORGE_TOKEN_FILE ({os.environ['MESHGEN_FORGE_TOKEN_FILE']})"
    return f"the forge token from environment variable {fs.token_env}"


def env_repo_access(root: Path, config: Config, settings: Settings, forge: Forge | None) -> RemoteAccess | None:
    """How to reach meshgen.yaml's envRepo.url; None for a local path (no transport needed)."""
    url = config.env_repo.url
    if not (is_ssh_url(url) or "://" in url) or url.startswith("file://"):
        return None
    _check_url(url, "envRepo.url")
    what = "environment repository"
    if is_ssh_url(url):
        return RemoteAccess(url, what, ssh=_ssh_identity(settings, url))
    git = config.env_repo.git
    hint = ("Set envRepo.git.tokenEnv or envRepo.git.tokenFile in meshgen.yaml for a separate git token, or "
            "fix the forge token (envRepo.forge.tokenEnv / tokenFile; MESHGEN_FORGE_TOKEN[_FILE])")
    credential: GitCredential | None = None
    if git is not None and git.token_env:
        credential = GitCredential(git.username or "x-access-token", _env_token(git.token_env, url),
                                   f"envRepo.git.tokenEnv (environment variable {git.token_env})")
    elif git is not None and git.token_file:
        path = Path(git.token_file)
        path = path if path.is_absolute() else root / path
        credential = GitCredential(git.username or "x-access-token", _file_token(path, url),
                                   f"envRepo.git.tokenFile ({path})")
    elif forge is not None:
        credential = forge.git_credential()
        if credential is not None:
            credential = replace(credential, source=_forge_token_source(root, config, settings))
            if git is not None and git.username:
                credential = replace(credential, username=git.username)
    return RemoteAccess(url, what, credential=credential, configure_hint=hint)


def blueprints_access(url: str, settings: Settings) -> RemoteAccess | None:
    """How to reach MESHGEN_BLUEPRINTS_URL; None for a local path."""
    if not (is_ssh_url(url) or "://" in url) or url.startswith("file://"):
        return None
    _check_url(url, "MESHGEN_BLUEPRINTS_URL")
    what = "blueprints repository"
    if is_ssh_url(url):
        return RemoteAccess(url, what, ssh=_ssh_identity(settings, url))
    credential = None
    if settings.blueprints_token_file is not None:
        path = settings.blueprints_token_file
        credential = GitCredential(settings.blueprints_username, _file_token(path, url),
                                   f"MESHGEN_BLUEPRINTS_TOKEN_FILE ({path})")
    elif settings.blueprints_token is not None:
        credential = GitCredential(settings.blueprints_username,
                                   _value_token(settings.blueprints_token.get_secret_value(),
                                                "MESHGEN_BLUEPRINTS_TOKEN", url),
                                   "MESHGEN_BLUEPRINTS_TOKEN")
    return RemoteAccess(url, what, credential=credential,
                        configure_hint="Set MESHGEN_BLUEPRINTS_TOKEN or MESHGEN_BLUEPRINTS_TOKEN_FILE (and "
                                       "MESHGEN_BLUEPRINTS_USERNAME if the server wants a particular user)")


# --------------------------------------------------------------------------------------
# Checks for `meshgen doctor`
# --------------------------------------------------------------------------------------


def ls_remote(access: RemoteAccess) -> dict[str, str]:
    """The remote's refs ({"refs/heads/main": sha, "HEAD": sha}) read with the configured credentials."""
    if access.ssh is not None:
        out = access._git(["ls-remote", "--", access.url], "ls-remote")
        refs: dict[str, str] = {}
        for line in out.stdout.splitlines():
            sha, _, name = line.partition("\t")
            if name:
                refs[name] = sha
        return refs
    with tempfile.TemporaryDirectory(prefix="meshgen-ls-remote-") as tmp:
        repo = pygit2.init_repository(tmp, bare=True)
        remote = repo.remotes.create_anonymous(access.url)
        callbacks = access.callbacks()
        try:
            heads = remote.list_heads(callbacks=callbacks)
        except (pygit2.GitError, _Rejected) as exc:
            raise access.failure("ls-remote", exc, callbacks) from None
        return {head.name: str(head.oid) for head in heads if head.name}


def check_push(access: RemoteAccess) -> None:
    """Whether the server would accept a push from these credentials, without pushing anything."""
    if access.ssh is not None:
        # receive-pack advertises its refs, ls-remote answers with a flush packet (no commands), and
        # receive-pack exits: the forge's permission check at command start is all that runs.
        access._git(["-c", "protocol.version=0", "ls-remote", "--upload-pack=git-receive-pack", "--",
                     access.url], "push")
        return
    with tempfile.TemporaryDirectory(prefix="meshgen-push-check-") as tmp:
        repo = pygit2.init_repository(tmp, bare=True)
        remote = repo.remotes.create_anonymous(access.url)
        callbacks = access.callbacks()
        try:
            remote.connect(callbacks=callbacks, direction=_GIT_DIRECTION_PUSH)
        except (pygit2.GitError, _Rejected) as exc:
            raise access.failure("push", exc, callbacks) from None


_GIT_DIRECTION_PUSH = 1  # libgit2's GIT_DIRECTION_PUSH (pygit2 has no enum for it)
