"""The embedded forge: pull requests kept inside the environment repository itself.

Layout, all plain git refs so the records travel with `git clone --mirror` and survive gc:

* `refs/heads/<branch>`: the PR's head branch, pushed by meshgen.gitops.envrepo.
* `refs/meshgen/prs/<n>`: the PR record. It points to a *commit* whose tree holds one
  `pr.json`; every change (update, comment, close, merge) is a new commit whose parent is
  the previous record. A commit rather than a bare blob because it gives every PR an audit
  trail for free (`git log -p refs/meshgen/prs/7`) and because every git tool handles
  commit-valued refs, while blob-valued refs trip up some (`git log --all`).
* `refs/meshgen/open/<branch>`: present while a PR for `<branch>` is open; a blob holding
  its number. It makes `find_open` one ref read and it is what guarantees one open PR per
  branch.

Every write is a compare-and-swap: a libgit2 ref transaction locks the refs involved
(git's own `<ref>.lock` files, so it also excludes a concurrent `git push`), checks that they
still hold the values we read, then moves them together. Numbers are allocated by creating
`refs/meshgen/prs/<highest+1>` with "expected old value: absent"; a process that loses the
race sees the ref exists and takes the next number. No separate counter ref is needed
because the PR refs themselves are the counter, and they are never deleted.
"""

from __future__ import annotations

import builtins
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # imported where used: the registry (and meshgen.yaml validation) imports this module
    import pygit2

from meshgen.forges.base import ForgeError, ForgeSpec, ForgeTarget, Identity, PRState, PullRequest

_PRS = "refs/meshgen/prs/"
_OPEN = "refs/meshgen/open/"
_HEADS = "refs/heads/"
_RECORD = "pr.json"
_ATTEMPTS = 50


