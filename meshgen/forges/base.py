"""The one small interface every forge (GitHub, GitLab, Gitea, local) implements, and what a forge
registers (ForgeSpec: how to build it, its meshgen.yaml fields, token convention and webhooks).

This package is a low layer: nothing here imports meshgen's domain (blueprints, settings, gitops),
so meshgen.yaml's validation, the process settings and the API can all derive from the registry
(meshgen.forges.registry).

A forge only speaks pull requests. Moving branch refs is the environment-repository
writer's job (meshgen.gitops.envrepo), so a provider never touches git objects itself,
except the local forge, whose "server" is the repository.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

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
class Identity:
    """Author and committer of meshgen's commits."""

    name: str = "meshgen"
    email: str = "meshgen@localhost"


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


# ---- what a forge registers (meshgen.forges.registry) -------------------------------------


@dataclass(frozen=True)
class ForgeTarget:
    """What a provider is built from: meshgen.yaml's envRepo.forge, reduced to plain values.

    `fields` holds the envRepo.forge keys that are set, as meshgen.yaml spells them (owner, repo,
    project, baseUrl, app: a mapping). `credentials` is the token handling meshgen.yaml chose, as the
    providers' keyword arguments (token, token_env or token_file), or for an app: app and
    app_private_key_file. `options` tune HTTP (timeouts, retries: doctor and tests).
    """

    fields: Mapping[str, Any]
    credentials: Mapping[str, Any]
    local_path: Path | None
    identity: Identity
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Push:
    """A push, as every forge's push webhook reduces to it."""

    repository: str  # owner/name, GitLab group/project
    ref: str
    commit: str
    author: str | None


#: A pull-request event's action, the same words for every forge.
PRAction = Literal["opened", "updated", "reopened", "merged", "closed", "other"]


@dataclass(frozen=True)
class PullRequestEvent:
    """A pull-request webhook of any forge (GitLab: merge request): what happened, to which."""

    action: PRAction
    repository: str  # owner/name, GitLab group/project
    pull_request: PullRequest
    base_sha: str | None = None  # the target branch's commit the forge compared with, if it says


#: Request headers as the webhook route has them (case-insensitive in practice: starlette's Headers).
Headers = Mapping[str, str]


@dataclass(frozen=True)
class WebhookSpec:
    """How a forge signs, names and shapes its webhooks.

    The route (meshgen.api.webhooks) checks `signature_header` is present before it reads the body,
    calls `verify` with the secret and the raw body before anything is parsed, and only then reads
    `event_header`. `verify` must compare in constant time (hmac.compare_digest; see verify_hmac_sha256
    and verify_token). Parsers get the decoded JSON (any type: a hostile payload need not be an object)
    and raise ValueError, KeyError, TypeError or AttributeError for a payload that is not the forge's
    documented shape (a 400 problem).
    """

    signature_header: str  # lower case, e.g. x-hub-signature-256
    verify: Callable[[str, bytes, Headers], bool]
    event_header: str  # e.g. x-github-event
    delivery_headers: tuple[str, ...]  # a delivery's id, first present wins (replays are dropped by it)
    push_events: tuple[str, ...]
    parse_push: Callable[[Any], Push]
    pr_events: tuple[str, ...] = ()
    #: The normalised action of a pull-request event, read before the rest (uninteresting actions
    #: are acknowledged without parsing further).
    pr_action: Callable[[Any], PRAction] | None = None
    parse_pr: Callable[[Any], PullRequestEvent] | None = None
    #: Where the forge exposes a pull request's head ({n}: its number), for heads in forks.
    pr_head_ref: str | None = None
    ping_events: tuple[str, ...] = ()  # answered "pong" once verified
    #: The settings table's meaning of MESHGEN_WEBHOOK_SECRET_<KIND>.
    secret_help: str = ""


@dataclass(frozen=True)
class ForgeSpec:
    """Everything meshgen needs to know about one forge kind; one per module, registered once.

    `required` and `optional` name the envRepo.forge keys of meshgen.yaml this kind needs or also
    accepts (beyond kind, tokenEnv, tokenFile, which every kind takes); meshgen.yaml's validation
    asks the registry. `build` makes the provider; `provider` is its class (make_forge takes its
    keyword arguments). `git_username` is the HTTPS git username that goes with the forge's token
    (None: no token, e.g. local). `repository` names the repository from the envRepo.forge fields
    as the forge's webhooks name it (owner/name); `reporter` builds the PlanReporter of a
    repository so named, for plans on blueprints pull requests: (repository, api_url, token).
    """

    kind: str
    title: str  # how people write it: GitHub, GitLab, Gitea / Forgejo
    provider: Callable[..., Forge]
    build: Callable[[ForgeTarget], Forge]
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    git_username: str | None = None
    repository: Callable[[Mapping[str, Any]], str] | None = None
    reporter: Callable[[str, str, str | None], PlanReporter] | None = None
    webhook: WebhookSpec | None = None


def verify_hmac_sha256(header: str, *, prefix: str = "", lower: bool = False) -> Callable[[str, bytes, Headers], bool]:
    """A verifier of an HMAC-SHA256 hex digest of the body in `header` (GitHub: prefix "sha256=")."""

    def verify(secret: str, body: bytes, headers: Headers) -> bool:
        given = headers.get(header, "")
        expected = prefix + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest((given.lower() if lower else given).encode(), expected.encode())

    return verify


def verify_token(header: str) -> Callable[[str, bytes, Headers], bool]:
    """A verifier of a shared token sent as it is in `header` (GitLab's X-Gitlab-Token)."""

    def verify(secret: str, body: bytes, headers: Headers) -> bool:
        return hmac.compare_digest(headers.get(header, "").encode(), secret.encode())

    return verify


def text(value: Any) -> str:
    """A payload value that should be text, or "" (parsers stay lenient about optional fields)."""
    return value if isinstance(value, str) else ""
