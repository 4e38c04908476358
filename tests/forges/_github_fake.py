"""A GitHub REST v3 fake: the pulls/issues endpoints meshgen uses, answers shaped by github-pulls.json."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ._schemas import github_spec
from ._server import FakeForge, HttpError, PRRecord, Request, route

_PULLS = "/repos/{owner}/{repo}/pulls"
_PULL = "/repos/{owner}/{repo}/pulls/{pull_number}"
_MERGE = "/repos/{owner}/{repo}/pulls/{pull_number}/merge"
_LABELS = "/repos/{owner}/{repo}/issues/{issue_number}/labels"
_COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class GitHubFake(FakeForge):
    spec = github_spec()
    prefix = "/api/v3"  # GitHub Enterprise Server layout: proves base_url is really configurable

    git_username = "x-access-token"  # the documented HTTPS username for tokens

    def __init__(self, repo: Any, token: str, owner: str = "acme", name: str = "env") -> None:
        super().__init__(repo, token)
        self.owner = owner
        self.name = name
        self.closed_at: dict[int, float] = {}

    def expected_auth(self) -> str:
        return f"Bearer {self.token}"

    def _repo_or_404(self, req: Request) -> None:
        if (req.params["owner"], req.params["repo"]) != (self.owner, self.name):
            raise HttpError(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    # -- rendering -----------------------------------------------------------------------------

    def _label(self, name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        # The list shape (pull-request-simple) inlines its own label schema, slightly different
        # from `label` (description is not nullable there).
        out = self.spec.skeleton(schema or self.spec.schema("label"))
        out.update(name=name, color="ededed", default=False,
                   id=int(hashlib.sha1(name.encode()).hexdigest()[:6], 16),
                   url=f"{self.url}/repos/{self.owner}/{self.name}/labels/{name}")
        return out

    def _branch(self, skeleton: dict[str, Any], ref: str, sha: str, owner: str) -> dict[str, Any]:
        skeleton.update(ref=ref, sha=sha, label=f"{owner}:{ref}")
        return skeleton

    def render(self, pr: PRRecord, *, simple: bool = False) -> dict[str, Any]:
        schema = self.spec.schema("pull-request-simple" if simple else "pull-request")
        out = self.spec.skeleton(schema)
        api = f"{self.url}/repos/{self.owner}/{self.name}"
        closed = self.closed_at.get(pr.number)
        head_sha = self.head_sha(pr)
        if pr.merged:
            merge_commit_sha: str | None = pr.merge_sha
        else:
            # Real GitHub reports its trial merge commit for open pull requests; it is not on any
            # branch. A client that reads it as "the merge" would be wrong, so the fake does it too.
            merge_commit_sha = hashlib.sha1(f"trial-merge-{pr.number}-{head_sha}".encode()).hexdigest()
        out.update(
            url=f"{api}/pulls/{pr.number}", id=1000 + pr.number, number=pr.number,
            html_url=f"{self.root}/{self.owner}/{self.name}/pull/{pr.number}",
            state=pr.state, title=pr.title, body=pr.body or None,
            labels=[self._label(name, schema["properties"]["labels"]["items"]) for name in pr.labels],
            created_at=_iso(pr.created), updated_at=_iso(time.time()), closed_at=_iso(closed),
            merged_at=_iso(closed) if pr.merged else None, merge_commit_sha=merge_commit_sha,
        )
        head_owner = "mallory" if pr.from_fork else self.owner
        self._branch(out["head"], pr.head, head_sha, head_owner)
        self._branch(out["base"], pr.base, self.repo.tip(pr.base) or "", self.owner)
        if not simple:
            out.update(merged=pr.merged, mergeable=None if pr.state != "open" else True,
                       mergeable_state="clean" if pr.state == "open" else "unknown")
        return out

    # -- routes --------------------------------------------------------------------------------

    @route("GET", _PULLS)
    def list_pulls(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        state = req.query.get("state", "open")
        prs = [pr for pr in self.prs.values() if state == "all" or pr.state == state]
        if "head" in req.query:
            owner, _, branch = req.query["head"].partition(":")
            prs = [pr for pr in prs if pr.head == branch and (owner == ("mallory" if pr.from_fork else self.owner))]
        prs.sort(key=lambda pr: pr.number, reverse=req.query.get("direction", "desc") == "desc")
        per_page = int(req.query.get("per_page", 30))
        page = int(req.query.get("page", 1))
        chunk = prs[(page - 1) * per_page: page * per_page]
        return 200, [self.render(pr, simple=True) for pr in chunk]

    @route("POST", _PULLS)
    def create_pull(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        body = req.body or {}
        head, base = body.get("head", ""), body.get("base", "")
        if self.repo.tip(head) is None or self.repo.tip(base) is None:
            raise HttpError(422, {"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "field": "head" if self.repo.tip(head) is None else "base",
                 "code": "invalid"}]})
        if any(pr.head == head and pr.base == base and pr.state == "open" for pr in self.prs.values()):
            raise HttpError(422, {"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "code": "custom",
                 "message": f"A pull request already exists for {self.owner}:{head}."}]})
        pr = self.new_pr(title=body["title"], body=body.get("body", ""), head=head, base=base)
        return 201, self.render(pr)

    @route("GET", _PULL)
    def get_pull(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        return 200, self.render(self.pr_or_404(req.params["pull_number"]))

    @route("PATCH", _PULL)
    def update_pull(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["pull_number"])
        body = req.body or {}
        pr.title = body.get("title", pr.title)
        pr.body = body.get("body", pr.body)
        if body.get("state") == "closed" and pr.state == "open":
            pr.state = "closed"
            pr.frozen_head_sha = self.head_sha(pr)
            self.closed_at[pr.number] = time.time()
        return 200, self.render(pr)

    @route("PUT", _MERGE)
    def merge_pull(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["pull_number"])
        if pr.state != "open":
            raise HttpError(405, {"message": "Pull Request is not mergeable"})
        expected = (req.body or {}).get("sha")
        if expected and expected != self.head_sha(pr):
            raise HttpError(409, {"message": "Head branch was modified. Review and try the merge again."})
        from ._gitrepo import MergeConflict
        try:
            sha = self.do_merge(pr)
        except MergeConflict:
            raise HttpError(405, {"message": "Pull Request is not mergeable"}) from None
        self.closed_at[pr.number] = time.time()
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    @route("PUT", _LABELS)
    def set_labels(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["issue_number"])
        labels = (req.body or {}).get("labels", [])
        pr.labels = [label if isinstance(label, str) else label["name"] for label in labels]
        return 200, [self._label(name) for name in pr.labels]

    @route("DELETE", _LABELS)
    def clear_labels(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        self.pr_or_404(req.params["issue_number"]).labels = []
        return 204, None

    @route("POST", _COMMENTS)
    def add_comment(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["issue_number"])
        pr.comments.append(req.body["body"])
        out = self.spec.skeleton(self.spec.schema("issue-comment"))
        out.update(id=len(pr.comments), body=req.body["body"],
                   html_url=f"{self.root}/{self.owner}/{self.name}/pull/{pr.number}#issuecomment-{len(pr.comments)}")
        return 201, out
