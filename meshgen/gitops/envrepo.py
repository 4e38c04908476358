"""The environment-repository writer: a bare mirror, trees built in memory, leased pushes.

Three rules shape this module:

* No work tree, no index file. Trees are built with pygit2 TreeBuilders straight into the
  object database of a bare mirror, so a checkout of a 10,000-service repository is never
  paid for.
* A commit costs what it changes. Only the trees on the path from the root to a changed
  folder are rebuilt; every other subtree keeps its OID from the base tree. The one
  deliberate exception is `stale_folders`, which lists `<env>/*/*` (folder level only) to
  find deleted blueprints.
* meshgen only ever touches what it owns: files whose YAML carries
  `app.kubernetes.io/managed-by: meshgen` in the owned folders. Foreign files next to them
  are carried over untouched, and a unit may not overwrite one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Union

import pygit2

if TYPE_CHECKING:
    from meshgen.gitops.transport import RemoteAccess

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: shared caches are then not supported
    fcntl = None  # type: ignore[assignment]

from meshgen.forges.base import Identity  # also imported from here (tests, the bench)
from meshgen.giturls import local_path
from meshgen.units import MESH_SERVICE, Unit, is_managed

_MESHGEN = Identity()  # the default author and committer
_BLOB = pygit2.GIT_FILEMODE_BLOB
_TREE = pygit2.GIT_FILEMODE_TREE
_REMOTE = "origin"
_TRACKING = "refs/remotes/origin/"
_TMP_PREFIX = "refs/meshgen/tmp/"


class EnvRepoError(RuntimeError):
    """Writing to the environment repository failed; the message says what to do next."""


class LeaseError(EnvRepoError):
    """The remote branch moved since we last fetched it (someone else pushed). Re-fetch and retry."""

    def __init__(self, branch: str, expected: pygit2.Oid | None, actual: pygit2.Oid | None) -> None:
        self.branch = branch
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"refusing to overwrite branch {branch!r}: it points to {_short(actual)}, "
            f"but we last saw {_short(expected)}; someone else pushed to it. "
            "Fetch again and re-run (meshgen rebuilds the branch from the new state)."
        )


# --------------------------------------------------------------------------------------
# Tree building (pure functions over a pygit2 repository; used by EnvRepo and the bench)
# --------------------------------------------------------------------------------------

# Content-addressed caches: a blob OID always has the same content and a tree OID the same
# entries, so these are valid across repositories and never need invalidation. Capped so a
# long-running process cannot grow them without bound.
_MANAGED_BLOBS: dict[pygit2.Oid, bool] = {}
_OWNED_TREES: dict[pygit2.Oid, bool] = {}
_CACHE_CAP = 500_000


def _cached(cache: dict[pygit2.Oid, bool], key: pygit2.Oid, compute: Callable[[], bool]) -> bool:
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= _CACHE_CAP:
            cache.clear()
        hit = cache[key] = compute()
    return hit


def _blob_data(repo: pygit2.Repository, oid: pygit2.Oid) -> bytes:
    return repo[oid].peel(pygit2.Blob).data


def _tree(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Tree:
    return repo[oid].peel(pygit2.Tree)


def _name(entry: pygit2.Object) -> str:
    return entry.name or ""  # entries of a tree always have a name; the stubs say Optional


def _blob_is_managed(repo: pygit2.Repository, oid: pygit2.Oid) -> bool:
    return _cached(_MANAGED_BLOBS, oid, lambda: is_managed(_blob_data(repo, oid)))


def _is_yaml(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def _folder_is_owned(repo: pygit2.Repository, tree: pygit2.Tree) -> bool:
    """A folder is meshgen's when one of its YAML files carries the managed-by label."""

    def compute() -> bool:
        return any(e.type_str == "blob" and _is_yaml(_name(e)) and _blob_is_managed(repo, e.id) for e in tree)

    return _cached(_OWNED_TREES, tree.id, compute)


