"""A real bare git repository behind the test forges (pygit2, no git binary needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

from meshgen.gitops.envrepo import EnvRepo

_SIG_NAME, _SIG_EMAIL = "meshgen tests", "tests@meshgen.test"


class MergeConflict(Exception):
    pass


class BareRepo:
    """The environment repository as the forge sees it: branches are real refs with real commits."""

    def __init__(self, path: Path, default_branch: str = "main") -> None:
        self.repo = pygit2.init_repository(str(path), bare=True, initial_head=default_branch)
        self.default_branch = default_branch
        self.commit_files(default_branch, {"README.md": "environment repository\n"}, "initial commit")

    @staticmethod
    def _sig() -> pygit2.Signature:
        return pygit2.Signature(_SIG_NAME, _SIG_EMAIL, int(time.time()), 0)

    def tip(self, branch: str) -> str | None:
        ref = self.repo.references.get(f"refs/heads/{branch}")
        return str(ref.target) if ref is not None else None

    def commit_files(self, branch: str, files: dict[str, str], message: str, *, start: str | None = None) -> str:
        """Commit `files` on top of `branch` (or of `start` when the branch is new); returns the sha.

        This is what a push does to the bare repository, done in-process.
        """
        parent_sha = self.tip(branch) or (self.tip(start) if start else None)
        index = pygit2.Index()
        parents: list[pygit2.Oid] = []
        if parent_sha is not None:
            parent = self.repo.get(parent_sha)
            assert isinstance(parent, pygit2.Commit)
            index.read_tree(parent.tree)
            parents = [parent.id]
        for path, content in files.items():
            blob = self.repo.create_blob(content.encode())
            index.add(pygit2.IndexEntry(path, blob, FileMode.BLOB))
        tree = index.write_tree(self.repo)
        sig = self._sig()
        oid = self.repo.create_commit(None, sig, sig, message, tree, parents)
        self.repo.references.create(f"refs/heads/{branch}", oid, force=True)
        return str(oid)

    def merge(self, head_sha: str, base: str, message: str) -> str:
        """A true merge commit (two parents) of head into base; moves base; returns its sha."""
        base_sha = self.tip(base)
        assert base_sha is not None, f"base branch {base} does not exist"
        index = self.repo.merge_commits(base_sha, head_sha)
        if index.conflicts is not None:
            raise MergeConflict(f"{head_sha[:8]} does not merge cleanly into {base}")
        tree = index.write_tree(self.repo)
        sig = self._sig()
        oid = self.repo.create_commit(None, sig, sig, message, tree,
                                      [pygit2.Oid(hex=base_sha), pygit2.Oid(hex=head_sha)])
        self.repo.references.create(f"refs/heads/{base}", oid, force=True)
        return str(oid)

    def parents(self, sha: str) -> list[str]:
        commit = self.repo.get(sha)
        assert isinstance(commit, pygit2.Commit)
        return [str(p) for p in commit.parent_ids]

    def read(self, branch: str, path: str) -> str:
        tip = self.tip(branch)
        assert tip is not None, f"no branch {branch}"
        commit = self.repo.get(tip)
        assert isinstance(commit, pygit2.Commit)
        blob = commit.tree[path]
        return self.repo.get(blob.id).data.decode()  # type: ignore[union-attr]


def push_files(repo: EnvRepo, branch: str, files: dict[str, str], message: str, *, start: str | None = None) -> str:
    """Commit `files` on top of `branch` (or of `start` when the branch is new) in the mirror `repo`,
    then push it over `repo`'s transport, as a developer's `git push` would; returns the new tip."""
    repo.fetch()
    expected = repo.tip(branch)
    parent_oid = expected or (repo.tip(start) if start else None)
    index = pygit2.Index()
    parents: list[pygit2.Oid] = []
    if parent_oid is not None:
        parent = repo.repo[parent_oid].peel(pygit2.Commit)
        index.read_tree(parent.tree)
        parents = [parent.id]
    for path, content in files.items():
        index.add(pygit2.IndexEntry(path, repo.repo.create_blob(content.encode()), FileMode.BLOB))
    new = repo.commit(index.write_tree(repo.repo), parents, message)
    repo.push(branch, new, expected=expected)
    return str(new)
