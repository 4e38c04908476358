"""Helpers for the GitOps tests: real repositories built with pygit2 (no mocks)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pygit2

from meshgen.gitops.envrepo import Identity
from meshgen.units import Unit

BOT = Identity("meshgen-bot", "bot@example.com")
SIG = pygit2.Signature("Someone Else", "else@example.com", 1_700_000_000, 0)


def manifest(kind: str, name: str, body: str = "", managed: bool = True) -> bytes:
    label = (
        "    app.kubernetes.io/managed-by: meshgen\n" if managed else "    app.kubernetes.io/part-of: shop\n"
    )
    return (
        f"apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  labels:\n{label}"
        f"spec:\n  {body or 'hosts: [' + name + ']'}\n"
    ).encode()


def make_unit(
    service: str,
    *,
    namespace: str = "production",
    env: str = "staging",
    env_path: str = "staging",
    team: str | None = "payments",
    weight: int = 10,
    files: Mapping[str, bytes] | None = None,
    warnings: tuple[str, ...] = (),
) -> Unit:
    folder = f"{env_path}/_mesh" if service == "_mesh" else f"{env_path}/{namespace}/{service}"
    if files is None:
        files = {
            "virtualservice.yaml": manifest("VirtualService", service, f"weight: {weight}"),
            "destinationrule.yaml": manifest("DestinationRule", service),
        }
    return Unit(
        env=env,
        namespace="" if service == "_mesh" else namespace,
        service=service,
        team=team,
        folder=folder,
        files=files,
        warnings=warnings,
        blueprint_path=f"blueprints/{team}/{service}.yaml",
    )


def write_files(repo: pygit2.Repository, files: Mapping[str, bytes]) -> pygit2.Oid:
    """A tree from {path: bytes} (nested paths allowed), built directly."""
    nested: dict = {}
    for path, data in files.items():
        *dirs, name = path.split("/")
        node = nested
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = data

    def build(node: dict) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        for name, value in node.items():
            if isinstance(value, dict):
                tb.insert(name, build(value), pygit2.GIT_FILEMODE_TREE)
            else:
                tb.insert(name, repo.create_blob(value), pygit2.GIT_FILEMODE_BLOB)
        return tb.write()

    return build(nested)


def tree_files(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = "") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for e in tree:
        if e.type_str == "tree":
            out.update(tree_files(repo, repo[e.id], f"{prefix}{e.name}/"))
        else:
            out[f"{prefix}{e.name}"] = repo[e.id].data
    return out


class Origin:
    """The environment repository ("the server"): a bare repo with a main branch."""

    def __init__(self, path: Path, files: Mapping[str, bytes]) -> None:
        self.path = path
        self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        tree = write_files(self.repo, files)
        self.repo.create_commit("refs/heads/main", SIG, SIG, "initial", tree, [])

    def tip(self, branch: str) -> pygit2.Commit | None:
        ref = self.repo.references.get(f"refs/heads/{branch}")
        return self.repo[ref.target] if ref is not None else None

    def files(self, branch: str = "main") -> dict[str, bytes]:
        commit = self.tip(branch)
        assert commit is not None
        return tree_files(self.repo, commit.tree)

    def commit_on(self, branch: str, changes: Mapping[str, bytes], message: str = "by hand") -> pygit2.Oid:
        """Someone else's commit on `branch` adding/changing files (a human editing the repo)."""
        parent = self.tip(branch)
        assert parent is not None
        merged = tree_files(self.repo, parent.tree)
        merged.update(changes)
        tree = write_files(self.repo, merged)
        return self.repo.create_commit(f"refs/heads/{branch}", SIG, SIG, message, tree, [parent.id])


FOREIGN = {
    "README.md": b"# environments\n",
    "staging/production/legacy-app/deployment.yaml": manifest("Deployment", "legacy-app", managed=False),
    "staging/production/legacy-app/notes.txt": b"hand written\n",
    "staging/kustomization.yaml": b"resources: []\n",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000

    def __call__(self) -> int:
        self.now += 1
        return self.now


def semantic(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> list[str]:
    """A stand-in for meshgen.diff.semantic_diff: one line per changed path."""
    lines = []
    for path in sorted(old.keys() | new.keys()):
        if old.get(path) != new.get(path):
            lines.append(
                f"{path}: {'added' if path not in old else 'removed' if path not in new else 'changed'}"
            )
    return lines
