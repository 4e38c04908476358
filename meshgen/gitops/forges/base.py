"""The one small interface every forge (GitHub, GitLab, Gitea, local) implements.

A forge only speaks pull requests. Moving branch refs is the environment-repository
writer's job (meshgen.gitops.envrepo), so a provider never touches git objects itself,
except the local forge, whose "server" is the repository.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol, runtime_checkable

PRState = Literal["open", "merged", "closed"]

#: Gives the current token each time it is called (once per fetch or push): a token that is
#: refreshed (a GitHub App installation token) or rotated on disk is picked up without a restart.
TokenSource = Callable[[], str]

#: A token, key or passphrase file is a few KiB at most; anything larger is not one.
MAX_SECRET_FILE_BYTES = 64 * 1024


def read_secret_file(path: Path, limit: int = MAX_SECRET_FILE_BYTES) -> bytes:
    """The bytes of a small regular file holding a secret (token, key), read without blocking.

    A FIFO or device would block the reader (a sync, a worker) forever and a huge file would be
    read whole into memory: both are refused with an OSError whose strerror says why, like a
    missing file, so callers report `exc.strerror` (never the content).
    """
    # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes, so not a token or key file", str(path))
    return b"".join(chunks)


@dataclass(frozen=True)
class GitCredential:
    """HTTPS credentials for git: `username` and a token used as the password.

    `source` says where the token comes from ("environment variable MESHGEN_FORGE_TOKEN"), for
    error messages; it never holds the token. The token is only read through `token()`.
    """

    username: str
    token: TokenSource = field(repr=False)
    source: str = "the forge token"


@dataclass(frozen=True)
class PullRequest:
    """A pull request (GitHub, Gitea, local) or merge request (GitLab), as meshgen sees it."""

    number: int
    title: str
    body: str
    state: PRState
    branch: str  # the head branch, e.g. meshgen/staging/production/api-service
    base: str  # the branch it merges into
    head_sha: str
    merge_sha: str | None
    url: str
    labels: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        # Built from a forge's answer: a field of the wrong type is an unexpected answer (the
        # providers turn this TypeError into a ForgeError), not a crash later in the sync.
        texts = (self.title, self.body, self.branch, self.base, self.head_sha, self.url, *self.labels)
        if (type(self.number) is not int or not all(isinstance(t, str) for t in texts)
                or not isinstance(self.merge_sha, (str, type(None)))):
            raise TypeError("a pull request field has the wrong type")


class ForgeError(RuntimeError):
    """A forge call failed for good (after retries). The message never contains a token."""


@runtime_checkable
class Forge(Protocol):
    """What meshgen needs from a forge. One implementation per file in this package."""

    kind: ClassVar[str]

    def find_open(self, branch: str) -> PullRequest | None:
        """The open pull request whose head is `branch`, if any."""

    def create(self, *, branch: str, base: str, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        """Open a pull request from `branch` into `base` and set its labels."""

    def update(self, number: int, *, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        """Refresh title, description and labels of an open pull request."""

    def comment(self, number: int, body: str) -> None:
        """Add a comment to the pull request's conversation."""

    def close(self, number: int, *, comment: str | None = None) -> PullRequest:
        """Close without merging, optionally commenting first (why it was closed)."""

    def merge(self, number: int) -> PullRequest:
        """Merge the pull request; the result carries merge_sha."""

    def get(self, number: int) -> PullRequest:
        """One pull request by number."""

    def list(self, state: PRState | None = None) -> list[PullRequest]:
        """Pull requests opened by meshgen (head branch under meshgen/), newest first."""

    def check_access(self) -> str:
        """Whether this credential can push branches and open pull requests on the repository
        (`meshgen doctor`): a sentence saying what was verified, or ForgeError with the fix."""

    def git_credential(self) -> GitCredential | None:
        """The forge's token as HTTPS git credentials, in the forge's username convention.

        meshgen.gitops.transport uses it for the environment repository unless meshgen.yaml's
        envRepo.git names a separate credential. None: this forge has no token (local).
        """


@runtime_checkable
class PlanReporter(Protocol):
    """What `meshgen plan` needs from the blueprints repository's forge (GitHub, GitLab, Gitea)."""

    def upsert_comment(self, number: int, marker: str, body: str) -> int:
        """Edit the pull request's comment that contains `marker` in place, or add it; its id."""

    def set_status(self, sha: str, state: str, description: str, context: str) -> None:
        """Set a commit status (success, failure, pending, error) named `context` on `sha`."""
