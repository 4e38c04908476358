"""Whether a synced revision contains a merge: asked of the environment repository's bare mirror.

The mirror is the one the sync worker keeps under <state dir>/mirrors; the poller fetches it
after every poll so the revisions Argo CD reports are present locally. Commit ancestry never
changes, so definite answers are cached; "not in the mirror yet" is not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pygit2

from meshgen.blueprint.config import Config
from meshgen.gitops.envrepo import EnvRepo, EnvRepoError
from meshgen.giturls import local_path
from meshgen.settings import Settings

_HEX40 = frozenset("0123456789abcdef")
_CACHE_CAP = 200_000


def env_repo_remote(config: Config, settings: Settings) -> str:
    """The remote as the sync worker names it (so both use the same mirror folder)."""
    local = local_path(config.env_repo.url, settings.root)
    return str(local) if local is not None else config.env_repo.url


def open_mirror(config: Config, settings: Settings) -> EnvRepo:
    """The worker's mirror of the environment repository (created empty if absent). Raises EnvRepoError."""
    return EnvRepo(env_repo_remote(config, settings), cache_dir=settings.state_path)


class Containment:
    """`contains(descendant, ancestor)` over a mirror, cached; None when a commit is unknown.

    `opener` is retried (at most every `retry_seconds`) until the mirror exists: the API may
    start before the worker or the poller has created it.
    """

    def __init__(self, opener: Callable[[], EnvRepo | None], *, retry_seconds: float = 10.0) -> None:
        self._opener = opener
        self._repo: pygit2.Repository | None = None
        self._next_try = 0.0
        self._retry = retry_seconds
        self._known: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    def _repository(self) -> pygit2.Repository | None:
        if self._repo is None and time.monotonic() >= self._next_try:
            self._next_try = time.monotonic() + self._retry
            mirror = self._opener()
            self._repo = mirror.repo if mirror is not None else None
        return self._repo

    def __call__(self, descendant: str, ancestor: str) -> bool | None:
        if descendant == ancestor:
            return True
        key = (descendant, ancestor)
        hit = self._known.get(key)
        if hit is not None:
            return hit
        if not _is_sha(descendant) or not _is_sha(ancestor):
            return None  # helm chart versions, branch names: never a commit of the environment repository
        d, a = pygit2.Oid(hex=descendant), pygit2.Oid(hex=ancestor)
        with self._lock:  # one pygit2 Repository is not safe for concurrent use
            repo = self._repository()
            if repo is None:
                return None
            try:
                # libgit2 rescans the pack folder on a miss, so commits fetched since we opened
                # the mirror are found without reopening it.
                if d not in repo or a not in repo:
                    return None
                answer = bool(repo.descendant_of(d, a))
            except (pygit2.GitError, ValueError):
                return None
        if len(self._known) >= _CACHE_CAP:
            self._known.clear()
        self._known[key] = answer
        return answer


def _is_sha(value: str) -> bool:
    return len(value) == 40 and set(value) <= _HEX40


def try_open_mirror(config: Config, settings: Settings) -> tuple[EnvRepo | None, str | None]:
    try:
        return open_mirror(config, settings), None
    except (EnvRepoError, pygit2.GitError, OSError) as exc:
        return None, str(exc)