def _norm_path(path: str) -> str:
    parts = [p for p in path.strip().split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise EnvRepoError(f"path {path!r} must stay inside the environment repository (no '..')")
    return "/".join(parts)


def lookup_tree(tree: pygit2.Tree | None, path: str) -> pygit2.Tree | None:
    """The subtree at `path` ("" = `tree` itself), or None when absent or not a folder."""
    if tree is None:
        return None
    path = _norm_path(path)
    if not path:
        return tree
    try:
        obj = tree[path]
    except KeyError:
        return None
    return obj if isinstance(obj, pygit2.Tree) else None


def managed_files(repo: pygit2.Repository, tree: pygit2.Tree | None, folder: str) -> dict[str, bytes]:
    """The meshgen-owned files of `folder` in `tree`, by name (what a unit last rendered)."""
    sub = lookup_tree(tree, folder)
    if sub is None:
        return {}
    return {
        _name(e): _blob_data(repo, e.id) for e in sub if e.type_str == "blob" and _blob_is_managed(repo, e.id)
    }


def _check_file_names(folder: str, files: Mapping[str, bytes]) -> None:
    for name in files:
        if not name or "/" in name or name in (".", ".."):
            raise EnvRepoError(
                f"unit {folder!r}: file name {name!r} must be a plain file name inside the folder "
                "(no '/'); the renderer decides one folder per unit"
            )


def folder_differs(repo: pygit2.Repository, base_tree: pygit2.Tree | None, unit: Unit) -> bool:
    """Whether writing `unit` would change its folder in `base_tree`.

    Hash-only (pygit2.hash, nothing written) and limited to the one folder, so checking
    every unit of a large fleet stays cheap. Same semantics as the writer: foreign files
    stay, owned files not in the unit go.
    """
    _check_file_names(unit.folder, unit.files)
    base = lookup_tree(base_tree, unit.folder)
    if base is None:
        return bool(unit.files)
    entries = {e.name: e for e in base}
    for name, data in unit.files.items():
        entry = entries.get(name)
        if entry is None or entry.id != pygit2.hash(data) or entry.filemode != _BLOB:
            return True
    return any(
        name not in unit.files and e.type_str == "blob" and _blob_is_managed(repo, e.id)
        for name, e in entries.items()
    )


def _write_folder(
    repo: pygit2.Repository, folder: str, base: pygit2.Tree | None, files: Mapping[str, bytes] | None
) -> pygit2.Oid | None:
    """The new tree of one owned folder: foreign entries kept, owned files replaced by `files`."""
    builder = repo.TreeBuilder()
    kept: set[str] = set()
    for entry in base or ():
        if entry.type_str == "blob" and _blob_is_managed(repo, entry.id):
            continue  # ours: replaced (or dropped) below
        builder.insert(_name(entry), entry.id, entry.filemode)
        kept.add(_name(entry))
    for name in sorted(files or {}):
        if name in kept:
            raise EnvRepoError(
                f"{folder}/{name} exists in the environment repository without the label "
                "'app.kubernetes.io/managed-by: meshgen', so meshgen will not overwrite it. "
                "Delete or rename that file in the environment repository, or rename the rendered file."
            )
        builder.insert(name, repo.create_blob(files[name]), _BLOB)  # type: ignore[index]
    if len(builder) == 0:
        return None  # git has no empty folders: the folder disappears
    return builder.write()


# A nested edit plan: folder name -> deeper plan, or the final OID (None = remove entry).
_Plan = dict[str, Union["_Plan", pygit2.Oid, None]]


def _apply(repo: pygit2.Repository, tree: pygit2.Tree | None, plan: _Plan, where: str) -> pygit2.Oid | None:
    """Rebuild `tree` along `plan` only; siblings keep their OIDs (this is what keeps commits O(depth))."""
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    for name, step in plan.items():
        if isinstance(step, dict):
            sub = None
            if tree is not None and name in tree:
                obj = tree[name]
                if not isinstance(obj, pygit2.Tree):
                    raise EnvRepoError(
                        f"{where}{name} is a file in the environment repository, but meshgen needs a "
                        "folder there; move that file away"
                    )
                sub = obj
            new = _apply(repo, sub, step, f"{where}{name}/")
        else:
            new = step
        if new is None:
            if builder.get(name) is not None:
                builder.remove(name)
        else:
            builder.insert(name, new, _TREE)
    if len(builder) == 0:
        return None
    return builder.write()


def write_tree(
    repo: pygit2.Repository,
    base_tree: pygit2.Tree | None,
    units: Iterable[Unit],
    removed: Iterable[str] = (),
) -> pygit2.Oid:
    """`base_tree` with each unit's folder replaced and the owned files of `removed` folders dropped.

    Deterministic: the same base and units give the same tree OID. Only the changed
    folders and their ancestors are written.
    """
    plan: _Plan = {}
    seen: set[str] = set()

    def add(folder: str, files: Mapping[str, bytes] | None) -> None:
        folder = _norm_path(folder)
        if not folder:
            raise EnvRepoError("a unit's folder must not be the repository root")
        if folder in seen:
            raise EnvRepoError(f"two units render into the same folder {folder!r}; give each its own")
        seen.add(folder)
        if files is not None:
            _check_file_names(folder, files)
        *parents, leaf = folder.split("/")
        node = plan
        for part in parents:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise EnvRepoError(f"folder {folder!r} is nested inside another unit's folder")
            node = nxt
        if leaf in node:
            raise EnvRepoError(f"folder {folder!r} overlaps another unit's folder")
        node[leaf] = _write_folder(repo, folder, lookup_tree(base_tree, folder), files)

    for unit in units:
        add(unit.folder, unit.files)
    for folder in removed:
        add(folder, None)
    root = _apply(repo, base_tree, plan, "")
    return root if root is not None else repo.TreeBuilder().write()


def stale_folders(
    repo: pygit2.Repository, base_tree: pygit2.Tree | None, env_path: str, live: Iterable[str]
) -> list[str]:
    """Owned folders under `env_path` that no current unit renders: their blueprints were deleted.

    Looks only at the owned depths (`<env>/_mesh`, `<env>/<ns>/<x>`), reading one YAML blob
    per unknown folder at most once per tree OID (cached), so a scan is a listing of names.
    """
    env_path = _norm_path(env_path)
    prefix = f"{env_path}/" if env_path else ""
    env_tree = lookup_tree(base_tree, env_path)
    if env_tree is None:
        return []
    live_set = {_norm_path(f) for f in live}
    found: list[str] = []
    for ns in env_tree:
        if ns.type_str != "tree":
            continue
        ns_tree = _tree(repo, ns.id)
        if ns.name == MESH_SERVICE:
            candidates = [(f"{prefix}{ns.name}", ns.id)]
        else:
            candidates = [(f"{prefix}{ns.name}/{e.name}", e.id) for e in ns_tree if e.type_str == "tree"]
        for folder, oid in candidates:
            if folder in live_set:
                continue
            if _folder_is_owned(repo, _tree(repo, oid)):
                found.append(folder)
    return sorted(found)


# --------------------------------------------------------------------------------------
# The mirror
# --------------------------------------------------------------------------------------


def _short(oid: pygit2.Oid | None) -> str:
    return "nothing (branch absent)" if oid is None else str(oid)[:12]


def _retry_locked(action: Callable[[], None], what: str, attempts: int = 20) -> None:
    """Run `action`, retrying while another process holds a git lock file (short, bounded)."""
    delay = 0.02
    for attempt in range(attempts):
        try:
            action()
            return
        except pygit2.GitError as exc:
            locked = "lock" in str(exc).lower()
            if not locked or attempt == attempts - 1:
                hint = (
                    "If no other meshgen process is running, remove the stale '*.lock' file "
                    "named above and retry."
                    if locked
                    else "Check that the repository exists and is readable, then retry."
                )
                raise EnvRepoError(f"{what} failed: {exc}. {hint}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


@contextlib.contextmanager
def _mirror_lock(lock_file: Path) -> Iterator[None]:
    """Serialise ref-changing work on one mirror between processes sharing a cache directory.

    libgit2 is safe against concurrent writers of one ref (lock files) but not against one
    process pruning empty ref folders while another creates a ref below them, which a
    fetch with prune and our temporary push refs both do. Objects need no lock.
    """
    with open(lock_file, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


class Mirror:
    """A bare mirror of one remote repository: `refs/remotes/origin/*` are "where we last saw"
    each remote branch. Shared by EnvRepo (the environment repository) and the blueprints
    checkout (meshgen.gitops.blueprints).

    `remote` is a local path (bare or not, `file://` too) or a URL. The mirror lives in
    `<cache_dir>/mirrors/<prefix><hash of remote>.git`; creating, fetching and ref changes
    take a file lock next to it, so processes may share a cache directory. Credentials come
    from `access` (meshgen.gitops.transport.RemoteAccess: HTTPS token or SSH key, built from
    meshgen.yaml and settings); `callbacks` (raw pygit2.RemoteCallbacks) is the lower-level
    alternative. The mirror's git config only ever holds the credential-free URL.
    """

    #: What the remote is, for error messages ("environment repository", "blueprints repository").
    what = "environment repository"
    #: How to fix a local remote that does not exist (the end of that error message).
    missing_hint = "create it (git init --bare) or fix the path in meshgen.yaml"

    def __init__(
        self,
        remote: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str],
        callbacks: pygit2.RemoteCallbacks | None = None,
        prefix: str = "",
        access: RemoteAccess | None = None,
    ) -> None:
        remote = os.fspath(remote)
        local = local_path(remote)
        if local is not None:
            local = local.resolve()
            if not local.exists():
                raise EnvRepoError(f"{self.what} {local} does not exist; {self.missing_hint}")
            remote = str(local)
        self.remote = remote
        self._local = local
        self._callbacks = callbacks
        self._access = access
        key = prefix + hashlib.sha256(remote.encode()).hexdigest()[:16]
        path = Path(cache_dir) / "mirrors" / f"{key}.git"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = path.parent / f"{key}.meshgen-lock"
        with _mirror_lock(self._lock_file):  # two processes may share a cache directory
            if not (path / "HEAD").exists():
                pygit2.init_repository(str(path), bare=True)
            repo = pygit2.Repository(str(path))
            if _REMOTE not in repo.remotes.names():  # also repairs a mirror whose creation was cut short
                repo.remotes.create(_REMOTE, remote, "+refs/heads/*:refs/remotes/origin/*")
        self.repo = pygit2.Repository(str(path))
        url = self.repo.remotes[_REMOTE].url
        if url != remote:
            raise EnvRepoError(f"mirror {path} belongs to {url!r}, not {remote!r}; remove it and retry")

    # ---- reading ------------------------------------------------------------------

    def fetch(self) -> None:
        """Bring every remote branch into the mirror (`refs/remotes/origin/*`), pruning deleted ones."""

        access = self._access

        def run() -> None:
            if access is not None:  # errors come back as GitTransportError (what, where, the fix)
                access.fetch(self.repo, _REMOTE, ["+refs/heads/*:refs/remotes/origin/*"])
                return
            self.repo.remotes[_REMOTE].fetch(
                ["+refs/heads/*:refs/remotes/origin/*"],
                callbacks=self._callbacks,
                prune=pygit2.enums.FetchPrune.PRUNE,
            )

        with _mirror_lock(self._lock_file):
            _retry_locked(run, f"fetching {self.remote}")

    def tip(self, branch: str) -> pygit2.Oid | None:
        """Where the remote `branch` pointed at the last fetch or push (None: absent)."""
        ref = self.repo.references.get(_TRACKING + branch)
        return ref.target if ref is not None else None  # type: ignore[return-value]

    def commit_at(self, branch: str) -> pygit2.Commit | None:
        oid = self.tip(branch)
        return self.repo[oid].peel(pygit2.Commit) if oid is not None else None


class EnvRepo(Mirror):
    """A bare mirror of one environment repository plus the operations meshgen needs on it.

    `remote` is a local path (bare or not) or a URL. The mirror lives in
    `<cache_dir>/mirrors/<hash of remote>.git`; its `refs/remotes/origin/*` are "where we
    last saw" each remote branch and serve as the lease for pushes.
    """

    def __init__(
        self,
        remote: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str],
        identity: Identity = _MESHGEN,
        clock: Callable[[], int] | None = None,
        callbacks: pygit2.RemoteCallbacks | None = None,
        access: RemoteAccess | None = None,
    ) -> None:
        super().__init__(remote, cache_dir=cache_dir, callbacks=callbacks, access=access)
        self.identity = identity
        self._clock = clock or (lambda: int(time.time()))

    # ---- writing ------------------------------------------------------------------

    def commit(self, tree: pygit2.Oid, parents: list[pygit2.Oid], message: str) -> pygit2.Oid:
        """Write a commit object (no ref moves). Same tree + parents + message + time → same OID."""
        sig = pygit2.Signature(self.identity.name, self.identity.email, self._clock(), 0)
        return self.repo.create_commit(None, sig, sig, message, tree, parents)

    def push(self, branch: str, new: pygit2.Oid, *, expected: pygit2.Oid | None) -> None:
        """Point remote `branch` at `new` if it still points at `expected` (None: must not exist).

        Force-with-lease: the branch may be rewritten (it is generated), but never over a
        push we have not seen. Raises LeaseError when the lease fails.
        """
        with _mirror_lock(self._lock_file):
            if self._local is not None:
                self._push_local(branch, new, expected)
            else:
                self._push_transport(branch, new, expected)
            self.repo.references.create(_TRACKING + branch, new, force=True)

    def _push_local(self, branch: str, new: pygit2.Oid, expected: pygit2.Oid | None) -> None:
        # A local remote is written directly: copy the objects it lacks, then move the branch
        # in a ref transaction inside the remote repository (lock, compare, set). That is a
        # true compare-and-swap against git's own lock files, which libgit2's local transport
        # (it does not re-check the old value, and its temporary refs race with other pushers'
        # ref-folder cleanup) would not give us.
        remote = pygit2.Repository(str(self._local))
        _copy_missing(self.repo, remote, new)
        ref = f"refs/heads/{branch}"
        lease: list[LeaseError] = []

        def swap() -> None:
            with remote.transaction() as txn:
                txn.lock_ref(ref)
                cur = remote.references.get(ref)
                actual = cur.target if cur is not None else None
                if actual != expected:
                    lease.append(LeaseError(branch, expected, actual))  # type: ignore[arg-type]
                    return  # nothing queued: leaving the block just unlocks
                txn.set_target(ref, new, message=f"meshgen: push {branch}")

        _retry_locked(swap, f"updating {ref} in {self._local}")
        if lease:
            raise lease[0]

    def _push_transport(self, branch: str, new: pygit2.Oid, expected: pygit2.Oid | None) -> None:
        # Network remotes: the lease is checked against the server's advertisement in
        # push_negotiation, and the push command carries that old value, which receive-pack
        # verifies under its ref lock: the same guarantee as `git push --force-with-lease`.
        tmp = f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        self.repo.references.create(tmp, new, force=True)
        try:
            if self._access is not None and self._access.is_ssh:
                # SSH goes through git + OpenSSH (host keys checked): --force-with-lease there.
                self._access.push_with_lease(self.repo, _REMOTE, tmp, branch, expected)
            else:
                self._transport_push([f"+{tmp}:refs/heads/{branch}"], lease=(branch, expected))
        finally:
            self.repo.references.delete(tmp)

    def _transport_push(self, specs: list[str], lease: tuple[str, pygit2.Oid | None] | None = None) -> None:
        inner = self._access.callbacks() if self._access is not None else self._callbacks
        callbacks = _LeaseCallbacks(inner, lease)
        try:
            self.repo.remotes[_REMOTE].push(specs, callbacks=callbacks)
        except Exception as exc:  # pygit2.GitError, or what a credentials callback raised
            if callbacks.lease_error is not None:
                raise callbacks.lease_error from None
            if self._access is not None:
                raise self._access.failure("push", exc, inner) from None  # type: ignore[arg-type]
            if not isinstance(exc, pygit2.GitError):
                raise
            raise EnvRepoError(f"push to {self.remote} failed: {exc}; check access and retry") from exc
        if callbacks.lease_error is not None:
            raise callbacks.lease_error
        if callbacks.rejected:
            raise EnvRepoError(
                f"{self.remote} rejected the push: {callbacks.rejected}; "
                "check branch protection or server hooks"
            )


def _copy_missing(src: pygit2.Repository, dst: pygit2.Repository, root: pygit2.Oid) -> None:
    """Write into `dst` the objects reachable from `root` that it lacks.

    Stops at any object `dst` already has (git keeps closure: what it has, it has all of),
    so the cost is the size of the change, not of the repository. Children are written
    before their parents, so that closure holds for concurrent writers at every moment.
    """
    stack: list[tuple[pygit2.Oid, bool]] = [(root, False)]
    while stack:
        oid, children_done = stack.pop()
        if oid in dst:
            continue
        obj = src[oid]
        if children_done:
            dst.odb.write(obj.type, obj.read_raw())
            continue
        stack.append((oid, True))
        if isinstance(obj, pygit2.Commit):
            stack.extend((child, False) for child in [obj.tree_id, *obj.parent_ids])
        elif isinstance(obj, pygit2.Tree):
            stack.extend((entry.id, False) for entry in obj if entry.filemode != pygit2.GIT_FILEMODE_COMMIT)
        elif isinstance(obj, pygit2.Tag):
            stack.append((obj.target, False))


class _LeaseCallbacks(pygit2.RemoteCallbacks):
    """Checks the lease during push negotiation and collects per-ref rejections."""

    def __init__(
        self, inner: pygit2.RemoteCallbacks | None, lease: tuple[str, pygit2.Oid | None] | None
    ) -> None:
        super().__init__()
        self._inner = inner
        self._lease = lease
        self.lease_error: LeaseError | None = None
        self.rejected: list[str] = []

    # Authentication and TLS stay with the caller's callbacks (meshgen never handles tokens here).
    def credentials(self, url, username_from_url, allowed_types):  # type: ignore[no-untyped-def]
        if self._inner is None:
            return super().credentials(url, username_from_url, allowed_types)
        return self._inner.credentials(url, username_from_url, allowed_types)

    def certificate_check(self, certificate, valid, host):  # type: ignore[no-untyped-def]
        if self._inner is None:
            return super().certificate_check(certificate, valid, host)
        return self._inner.certificate_check(certificate, valid, host)

    def push_negotiation(self, updates: list[pygit2.remotes.PushUpdate]) -> None:
        if self._lease is None:
            return
        branch, expected = self._lease
        for update in updates:
            if update.dst_refname == f"refs/heads/{branch}":
                actual = None if update.src == pygit2.Oid(hex="0" * 40) else update.src
                if actual != expected:
                    self.lease_error = LeaseError(branch, expected, actual)
                    raise self.lease_error

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected.append(f"{refname}: {message}")
