"""A GitLab API v4 fake for merge requests and notes.

shared/reference has no GitLab description (see its README, "Gaps"), so the schemas below are
written by hand from GitLab's public "Merge requests API" and "Notes API" documentation. They are
strict in the same way as the generated ones: the fake can only send documented fields, and
meshgen can only send documented parameters.
"""

from __future__ import annotations

import time
from typing import Any

from jsonschema import Draft202012Validator

from ._gitrepo import MergeConflict
from ._server import FakeForge, HttpError, PRRecord, Request, route

_MRS = "/projects/{id}/merge_requests"
_MR = "/projects/{id}/merge_requests/{iid}"
_MERGE = "/projects/{id}/merge_requests/{iid}/merge"
_NOTES = "/projects/{id}/merge_requests/{iid}/notes"
_PROJECT = "/projects/{id}"  # "Get a single project" (Projects API), for `meshgen doctor`
_ACCESS = {"anyOf": [{"type": "null"},
                     {"type": "object", "additionalProperties": False, "required": ["access_level"],
                      "properties": {"access_level": {"enum": [0, 5, 10, 15, 20, 30, 40, 50]},
                                     "notification_level": {"type": "integer"}}}]}
PROJECT = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "path_with_namespace", "default_branch", "web_url"],
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "path": {"type": "string"},
                   "path_with_namespace": {"type": "string"}, "default_branch": {"type": ["string", "null"]},
                   "web_url": {"type": "string"}, "visibility": {"enum": ["private", "internal", "public"]},
                   "permissions": {"type": "object", "additionalProperties": False,
                                   "properties": {"project_access": _ACCESS, "group_access": _ACCESS}}},
}

_NULLABLE_STR = {"type": ["string", "null"]}
_USER = {"type": "object", "additionalProperties": False,
         "properties": {"id": {"type": "integer"}, "username": {"type": "string"}, "name": {"type": "string"},
                        "state": {"type": "string"}, "web_url": {"type": "string"}}}
MERGE_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "iid", "project_id", "title", "description", "state", "target_branch", "source_branch",
                 "source_project_id", "target_project_id", "labels", "sha", "merge_commit_sha",
                 "squash_commit_sha", "web_url", "created_at", "updated_at", "merged_at", "closed_at"],
    "properties": {
        "id": {"type": "integer"}, "iid": {"type": "integer"}, "project_id": {"type": "integer"},
        "title": {"type": "string"}, "description": _NULLABLE_STR,
        "state": {"enum": ["opened", "closed", "merged", "locked"]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
        "merged_at": _NULLABLE_STR, "closed_at": _NULLABLE_STR,
        "merged_by": {"anyOf": [_USER, {"type": "null"}]}, "closed_by": {"anyOf": [_USER, {"type": "null"}]},
        "author": _USER,
        "target_branch": {"type": "string"}, "source_branch": {"type": "string"},
        "source_project_id": {"type": "integer"}, "target_project_id": {"type": "integer"},
        "labels": {"type": "array", "items": {"type": "string"}},
        "draft": {"type": "boolean"}, "work_in_progress": {"type": "boolean"},
        "merge_status": {"type": "string"}, "detailed_merge_status": {"type": "string"},
        "has_conflicts": {"type": "boolean"},
        "sha": {"type": "string"}, "merge_commit_sha": _NULLABLE_STR, "squash_commit_sha": _NULLABLE_STR,
        "user_notes_count": {"type": "integer"}, "should_remove_source_branch": {"type": ["boolean", "null"]},
        "force_remove_source_branch": {"type": ["boolean", "null"]}, "squash": {"type": "boolean"},
        "web_url": {"type": "string"},
        "references": {"type": "object", "additionalProperties": False,
                       "properties": {"short": {"type": "string"}, "relative": {"type": "string"},
                                      "full": {"type": "string"}}},
    },
}
NOTE = {"type": "object", "additionalProperties": False, "required": ["id", "body"],
        "properties": {"id": {"type": "integer"}, "body": {"type": "string"}, "author": _USER,
                       "created_at": {"type": "string"}, "system": {"type": "boolean"},
                       "noteable_iid": {"type": "integer"}, "noteable_type": {"type": "string"}}}

