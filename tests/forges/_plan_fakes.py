"""The GitLab and Gitea fakes plus what plans on blueprints pull requests use: listing and editing
comments (notes) and commit statuses. Gitea's comment listing and statuses are checked against
gitea-pulls.json; its comment edit and all of GitLab's are checked against hand-written schemas
(written from the forges' API documentation), like the rest of those fakes' undocumented calls."""

from __future__ import annotations

import itertools
import time
from typing import Any

from ._gitea_fake import _COMMENTS as _GITEA_COMMENTS
from ._gitea_fake import GiteaFake
from ._gitlab_fake import _NOTES, NOTE, GitLabFake, _errors
from ._server import HttpError, Request, route

_GITEA_COMMENT = "/repos/{owner}/{repo}/issues/comments/{id}"  # Gitea: issueEditComment
_GITEA_STATUSES = "/repos/{owner}/{repo}/statuses/{sha}"
_GITLAB_NOTE = "/projects/{id}/merge_requests/{iid}/notes/{note_id}"  # GitLab: PUT a merge request note
_GITLAB_STATUSES = "/projects/{id}/statuses/{sha}"  # GitLab: POST a commit status

_EDIT_COMMENT = {"type": "object", "additionalProperties": False, "required": ["body"],
                 "properties": {"body": {"type": "string"}}}
_GITLAB_STATUS_REQUEST = {"type": "object", "additionalProperties": False, "required": ["state"],
                          "properties": {"state": {"enum": ["pending", "running", "success", "failed", "canceled"]},
                                         "name": {"type": "string"}, "context": {"type": "string"},
                                         "description": {"type": "string"}, "target_url": {"type": "string"},
                                         "ref": {"type": "string"}, "pipeline_id": {"type": "integer"}}}
_GITLAB_STATUS = {"type": "object", "required": ["id", "sha", "status", "name"],
                  "properties": {"id": {"type": "integer"}, "sha": {"type": "string"},
                                 "status": {"type": "string"}, "name": {"type": "string"},
                                 "description": {"type": ["string", "null"]}}}


