"""The GitHub fake plus what plans on blueprints pull requests use: listing and editing issue comments
and commit statuses (all documented in github-pulls.json, so requests and answers are validated)."""

from __future__ import annotations

import itertools
from typing import Any

from ._github_fake import _COMMENTS, GitHubFake
from ._server import HttpError, Request, route

_COMMENT = "/repos/{owner}/{repo}/issues/comments/{comment_id}"
_STATUSES = "/repos/{owner}/{repo}/statuses/{sha}"


class GitHubPlanFake(GitHubFake):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.comment_store: dict[int, dict[str, Any]] = {}  # id -> {pr, body}
        self.statuses: dict[str, list[dict[str, Any]]] = {}  # sha -> statuses, oldest first
        self._ids = itertools.count(9001)

    def _comment(self, cid: int) -> dict[str, Any]:
        c = self.comment_store[cid]
        out = self.spec.skeleton(self.spec.schema("issue-comment"))
        out.update(id=cid, body=c["body"],
                   html_url=f"{self.root}/{self.owner}/{self.name}/pull/{c['pr']}#issuecomment-{cid}")
        return out

    def comments_of(self, number: int) -> list[str]:
        return [c["body"] for _, c in sorted(self.comment_store.items()) if c["pr"] == number]

    @route("POST", _COMMENTS)
    def add_comment(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["issue_number"])
        cid = next(self._ids)
        self.comment_store[cid] = {"pr": pr.number, "body": req.body["body"]}
        pr.comments.append(req.body["body"])
        return 201, self._comment(cid)

    @route("GET", _COMMENTS)
    def list_comments(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["issue_number"])
        ids = [cid for cid, c in sorted(self.comment_store.items()) if c["pr"] == pr.number]
        per_page, page = int(req.query.get("per_page", 30)), int(req.query.get("page", 1))
        return 200, [self._comment(cid) for cid in ids[(page - 1) * per_page: page * per_page]]

    @route("PATCH", _COMMENT)
    def edit_comment(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        cid = int(req.params["comment_id"]) if req.params["comment_id"].isdigit() else -1
        if cid not in self.comment_store:
            raise HttpError(404, self.not_found_body())
        self.comment_store[cid]["body"] = req.body["body"]
        return 200, self._comment(cid)

    @route("POST", _STATUSES)
    def create_status(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        out = self.spec.skeleton(self.spec.schema("status"))
        out.update(state=req.body["state"], description=req.body.get("description"),
                   context=req.body.get("context", "default"), id=len(self.statuses) + 1)
        self.statuses.setdefault(req.params["sha"], []).append(out)
        return 201, out