_STR, _BOOL, _INT = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
_INTS = {"type": "array", "items": _INT}
REQUESTS: dict[str, dict[str, Any]] = {
    f"POST {_MRS}": {"type": "object", "additionalProperties": False,
                     "required": ["source_branch", "target_branch", "title"],
                     "properties": {"source_branch": _STR, "target_branch": _STR, "title": _STR,
                                    "description": _STR, "labels": _STR, "assignee_id": _INT,
                                    "assignee_ids": _INTS, "reviewer_ids": _INTS, "milestone_id": _INT,
                                    "remove_source_branch": _BOOL, "squash": _BOOL,
                                    "allow_collaboration": _BOOL, "target_project_id": _INT}},
    f"PUT {_MR}": {"type": "object", "additionalProperties": False, "minProperties": 1,
                   "properties": {"title": _STR, "description": _STR, "labels": _STR, "add_labels": _STR,
                                  "remove_labels": _STR, "state_event": {"enum": ["close", "reopen"]},
                                  "target_branch": _STR, "assignee_id": _INT, "assignee_ids": _INTS,
                                  "reviewer_ids": _INTS, "milestone_id": _INT, "discussion_locked": _BOOL,
                                  "remove_source_branch": _BOOL, "squash": _BOOL,
                                  "allow_collaboration": _BOOL}},
    f"PUT {_MERGE}": {"type": "object", "additionalProperties": False,
                      "properties": {"merge_commit_message": _STR, "squash_commit_message": _STR,
                                     "squash": _BOOL, "should_remove_source_branch": _BOOL,
                                     "merge_when_pipeline_succeeds": _BOOL, "auto_merge": _BOOL, "sha": _STR}},
    f"POST {_NOTES}": {"type": "object", "additionalProperties": False, "required": ["body"],
                       "properties": {"body": _STR, "internal": _BOOL, "created_at": _STR,
                                      "merge_request_diff_head_sha": _STR}},
}
QUERIES: dict[str, dict[str, dict[str, Any]]] = {
    f"GET {_MRS}": {"state": {"enum": ["opened", "closed", "locked", "merged", "all"]},
                    "source_branch": _STR, "target_branch": _STR,
                    "order_by": {"enum": ["created_at", "updated_at", "title", "merged_at"]},
                    "sort": {"enum": ["asc", "desc"]}, "per_page": _STR, "page": _STR, "labels": _STR,
                    "scope": _STR, "view": _STR, "with_labels_details": _STR},
}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _errors(schema: dict[str, Any], instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(instance)]


