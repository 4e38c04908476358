"""The blueprints repository as a sync renders it: fetched, resolved to one commit, materialised.

With `MESHGEN_BLUEPRINTS_URL` set, every sync (worker task or `meshgen sync`) calls
`checkout_blueprints` under the writer lock, after noting the newest request generation:

1. fetch the repository into a bare mirror, `<state>/mirrors/blueprints-<hash>.git` (the
   mirror code of meshgen.gitops.envrepo);
2. resolve the commit to render: the tip of the branch. A pushed commit (the webhook's sha,
   `meshgen sync --commit`) must be that tip or one of its ancestors: when newer pushes landed
   since, the newest state wins (one sync covers the burst). A commit that is not on the branch
   is refused (BlueprintsSourceError; retrying would not help);
3. write that commit's `meshgen.yaml` and `blueprints/` into `<state>/checkouts/<commit>`:
   built in a temporary folder and renamed into place, so a checkout folder that exists is
   complete (a crash leaves only a `.tmp-*` folder, removed by the next call);
4. keep the three most recently used checkouts, remove older ones.

Objects are read from the mirror with pygit2; there is no work tree and no index. Only blobs
are written: symlinks and submodules in the blueprints tree are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2

from meshgen.blueprint.loading import BLUEPRINTS_DIR, CONFIG_FILE
from meshgen.gitops.envrepo import EnvRepoError, Mirror, _mirror_lock
from meshgen.giturls import local_path

if TYPE_CHECKING:
    from meshgen.gitops.transport import RemoteAccess

KEEP_CHECKOUTS = 3
_TMP = ".tmp-"


class BlueprintsSourceError(RuntimeError):
    """The blueprints repository cannot give what the sync asks for (unknown branch, a commit not on
    the branch, no blueprints/ folder). Not retried: the same request would fail the same way."""


class _BlueprintsMirror(Mirror):
    what = "blueprints repository"
    missing_hint = "fix MESHGEN_BLUEPRINTS_URL (a git URL, a local path or file://)"


def checkout_blueprints(
    url: str,
    branch: str,
    state_path: Path,
    commit: str | None = None,
    *,
    callbacks: pygit2.RemoteCallbacks | None = None,
    access: RemoteAccess | None = None,
) -> tuple[Path, str]:
    """Fetch `url`, resolve the commit to render on `branch`, materialise it; (folder, commit sha).

    `commit` (a pushed sha, full or abbreviated) must be on `branch`; the returned sha is the
    branch's tip, which is `commit` itself or newer. Raises BlueprintsSourceError for what a
    retry cannot fix and EnvRepoError when fetching fails (network, locks: worth a retry;
    GitTransportError, a subclass, for credentials, permissions and host keys). `access`
    (meshgen.gitops.transport.blueprints_access) carries the HTTPS token or SSH key.
    """
    local = local_path(url)
    if local is not None and not local.exists():
        raise BlueprintsSourceError(f"blueprints repository {local} does not exist; fix MESHGEN_BLUEPRINTS_URL")
    state_path = Path(state_path)
    mirror = _BlueprintsMirror(url, cache_dir=state_path, callbacks=callbacks, prefix="blueprints-", access=access)
    mirror.fetch()
    tip = mirror.commit_at(branch)
    if tip is None:
        raise BlueprintsSourceError(
            f"branch {branch!r} does not exist in the blueprints repository {mirror.remote}; "
            "set MESHGEN_BLUEPRINTS_BRANCH to one of its branches")
    if commit:
        _check_on_branch(mirror.repo, tip, commit, branch, mirror.remote)
    return materialise(mirror.repo, tip, state_path / "checkouts"), str(tip.id)


def _check_on_branch(repo: pygit2.Repository, tip: pygit2.Commit, commit: str, branch: str, remote: str) -> None:
    refused = (f"commit {commit} is not on branch {branch!r} of the blueprints repository {remote} "
               f"(its tip is {str(tip.id)[:12]}); refusing to render it. Was the branch force-pushed, "
               "or did the push go to another branch?")
    obj = None
    if re.fullmatch(r"[0-9a-fA-F]{4,40}", commit):
        try:
            obj = repo.revparse_single(commit)
        except (KeyError, ValueError, pygit2.GitError):
            obj = None
    if obj is None or not isinstance(obj, pygit2.Commit):
        raise BlueprintsSourceError(refused)
    if obj.id != tip.id and not repo.descendant_of(tip.id, obj.id):
        raise BlueprintsSourceError(refused)


def materialise(repo: pygit2.Repository, commit: pygit2.Commit, checkouts: Path) -> Path:
    """`<checkouts>/<sha>` holding the commit's meshgen.yaml and blueprints/ (reused when present)."""
    checkouts.mkdir(parents=True, exist_ok=True)
    sha = str(commit.id)
    dest = checkouts / sha
    with _mirror_lock(checkouts / ".lock"):  # one writer of this folder at a time (processes share it)
        for leftover in checkouts.glob(f"{_TMP}*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a crash mid-write; nobody else writes now
        if not dest.is_dir():
            tree = commit.tree
            if BLUEPRINTS_DIR not in tree or not isinstance(tree[BLUEPRINTS_DIR], pygit2.Tree):
                raise BlueprintsSourceError(
                    f"commit {sha[:12]} of the blueprints repository has no {BLUEPRINTS_DIR}/ folder; "
                    "refusing to render it (that would remove every rendered service). Check "
                    "MESHGEN_BLUEPRINTS_URL and MESHGEN_BLUEPRINTS_BRANCH")
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}{sha[:12]}-", dir=checkouts))
            try:
                if CONFIG_FILE in tree and tree[CONFIG_FILE].type_str == "blob":
                    (tmp / CONFIG_FILE).write_bytes(tree[CONFIG_FILE].peel(pygit2.Blob).data)
                _write_tree(repo, tree[BLUEPRINTS_DIR].peel(pygit2.Tree), tmp / BLUEPRINTS_DIR)
                os.rename(tmp, dest)  # atomic: `dest` is complete or absent
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        os.utime(dest)  # "recently used" is what the cleanup keeps
        _prune(checkouts, keep=dest)
    return dest


def _write_tree(repo: pygit2.Repository, tree: pygit2.Tree, dest: Path) -> None:
    dest.mkdir()
    for entry in tree:
        name = entry.name or ""
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise BlueprintsSourceError(f"the blueprints tree has an unsafe entry name {name!r}; refusing it")
        if entry.filemode == pygit2.GIT_FILEMODE_TREE:
            _write_tree(repo, repo[entry.id].peel(pygit2.Tree), dest / name)
        elif entry.filemode in (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE):
            (dest / name).write_bytes(repo[entry.id].peel(pygit2.Blob).data)
        # symlinks (could point anywhere) and submodules (no objects here) are not written


def _prune(checkouts: Path, *, keep: Path) -> None:
    done = [p for p in checkouts.iterdir() if p.is_dir() and not p.name.startswith(".")]
    done.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in done if p != keep][KEEP_CHECKOUTS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def blueprints_remote(url: str, root: Path) -> str:
    """MESHGEN_BLUEPRINTS_URL with a relative local path taken relative to ROOT (like envRepo.url)."""
    local = local_path(url)
    if local is None or url.startswith("file://") or local.is_absolute():
        return url
    return str(root / local)


__all__ = ["BlueprintsSourceError", "EnvRepoError", "blueprints_remote", "checkout_blueprints", "materialise"]
