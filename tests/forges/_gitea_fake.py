"""A Gitea/Forgejo API v1 fake: the endpoints meshgen uses, answers shaped by gitea-pulls.json."""

from __future__ import annotations

import time
from typing import Any

from ._gitrepo import MergeConflict
from ._schemas import ApiSpec, gitea_spec
from ._server import FakeForge, HttpError, PRRecord, Request, route

_PULLS = "/repos/{owner}/{repo}/pulls"
_PULL = "/repos/{owner}/{repo}/pulls/{index}"
_MERGE = "/repos/{owner}/{repo}/pulls/{index}/merge"
_LABELS = "/repos/{owner}/{repo}/issues/{index}/labels"
_COMMENTS = "/repos/{owner}/{repo}/issues/{index}/comments"
# Not in the trimmed reference file; written from Gitea's API documentation (issueCreateLabel).
_REPO_LABELS = "/repos/{owner}/{repo}/labels"
# Not in the trimmed reference file either (repoGet); its answer is the documented Repository.
_REPO = "/repos/{owner}/{repo}"
_CREATE_LABEL_OPTION = {
    "type": "object",
    "required": ["name", "color"],
    "properties": {
        "name": {"type": "string"},
        "color": {"type": "string", "pattern": "^#?[0-9a-fA-F]{6}$"},
        "description": {"type": "string"},
        "exclusive": {"type": "boolean"},
        "is_archived": {"type": "boolean"},
    },
    "additionalProperties": False,
}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class GiteaFake(FakeForge):
    spec = gitea_spec()
    prefix = "/api/v1"
    max_page = 50  # Gitea's MAX_RESPONSE_ITEMS: larger `limit` values are silently cut to this

    def __init__(self, repo: Any, token: str, owner: str = "acme", name: str = "env") -> None:
        super().__init__(repo, token)
        self.owner = owner
        self.name = name
        self.repo_id = 7
        self.repo_labels: dict[str, int] = {}
        self.closed_at: dict[int, float] = {}
        self.merged_at: dict[int, float] = {}
        #: What GET /repos/{owner}/{repo} reports for the token's user (`meshgen doctor`).
        self.repo_permissions = {"admin": False, "push": True, "pull": True}

    def expected_auth(self) -> str:
        return f"token {self.token}"

    def not_found_body(self) -> Any:
        return {"message": "The target couldn't be found.", "url": f"{self.root}/api/swagger", "errors": []}

    def _repo_or_404(self, req: Request) -> None:
        if (req.params["owner"], req.params["repo"]) != (self.owner, self.name):
            raise HttpError(404, self.not_found_body())

    # -- rendering -----------------------------------------------------------------------------

    def _label(self, name: str) -> dict[str, Any]:
        return {"id": self.repo_labels[name], "name": name, "color": "c5def5", "description": "",
                "exclusive": False, "is_archived": False,
                "url": f"{self.url}/repos/{self.owner}/{self.name}/labels/{self.repo_labels[name]}"}

    def render(self, pr: PRRecord) -> dict[str, Any]:
        user = {"id": 1, "login": "meshgen-bot", "full_name": "", "email": "bot@forge.test",
                "avatar_url": f"{self.root}/avatars/1", "html_url": f"{self.root}/meshgen-bot"}
        html = f"{self.root}/{self.owner}/{self.name}/pulls/{pr.number}"
        out: dict[str, Any] = {
            "id": 500 + pr.number, "number": pr.number, "url": html,
            "html_url": html, "diff_url": html + ".diff", "patch_url": html + ".patch",
            "title": pr.title, "body": pr.body, "state": pr.state, "user": user,
            "labels": [self._label(name) for name in pr.labels],
            "is_locked": False, "draft": False, "comments": len(pr.comments), "mergeable": pr.state == "open",
            "allow_maintainer_edit": False, "merged": pr.merged,
            "head": {"label": pr.head, "ref": pr.head, "sha": self.head_sha(pr),
                     "repo_id": 99 if pr.from_fork else self.repo_id},
            "base": {"label": pr.base, "ref": pr.base, "sha": self.repo.tip(pr.base) or "",
                     "repo_id": self.repo_id},
            "created_at": _iso(pr.created), "updated_at": _iso(time.time()),
        }
        # Gitea sends null for these until they happen; the (Swagger 2.0) description has no way to
        # say "nullable", so the fake leaves them out, which the client must handle the same way.
        if pr.number in self.closed_at:
            out["closed_at"] = _iso(self.closed_at[pr.number])
        if pr.merged:
            out["merged_at"] = _iso(self.merged_at[pr.number])
            out["merge_commit_sha"] = pr.merge_sha
            out["merged_by"] = user
        return out

    # -- routes --------------------------------------------------------------------------------

    @route("GET", _PULLS)
    def list_pulls(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        state = req.query.get("state", "open")
        prs = sorted((pr for pr in self.prs.values() if state == "all" or pr.state == state),
                     key=lambda pr: pr.number, reverse=True)
        limit = min(int(req.query.get("limit", self.max_page)) or self.max_page, self.max_page)
        page = int(req.query.get("page", 1))
        return 200, [self.render(pr) for pr in prs[(page - 1) * limit: page * limit]]

    @route("POST", _PULLS)
    def create_pull(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        body = req.body or {}
        head, base = body.get("head", ""), body.get("base", "")
        if self.repo.tip(head) is None or self.repo.tip(base) is None:
            raise HttpError(404, self.not_found_body())
        if any(pr.head == head and pr.base == base and pr.state == "open" for pr in self.prs.values()):
            raise HttpError(409, {"message": "pull request already exists for these targets", "url": ""})
        pr = self.new_pr(title=body.get("title", ""), body=body.get("body", ""), head=head, base=base)
        return 201, self.render(pr)

    @route("GET", _PULL)
    def get_pull(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        return 200, self.render(self.pr_or_404(req.params["index"]))

    @route("PATCH", _PULL)
    def edit_pull(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["index"])
        body = req.body or {}
        pr.title = body.get("title", pr.title)
        pr.body = body.get("body", pr.body)
        if body.get("state") == "closed" and pr.state == "open":
            pr.state = "closed"
            pr.frozen_head_sha = self.head_sha(pr)
            self.closed_at[pr.number] = time.time()
        return 201, self.render(pr)  # Gitea documents 201 for an edit

    @route("POST", _MERGE)
    def merge_pull(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["index"])
        body = req.body or {}
        if body.get("do") not in ("merge", None) and body.get("Do") != "merge":
            raise HttpError(405, None)  # only true merges are modelled
        if pr.state != "open":
            raise HttpError(405, None)
        expected = body.get("head_commit_id")
        if expected and expected != self.head_sha(pr):
            raise HttpError(409, {"message": "head out of date", "url": ""})
        try:
            self.do_merge(pr)
        except MergeConflict:
            raise HttpError(405, None) from None
        now = time.time()
        self.closed_at[pr.number] = self.merged_at[pr.number] = now
        return 200, None

    @route("PUT", _LABELS)
    def replace_labels(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["index"])
        wanted = (req.body or {}).get("labels", [])
        if any(isinstance(x, int) for x in wanted) and any(isinstance(x, str) for x in wanted):
            raise HttpError(400, {"message": "labels should be an array of strings or integers"})
        by_id = {v: k for k, v in self.repo_labels.items()}
        # Like Gitea: names and ids that do not exist are dropped silently, not an error.
        pr.labels = sorted({by_id[x] if isinstance(x, int) else x for x in wanted
                            if (x in by_id if isinstance(x, int) else x in self.repo_labels)})
        return 200, [self._label(name) for name in pr.labels]

    @route("DELETE", _LABELS)
    def clear_labels(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        self.pr_or_404(req.params["index"]).labels = []
        return 204, None

    @route("POST", _COMMENTS)
    def add_comment(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["index"])
        pr.comments.append(req.body["body"])
        html = f"{self.root}/{self.owner}/{self.name}/pulls/{pr.number}#issuecomment-{len(pr.comments)}"
        return 201, {"id": len(pr.comments), "body": req.body["body"], "html_url": html,
                     "created_at": _iso(time.time()), "updated_at": _iso(time.time())}

    @route("POST", _REPO_LABELS)
    def create_label(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        name = req.body["name"]
        if name in self.repo_labels:
            raise HttpError(422, {"message": "label already exists"})
        self.repo_labels[name] = len(self.repo_labels) + 1
        return 201, self._label(name)

    @route("GET", _REPO)
    def get_repository(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        return 200, {"id": self.repo_id, "name": self.name, "full_name": f"{self.owner}/{self.name}",
                     "private": True, "default_branch": "main", "html_url": f"{self.root}/{self.owner}/{self.name}",
                     "permissions": dict(self.repo_permissions)}

    # Label creation and the repository are the calls outside gitea-pulls.json: check them by hand.
    def check_request_without_spec(self, key: str, method: str, template: str, query: dict[str, str],
                                   body: Any) -> None:
        if template == _REPO:
            if query or body is not None:
                self.violations.append(f"{key}: takes no query parameters or body")
            return
        assert template == _REPO_LABELS, template
        self.violations.extend(f"{key}: request body: {e}" for e in self._spec().errors(_CREATE_LABEL_OPTION, body))

    def check_response_without_spec(self, key: str, method: str, template: str, status: int,
                                    payload: Any) -> None:
        if template == _REPO and status == 200:
            spec = self._spec()
            self.violations.extend(f"{key}: response: {e}" for e in spec.errors(spec.schema("Repository"), payload))
        elif status == 201:
            spec = self._spec()
            self.violations.extend(f"{key}: response: {e}" for e in spec.errors(spec.schema("Label"), payload))

    def _spec(self) -> ApiSpec:
        assert self.spec is not None
        return self.spec