class LocalForge:
    """Pull requests as refs in a local (bare or non-bare) environment repository."""

    kind: ClassVar[str] = "local"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        identity: Identity | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        import pygit2
        self.path = Path(path).resolve()
        try:
            self.repo = pygit2.Repository(str(self.path))
        except pygit2.GitError as exc:
            raise ForgeError(
                f"{self.path} is not a git repository; create the environment repository first "
                "(git init --bare) or pass the right --repo"
            ) from exc
        self.identity = identity or _identity_from_config(self.repo)
        self._clock = clock or (lambda: int(time.time()))

    # ---- Forge protocol -------------------------------------------------------------

    def find_open(self, branch: str) -> PullRequest | None:
        ref = self.repo.references.get(_OPEN + branch)
        if ref is None:
            return None
        pr = self.get(int(self._blob(ref.target)))
        return pr if pr.state == "open" else None

    def create(
        self, *, branch: str, base: str, title: str, body: str, labels: tuple[str, ...]
    ) -> PullRequest:
        for name in (branch, base):
            if self.repo.references.get(_HEADS + name) is None:
                raise ForgeError(
                    f"branch {name!r} does not exist in {self.path}; push it before opening a PR"
                )
        if branch == base:
            raise ForgeError(f"a pull request needs two branches, got {branch!r} twice")
        open_ref = _OPEN + branch
        for _ in range(_ATTEMPTS):
            number = self._next_number()
            now = self._clock()
            record = {
                "number": number,
                "title": title,
                "body": body,
                "state": "open",
                "branch": branch,
                "base": base,
                "head_sha": str(self.repo.references[_HEADS + branch].target),
                "merge_sha": None,
                "labels": sorted(set(labels)),
                "comments": [],
                "created_at": now,
                "updated_at": now,
            }
            commit = self._record_commit(record, None, f"open #{number}: {title}")
            marker = self.repo.create_blob(f"{number}\n".encode())
            ok, actual = self._swap(
                {_PRS + str(number): None, open_ref: None},
                {_PRS + str(number): commit, open_ref: marker},
            )
            if ok:
                return self._to_pr(record)
            if actual[open_ref] is not None:
                other = int(self._blob(actual[open_ref]))
                raise ForgeError(
                    f"pull request #{other} is already open for branch {branch!r}; update it instead"
                )
            # Someone took this number first: take the next one.
        raise ForgeError(f"could not allocate a pull request number in {self.path} (too much contention)")

    def update(self, number: int, *, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        def change(record: dict[str, Any]) -> str:
            _require_open(record, "update")
            record.update(title=title, body=body, labels=sorted(set(labels)))
            return f"update #{number}"

        return self._to_pr(self._modify(number, change))

    def comment(self, number: int, body: str) -> None:
        def change(record: dict[str, Any]) -> str:
            record["comments"].append({"author": self.identity.name, "at": self._clock(), "body": body})
            return f"comment on #{number}"

        self._modify(number, change)

    def close(self, number: int, *, comment: str | None = None) -> PullRequest:
        def change(record: dict[str, Any]) -> str:
            if record["state"] == "merged":
                raise ForgeError(f"pull request #{number} is already merged; it cannot be closed")
            if comment:
                record["comments"].append(
                    {"author": self.identity.name, "at": self._clock(), "body": comment}
                )
            record["head_sha"] = self._branch_tip(record["branch"]) or record["head_sha"]
            record["state"] = "closed"
            return f"close #{number}"

        record = self._modify(number, change, release_open=True)
        return self._to_pr(record)

    def merge(self, number: int) -> PullRequest:
        for _ in range(_ATTEMPTS):
            rec_oid, record = self._read(number)
            _require_open(record, "merge")
            base_ref, head_ref = _HEADS + record["base"], _HEADS + record["branch"]
            base = self.repo.references.get(base_ref)
            head = self.repo.references.get(head_ref)
            if base is None or head is None:
                raise ForgeError(
                    f"pull request #{number}: branch {record['base' if base is None else 'branch']!r} "
                    "is gone; re-run meshgen to rebuild it, or close the pull request"
                )
            base_oid, head_oid = self._target(base_ref), self._target(head_ref)
            assert base_oid is not None and head_oid is not None  # direct refs, checked above
            if base_oid == head_oid or self.repo.descendant_of(base_oid, head_oid):
                merged = base_oid  # nothing new on the head: already contained in base
            elif self.repo.descendant_of(head_oid, base_oid):
                merged = head_oid  # fast-forward
            else:
                merged = self._merge_commit(number, record, base_oid, head_oid)
            record.update(state="merged", merge_sha=str(merged), head_sha=str(head_oid))
            new_rec = self._record_commit(record, rec_oid, f"merge #{number} as {str(merged)[:12]}")
            open_ref = _OPEN + record["branch"]
            open_val = self._target(open_ref)
            ok, _ = self._swap(
                {base_ref: base_oid, _PRS + str(number): rec_oid, open_ref: open_val},
                {base_ref: merged, _PRS + str(number): new_rec, open_ref: None},
                messages={base_ref: f"meshgen: merge pull request #{number}"},
            )
            if ok:
                return self._to_pr(record)
            # Base, head or the record moved while we merged: start over from the new state.
        raise ForgeError(f"could not merge #{number}: {record['base']!r} keeps moving; retry later")

    def get(self, number: int) -> PullRequest:
        return self._to_pr(self._read(number)[1])

    def list(self, state: PRState | None = None) -> list[PullRequest]:
        out = [self.get(n) for n in self._numbers()]
        out = [pr for pr in out if pr.branch.startswith("meshgen/") and (state is None or pr.state == state)]
        return sorted(out, key=lambda pr: pr.number, reverse=True)

    def check_access(self) -> str:
        """The local forge is its repository: reachable when the path is a repository (for `meshgen doctor`)."""
        return f"local pull requests in {self.path}"

    def git_credential(self) -> None:
        """The local forge has no token: its repository is a path."""

    # ---- extras of the local forge (used by `meshgen pr show`) ---------------------

    def comments(self, number: int) -> builtins.list[dict[str, Any]]:
        """The conversation of a pull request, oldest first: {author, at (unix time), body}."""
        return list(self._read(number)[1]["comments"])

    def url(self, number: int) -> str:
        return f"{self.path.as_uri()}#pr-{number}"

    # ---- internals ------------------------------------------------------------------

    def _numbers(self) -> builtins.list[int]:
        return sorted(
            int(name[len(_PRS) :])
            for name in self.repo.references
            if name.startswith(_PRS) and name[len(_PRS) :].isdigit()
        )

    def _next_number(self) -> int:
        numbers = self._numbers()
        return (numbers[-1] if numbers else 0) + 1

    def _blob(self, oid: pygit2.Oid | str | None) -> bytes:
        import pygit2
        assert oid is not None
        return self.repo[oid].peel(pygit2.Blob).data

    def _target(self, ref: str) -> pygit2.Oid | None:
        found = self.repo.references.get(ref)
        return found.target if found is not None else None  # type: ignore[return-value]

    def _branch_tip(self, branch: str) -> str | None:
        oid = self._target(_HEADS + branch)
        return str(oid) if oid is not None else None

    def _read(self, number: int) -> tuple[pygit2.Oid, dict[str, Any]]:
        import pygit2
        oid = self._target(_PRS + str(number))
        if oid is None:
            raise ForgeError(
                f"no pull request #{number} in {self.path}; `meshgen pr list` shows the existing ones"
            )
        commit = self.repo[oid].peel(pygit2.Commit)
        return oid, json.loads(self._blob(commit.tree[_RECORD].id))

    def _record_commit(self, record: dict[str, Any], parent: pygit2.Oid | None, message: str) -> pygit2.Oid:
        import pygit2
        record["updated_at"] = self._clock()
        data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
        builder = self.repo.TreeBuilder()
        builder.insert(_RECORD, self.repo.create_blob(data), pygit2.GIT_FILEMODE_BLOB)
        sig = pygit2.Signature(self.identity.name, self.identity.email, self._clock(), 0)
        return self.repo.create_commit(None, sig, sig, message, builder.write(), [parent] if parent else [])

    def _modify(
        self, number: int, change: Callable[[dict[str, Any]], str], *, release_open: bool = False
    ) -> dict[str, Any]:
        """Read-modify-write of one record with compare-and-swap, retried on contention."""
        for _ in range(_ATTEMPTS):
            rec_oid, record = self._read(number)
            was_open = record["state"] == "open"
            message = change(record)
            new = self._record_commit(record, rec_oid, message)
            expect: dict[str, pygit2.Oid | None] = {_PRS + str(number): rec_oid}
            target: dict[str, pygit2.Oid | None] = {_PRS + str(number): new}
            if release_open and was_open:
                open_ref = _OPEN + record["branch"]
                expect[open_ref] = self._target(open_ref)
                target[open_ref] = None
            ok, _ = self._swap(expect, target)
            if ok:
                return record
        raise ForgeError(f"pull request #{number} keeps changing under us; retry later")

    def _merge_commit(
        self, number: int, record: Mapping[str, Any], base: pygit2.Oid, head: pygit2.Oid
    ) -> pygit2.Oid:
        # merge_commits works on an in-memory index: no work tree, no index file on disk.
        import pygit2
        index = self.repo.merge_commits(base, head)
        if index.conflicts is not None:
            paths = sorted({(ours or theirs or anc).path for anc, ours, theirs in index.conflicts})
            raise ForgeError(
                f"pull request #{number} conflicts with {record['base']!r} in: {', '.join(paths)}. "
                "Re-run meshgen to rebuild the branch on the new base, then merge again."
            )
        tree = index.write_tree(self.repo)
        sig = pygit2.Signature(self.identity.name, self.identity.email, self._clock(), 0)
        message = f"Merge pull request #{number} from {record['branch']}\n\n{record['title']}\n"
        return self.repo.create_commit(None, sig, sig, message, tree, [base, head])

    def _swap(
        self,
        expect: Mapping[str, pygit2.Oid | None],
        target: Mapping[str, pygit2.Oid | None],
        messages: Mapping[str, str] | None = None,
    ) -> tuple[bool, dict[str, pygit2.Oid | None]]:
        """Atomically move `target` refs if every ref in `expect` still holds its value.

        Returns (swapped, the values found). Lock contention (another process mid-swap) is
        waited out briefly; a changed value is reported, not retried, so the caller can
        re-read and decide.
        """
        import pygit2
        names = sorted(set(expect) | set(target))
        delay = 0.005
        for attempt in range(200):
            try:
                with self.repo.transaction() as txn:
                    for name in names:
                        txn.lock_ref(name)
                    actual = {name: self._target(name) for name in names}
                    if any(actual[name] != value for name, value in expect.items()):
                        return False, actual  # leaving the block unlocks without changes
                    for name, value in target.items():
                        if value is None:
                            if actual[name] is not None:
                                txn.remove(name)
                        else:
                            message = (messages or {}).get(name, "meshgen local forge")
                            txn.set_target(name, value, message=message)
                return True, actual
            except pygit2.GitError as exc:
                if "lock" not in str(exc).lower() or attempt == 199:
                    raise ForgeError(
                        f"updating pull-request refs in {self.path} failed: {exc}. If no meshgen "
                        "process is running, delete the stale '*.lock' file and retry."
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        raise AssertionError("unreachable")

    def _to_pr(self, record: Mapping[str, Any]) -> PullRequest:
        head = record["head_sha"]
        if record["state"] == "open":
            head = self._branch_tip(record["branch"]) or head  # live, like a forge shows it
        return PullRequest(
            number=record["number"],
            title=record["title"],
            body=record["body"],
            state=record["state"],
            branch=record["branch"],
            base=record["base"],
            head_sha=head,
            merge_sha=record["merge_sha"],
            url=self.url(record["number"]),
            labels=tuple(record["labels"]),
        )


def _require_open(record: Mapping[str, Any], action: str) -> None:
    if record["state"] != "open":
        raise ForgeError(
            f"pull request #{record['number']} is {record['state']}; "
            f"only open pull requests can be {action}d "
            "(re-run meshgen to open a new one)"
        )


def _identity_from_config(repo: pygit2.Repository) -> Identity:
    """user.name / user.email of the repository (or global config), else meshgen's default."""
    import pygit2
    try:
        config = repo.config
        return Identity(name=str(config["user.name"]), email=str(config["user.email"]))
    except (KeyError, pygit2.GitError):
        return Identity()


# ---- registration (meshgen.forges.registry) --------------------------------------------------


def _build(target: ForgeTarget) -> LocalForge:
    if target.local_path is None:
        from meshgen.forges.registry import remote_kinds_text

        raise ForgeError("forge kind 'local' needs envRepo.url to be a local path; "
                         f"set envRepo.forge.kind to {remote_kinds_text()} for a remote repository")
    return LocalForge(target.local_path, identity=target.identity)


FORGE = ForgeSpec(kind="local", title="local (in the environment repository)", provider=LocalForge, build=_build)