class GitLabFake(FakeForge):
    prefix = "/api/v4"

    git_username = "oauth2"  # the documented HTTPS username for tokens

    def __init__(self, repo: Any, token: str, project_path: str = "acme/platform/env", project_id: int = 42) -> None:
        super().__init__(repo, token)
        self.project_path = project_path
        self.project_id = project_id
        self.closed_at: dict[int, float] = {}
        #: The token user's membership levels GET /projects/:id reports (`meshgen doctor`).
        self.access_levels: dict[str, int | None] = {"project_access": 30, "group_access": None}

    def expected_auth(self) -> str:
        return f"Bearer {self.token}"  # GitLab accepts access tokens as OAuth bearer tokens

    @route("GET", _PROJECT)
    def get_project(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        levels = {k: (None if v is None else {"access_level": v, "notification_level": 3})
                  for k, v in self.access_levels.items()}
        return 200, {"id": self.project_id, "name": self.project_path.rsplit("/", 1)[-1],
                     "path": self.project_path.rsplit("/", 1)[-1], "path_with_namespace": self.project_path,
                     "default_branch": "main", "web_url": f"{self.root}/{self.project_path}",
                     "visibility": "private", "permissions": levels}

    def not_found_body(self) -> Any:
        return {"message": "404 Not found"}

    def unauthorized_body(self, presented: str) -> Any:
        return {"message": f"401 Unauthorized ({presented})"}

    def _project_or_404(self, req: Request) -> None:
        if req.params["id"] not in (self.project_path, str(self.project_id)):
            raise HttpError(404, {"message": "404 Project Not Found"})

    # -- rendering -----------------------------------------------------------------------------

    def render(self, pr: PRRecord) -> dict[str, Any]:
        user = {"id": 1, "username": "meshgen-bot", "name": "meshgen", "state": "active",
                "web_url": f"{self.root}/meshgen-bot"}
        if pr.merged:
            state = "merged"
        else:
            state = "opened" if pr.state == "open" else "closed"
        closed = self.closed_at.get(pr.number)
        return {
            "id": 9000 + pr.number, "iid": pr.number, "project_id": self.project_id,
            "title": pr.title, "description": pr.body or None, "state": state,
            "created_at": _iso(pr.created), "updated_at": _iso(time.time()),
            "merged_at": _iso(closed) if pr.merged else None,
            "closed_at": _iso(closed) if state == "closed" else None,
            "merged_by": user if pr.merged else None, "closed_by": user if state == "closed" else None,
            "author": user, "target_branch": pr.base, "source_branch": pr.head,
            "source_project_id": 77 if pr.from_fork else self.project_id, "target_project_id": self.project_id,
            "labels": sorted(pr.labels), "draft": False, "work_in_progress": False,
            "merge_status": "can_be_merged", "detailed_merge_status": "mergeable" if state == "opened" else "not_open",
            "has_conflicts": False, "sha": self.head_sha(pr),
            "merge_commit_sha": pr.merge_sha, "squash_commit_sha": None,
            "user_notes_count": len(pr.comments), "should_remove_source_branch": None,
            "force_remove_source_branch": False, "squash": False,
            "web_url": f"{self.root}/{self.project_path}/-/merge_requests/{pr.number}",
            "references": {"short": f"!{pr.number}", "relative": f"!{pr.number}",
                           "full": f"{self.project_path}!{pr.number}"},
        }

    # -- routes --------------------------------------------------------------------------------

    @route("GET", _MRS)
    def list_mrs(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        state = req.query.get("state", "all")
        wanted = {"opened": ("open", False), "closed": ("closed", False), "merged": ("closed", True)}
        prs = [pr for pr in self.prs.values()
               if state == "all" or (state in wanted and (pr.state, pr.merged) == wanted[state])]
        if "source_branch" in req.query:
            prs = [pr for pr in prs if pr.head == req.query["source_branch"]]
        prs.sort(key=lambda pr: pr.number, reverse=req.query.get("sort", "desc") == "desc")
        per_page, page = int(req.query.get("per_page", 20)), int(req.query.get("page", 1))
        return 200, [self.render(pr) for pr in prs[(page - 1) * per_page: page * per_page]]

    @route("POST", _MRS)
    def create_mr(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        body = req.body or {}
        head, base = body.get("source_branch", ""), body.get("target_branch", "")
        if self.repo.tip(head) is None or self.repo.tip(base) is None:
            raise HttpError(422, {"message": ["Source branch does not exist" if self.repo.tip(head) is None
                                              else "Target branch does not exist"]})
        if any(pr.head == head and pr.base == base and pr.state == "open" for pr in self.prs.values()):
            raise HttpError(409, {"message": ["Another open merge request already exists for this source branch"]})
        pr = self.new_pr(title=body["title"], body=body.get("description", ""), head=head, base=base)
        pr.labels = sorted({x.strip() for x in body.get("labels", "").split(",") if x.strip()})
        return 201, self.render(pr)

    @route("GET", _MR)
    def get_mr(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        return 200, self.render(self.pr_or_404(req.params["iid"]))

    @route("PUT", _MR)
    def update_mr(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        pr = self.pr_or_404(req.params["iid"])
        body = req.body or {}
        pr.title = body.get("title", pr.title)
        pr.body = body.get("description", pr.body)
        if "labels" in body:
            pr.labels = sorted({x.strip() for x in body["labels"].split(",") if x.strip()})
        if body.get("state_event") == "close" and pr.state == "open":
            pr.state = "closed"
            pr.frozen_head_sha = self.head_sha(pr)
            self.closed_at[pr.number] = time.time()
        return 200, self.render(pr)

    @route("PUT", _MERGE)
    def merge_mr(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        pr = self.pr_or_404(req.params["iid"])
        if pr.state != "open":
            raise HttpError(405, {"message": "405 Method Not Allowed"})
        expected = (req.body or {}).get("sha")
        if expected and expected != self.head_sha(pr):
            raise HttpError(409, {"message": "SHA does not match HEAD of source branch"})
        try:
            self.do_merge(pr)
        except MergeConflict:
            raise HttpError(406, {"message": "Branch cannot be merged"}) from None
        self.closed_at[pr.number] = time.time()
        return 200, self.render(pr)

    @route("POST", _NOTES)
    def add_note(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        pr = self.pr_or_404(req.params["iid"])
        pr.comments.append(req.body["body"])
        return 201, {"id": len(pr.comments), "body": req.body["body"], "system": False,
                     "noteable_iid": pr.number, "noteable_type": "MergeRequest", "created_at": _iso(time.time())}

    # -- contract checks (hand-written, see module docstring) ------------------------------------

    def check_request_without_spec(self, key: str, method: str, template: str, query: dict[str, str],
                                   body: Any) -> None:
        documented = QUERIES.get(key, {})
        for name, value in query.items():
            if name not in documented:
                self.violations.append(f"{key}: undocumented query parameter {name!r}")
            else:
                self.violations.extend(f"{key}: query {name}: {e}" for e in _errors(documented[name], value))
        if body is not None:
            if key not in REQUESTS:
                self.violations.append(f"{key}: sent a body, but the endpoint takes none")
            else:
                self.violations.extend(f"{key}: request body: {e}" for e in _errors(REQUESTS[key], body))

    def check_response_without_spec(self, key: str, method: str, template: str, status: int,
                                    payload: Any) -> None:
        if status >= 400:
            return
        if template == _PROJECT:
            schema: dict[str, Any] = PROJECT
        elif template == _NOTES:
            schema = NOTE
        elif key == f"GET {_MRS}":
            schema = {"type": "array", "items": MERGE_REQUEST}
        else:
            schema = MERGE_REQUEST
        self.violations.extend(f"{key}: response body ({status}): {e}" for e in _errors(schema, payload))
