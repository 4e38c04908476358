"""What a git remote URL is: a local path, SSH (`ssh://`, scp-like `git@host:path`) or HTTPS, and
whether it carries a secret. Plain string rules, shared by meshgen.yaml's checks (blueprint.config),
the transport, the mirrors and `bootstrap argocd`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>\[[^\]]+\]|[^/:]+):(?!//)")


def local_path(remote: str, root: Path | None = None) -> Path | None:
    """The filesystem path of a local remote (`/path`, `./path`, `file:///path`), else None; a
    relative path is taken relative to `root` when given (meshgen.yaml's folder)."""
    if remote.startswith("file://"):
        return Path(remote[len("file://") :])
    if "://" in remote or (":" in remote.split("/")[0] and not os.path.isabs(remote)):
        return None  # https://, ssh://, scp-like git@host:path
    path = Path(remote)
    return root / path if root is not None and not path.is_absolute() else path


def is_ssh_url(url: str) -> bool:
    """`ssh://…`, `git+ssh://…` or scp-like `user@host:path` (git's own rule: a colon before any slash)."""
    if url.startswith(("ssh://", "git+ssh://", "ssh+git://")):
        return True
    if "://" in url or os.path.isabs(url) or url.startswith("."):
        return False
    return _SCP_LIKE.match(url) is not None


def url_credentials_problem(url: str, where: str) -> str | None:
    """Why `url` must not be used as given (it carries a secret), or None when it is fine.

    `where` names the setting ("envRepo.url", "MESHGEN_BLUEPRINTS_URL") for the message.
    An SSH user name (`git@host`, `ssh://git@host/…`) is not a secret; a password in an SSH URL is.
    Also refused: what git would read as something else than a remote (see `_unsafe_url_problem`).
    """
    unsafe = _unsafe_url_problem(url, where)
    if unsafe:
        return unsafe
    if is_ssh_url(url):
        if url.startswith(("ssh://", "git+ssh://", "ssh+git://")) and urlsplit(url).password is not None:
            return (f"{where} contains a password; SSH remotes authenticate with a key: remove it from "
                    "the URL and set MESHGEN_GIT_SSH_KEY_FILE (and MESHGEN_GIT_KNOWN_HOSTS_FILE)")
        return None
    if not url.startswith(("http://", "https://")):
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None and "@" not in parts.netloc:
        return None
    host = parts.hostname or "the host"
    if where == "envRepo.url":
        fix = ("put the token in an environment variable or file and name it in envRepo.git.tokenEnv / "
               "envRepo.git.tokenFile (the username in envRepo.git.username), or let meshgen use the forge "
               "token (envRepo.forge.tokenEnv / tokenFile)")
    else:
        fix = ("put the token in MESHGEN_BLUEPRINTS_TOKEN or a file named by MESHGEN_BLUEPRINTS_TOKEN_FILE "
               "(the username in MESHGEN_BLUEPRINTS_USERNAME)")
    return (f"{where} contains credentials (user or token before '@{host}'); a token in the URL would be "
            f"written to configuration, the mirror's git config and error messages. Remove it from the URL: {fix}")


_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCHEMES = ("http", "https", "ssh", "git+ssh", "ssh+git", "git", "file")


def _unsafe_url_problem(url: str, where: str) -> str | None:
    """Why git must not be handed `url`: an argument starting with `-` is an option to the git CLI
    (`--upload-pack=CMD` runs CMD), `transport::address` runs a remote helper (`ext::sh -c …`), and a
    URL scheme other than http(s)/ssh/file is no transport meshgen authenticates."""
    fix = ("use https://HOST/ORG/REPO.git, ssh://git@HOST/ORG/REPO.git, git@HOST:ORG/REPO.git or a local path")
    if url.startswith("-"):
        return f"{where} starts with '-', which git would read as an option, not a repository; {fix}"
    if _REMOTE_HELPER.match(url):
        return (f"{where} uses git's remote-helper syntax ('{url.split('::', 1)[0]}::'), which runs a program "
                f"instead of contacting a server; {fix}")
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in _SCHEMES:
            return f"{where} has the scheme '{scheme}://', which meshgen does not support; {fix}"
    if is_ssh_url(url):
        if url.startswith(("ssh://", "git+ssh://", "ssh+git://")):
            parts = urlsplit(url)
            user, host, path = parts.username or "", parts.hostname or "", parts.path.lstrip("/")
        else:
            head, _, path = url.partition(":")
            user, _, host = head.rpartition("@")
        for label, value in (("user", user), ("host", host), ("path", path)):
            if value.startswith("-"):
                return (f"{where}: the SSH {label} starts with '-', which ssh or the server's git would read as an "
                        f"option; {fix}")
    return None
