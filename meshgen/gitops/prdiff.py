"""What a pull request of the local forge changes: reviewer lines and the per-file YAML diff.

Shared by the PR pages (meshgen.api.prpages) and `meshgen pr show N --diff`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pygit2

from meshgen.diff import semantic_diff
from meshgen.forges.base import PullRequest

MAX_PATCH_BYTES = 2 * 1024 * 1024  # a page or a terminal shows this much of a patch, then says it stopped


@dataclass(frozen=True)
class PRDiff:
    semantic: list[str]
    patch: str  # unified diff of the changed files
    truncated: bool


def pr_diff(repo: pygit2.Repository, pr: PullRequest) -> PRDiff:
    """The change of `pr`: its head against the commit it was built on (meshgen branches are one commit)."""
    try:
        head = repo[pr.head_sha].peel(pygit2.Commit)
    except (KeyError, ValueError):
        return PRDiff([], "", False)
    parent: pygit2.Commit | None
    if len(head.parents) == 1:
        parent = head.parents[0]
    else:
        base_ref = repo.references.get(f"refs/heads/{pr.base}")
        oid = repo.merge_base(head.id, base_ref.target) if base_ref is not None else None
        parent = repo[oid].peel(pygit2.Commit) if oid is not None else None
    base_tree = parent.tree if parent is not None else repo[repo.TreeBuilder().write()].peel(pygit2.Tree)
    diff = base_tree.diff_to_tree(head.tree)  # what repo.diff(tree, tree) calls
    old: dict[str, bytes] = {}
    new: dict[str, bytes] = {}
    for delta in diff.deltas:
        for side, files in ((delta.old_file, old), (delta.new_file, new)):
            if side.id != pygit2.Oid(hex="0" * 40) and side.path.endswith((".yaml", ".yml")):
                files[side.path] = repo[side.id].peel(pygit2.Blob).data
    patch = diff.patch or ""
    truncated = len(patch) > MAX_PATCH_BYTES
    return PRDiff(semantic_diff(old, new), patch[:MAX_PATCH_BYTES], truncated)