class _Store:
    def _init_store(self) -> None:
        self.comment_store: dict[int, dict[str, Any]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(501)

    def comments_of(self, number: int) -> list[str]:
        return [c["body"] for _, c in sorted(self.comment_store.items()) if c["pr"] == number]


class GiteaPlanFake(GiteaFake, _Store):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_store()

    def _comment(self, cid: int) -> dict[str, Any]:
        c = self.comment_store[cid]
        return {"id": cid, "body": c["body"], "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "html_url": f"{self.root}/{self.owner}/{self.name}/pulls/{c['pr']}#issuecomment-{cid}"}

    @route("POST", _GITEA_COMMENTS)
    def add_comment(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["index"])
        cid = next(self._ids)
        self.comment_store[cid] = {"pr": pr.number, "body": req.body["body"]}
        pr.comments.append(req.body["body"])
        return 201, self._comment(cid)

    @route("GET", _GITEA_COMMENTS)
    def list_comments(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        pr = self.pr_or_404(req.params["index"])
        return 200, [self._comment(cid) for cid, c in sorted(self.comment_store.items()) if c["pr"] == pr.number]

    @route("PATCH", _GITEA_COMMENT)
    def edit_comment(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        cid = int(req.params["id"]) if req.params["id"].isdigit() else -1
        if cid not in self.comment_store:
            raise HttpError(404, self.not_found_body())
        self.comment_store[cid]["body"] = req.body["body"]
        return 200, self._comment(cid)

    @route("POST", _GITEA_STATUSES)
    def create_status(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        out = {"id": len(self.statuses) + 1, "status": req.body["state"], "context": req.body.get("context", ""),
               "description": req.body.get("description", ""), "created_at": "2026-01-01T00:00:00Z"}
        self.statuses.setdefault(req.params["sha"], []).append(
            {**out, "state": req.body["state"]})
        return 201, out

    def check_request_without_spec(self, key: str, method: str, template: str, query: dict[str, str],
                                   body: Any) -> None:
        if template == _GITEA_COMMENT:
            self.violations.extend(f"{key}: request body: {e}" for e in self._spec().errors(_EDIT_COMMENT, body))
            return
        super().check_request_without_spec(key, method, template, query, body)

    def check_response_without_spec(self, key: str, method: str, template: str, status: int, payload: Any) -> None:
        if template == _GITEA_COMMENT:
            spec = self._spec()
            self.violations.extend(f"{key}: response: {e}" for e in spec.errors(spec.schema("Comment"), payload))
            return
        super().check_response_without_spec(key, method, template, status, payload)


class GitLabPlanFake(GitLabFake, _Store):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_store()

    def _note(self, cid: int) -> dict[str, Any]:
        c = self.comment_store[cid]
        return {"id": cid, "body": c["body"], "system": False, "noteable_iid": c["pr"],
                "noteable_type": "MergeRequest", "created_at": "2026-01-01T00:00:00Z"}

    @route("POST", _NOTES)
    def add_note(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        pr = self.pr_or_404(req.params["iid"])
        cid = next(self._ids)
        self.comment_store[cid] = {"pr": pr.number, "body": req.body["body"]}
        pr.comments.append(req.body["body"])
        return 201, self._note(cid)

    @route("GET", _NOTES)
    def list_notes(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        pr = self.pr_or_404(req.params["iid"])
        ids = [cid for cid, c in sorted(self.comment_store.items()) if c["pr"] == pr.number]
        per_page, page = int(req.query.get("per_page", 20)), int(req.query.get("page", 1))
        return 200, [self._note(cid) for cid in ids[(page - 1) * per_page: page * per_page]]

    @route("PUT", _GITLAB_NOTE)
    def edit_note(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        cid = int(req.params["note_id"]) if req.params["note_id"].isdigit() else -1
        if cid not in self.comment_store:
            raise HttpError(404, self.not_found_body())
        self.comment_store[cid]["body"] = req.body["body"]
        return 200, self._note(cid)

    @route("POST", _GITLAB_STATUSES)
    def create_status(self, req: Request) -> tuple[int, Any]:
        self._project_or_404(req)
        out = {"id": len(self.statuses) + 1, "sha": req.params["sha"], "status": req.body["state"],
               "name": req.body.get("name", "default"), "description": req.body.get("description"),
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.statuses.setdefault(req.params["sha"], []).append({**out, "state": req.body["state"]})
        return 201, out

    def check_request_without_spec(self, key: str, method: str, template: str, query: dict[str, str],
                                   body: Any) -> None:
        if key == f"GET {_NOTES}":
            allowed = {"per_page", "page", "sort", "order_by"}
            self.violations.extend(f"{key}: undocumented query parameter {n!r}" for n in query if n not in allowed)
            if body is not None:
                self.violations.append(f"{key}: sent a body, but the endpoint takes none")
            return
        if template == _GITLAB_NOTE:
            self.violations.extend(f"{key}: request body: {e}" for e in _errors(_EDIT_COMMENT, body))
            return
        if template == _GITLAB_STATUSES:
            self.violations.extend(f"{key}: request body: {e}" for e in _errors(_GITLAB_STATUS_REQUEST, body))
            return
        super().check_request_without_spec(key, method, template, query, body)

    def check_response_without_spec(self, key: str, method: str, template: str, status: int, payload: Any) -> None:
        if status >= 400:
            return
        if key == f"GET {_NOTES}":
            self.violations.extend(f"{key}: response: {e}" for e in _errors({"type": "array", "items": NOTE}, payload))
        elif template == _GITLAB_NOTE:
            self.violations.extend(f"{key}: response: {e}" for e in _errors(NOTE, payload))
        elif template == _GITLAB_STATUSES:
            self.violations.extend(f"{key}: response: {e}" for e in _errors(_GITLAB_STATUS, payload))
        else:
            super().check_response_without_spec(key, method, template, status, payload)
