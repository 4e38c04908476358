"""GitLab merge requests over REST API v4.

There is no GitLab reference description in shared/reference (see its README, "Gaps"), so this
follows GitLab's public "Merge requests API" and "Notes API" documentation: a merge request is
addressed by its project-scoped `iid`; it has source_branch, target_branch, state
(opened/closed/merged/locked), sha (head of the source branch), merge_commit_sha, web_url and
labels (a list of names when read, a comma-separated string when written).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ._http import _ApiClient, _HTTPForge, _resolve_token, _RetryPolicy, _segment
from .base import (
    ForgeError,
    ForgeSpec,
    ForgeTarget,
    PRAction,
    PRState,
    PullRequest,
    PullRequestEvent,
    Push,
    WebhookSpec,
    text,
    verify_token,
)

_PREFIX = "meshgen/"
_PAGE = 100  # GitLab's maximum per_page
_DEVELOPER = 30  # GitLab access level that may push new branches and open merge requests
# "locked" is the short-lived state while GitLab performs a merge: still open for us.
_STATES: dict[str, PRState] = {"opened": "open", "locked": "open", "merged": "merged", "closed": "closed"}


class GitLabForge(_HTTPForge):
    """Merge requests on one GitLab project (gitlab.com or self-managed).

    project is the numeric id or the full path ("group/subgroup/project"). base_url is the
    instance URL; "/api/v4" is appended unless it is already there. The token (personal, group or
    project access token with the `api` scope) comes from exactly one of `token`, `token_env` or
    `token_file`.
    """

    kind: ClassVar[str] = "gitlab"
    #: GitLab's documented username for OAuth and access tokens over HTTPS git.
    git_username: ClassVar[str] = "oauth2"

    def __init__(
        self,
        project: str | int,
        *,
        base_url: str = "https://gitlab.com",
        token: str | None = None,
        token_env: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_wait: float = 60.0,
        backoff: float = 1.0,
    ) -> None:
        api_url = base_url.rstrip("/")
        if not api_url.endswith("/api/v4"):
            api_url += "/api/v4"
        self.project = project
        secret = _resolve_token("GitLab", token=token, token_env=token_env, token_file=token_file)
        self._api = _ApiClient(
            # GitLab takes access tokens as OAuth bearer tokens too. Preferred over PRIVATE-TOKEN
            # because httpx strips Authorization (and only it) when a redirect leaves the host.
            "GitLab", api_url, secret, lambda value: ("Authorization", f"Bearer {value}"),
            timeout=timeout,
            retry=_RetryPolicy(max_attempts=max_attempts, max_wait=max_wait, backoff=backoff),
            hint_not_found=(f"check the project ({project}), base_url ({api_url}) and the merge request iid; "
                            "GitLab also answers 404 when the token cannot see a private project"),
            hint_auth="check that the token is valid, not expired, and has the api scope with at least "
                      "Developer role on the project",
        )
        # A path such as group/sub/app is one URL segment, so its slashes are percent-encoded.
        self._mrs = f"projects/{_segment(project)}/merge_requests"

    def __repr__(self) -> str:
        return f"GitLabForge(base_url={self._api.base_url!r}, project={str(self.project)!r})"

    def check_access(self) -> str:
        """Whether meshgen can push branches and open merge requests here (for `meshgen doctor`):
        GET /projects/:id and the token user's access level in `permissions` (project or group
        membership): Developer (30) or more may push new branches and open merge requests."""
        data = self._api.call(f"read project {self.project}", "GET", f"projects/{_segment(self.project)}",
                              parse=dict)
        permissions = data.get("permissions") or {}
        levels = [int(access["access_level"]) for access in (permissions.get("project_access"),
                                                             permissions.get("group_access"))
                  if isinstance(access, dict) and "access_level" in access]
        level = max(levels, default=0)
        where = data.get("path_with_namespace") or str(self.project)
        if level < _DEVELOPER:
            raise ForgeError(f"GitLab: the token's user has access level {level} on {where}; pushing branches and "
                             f"opening merge requests needs Developer ({_DEVELOPER}) or more: add it to the project "
                             "as Developer or Maintainer (a project access token: create it with that role)")
        return f"{where}: the token (access level {level}) can push and open merge requests"

    # -- Forge protocol ------------------------------------------------------------------------

    def find_open(self, branch: str) -> PullRequest | None:
        found = self._api.call(
            f"find open merge request for {branch}", "GET", self._mrs,
            params={"source_branch": branch, "state": "opened", "per_page": _PAGE},
            parse=lambda data: [self._parse(item) for item in data if self._is_ours(item)],
        )
        return next((mr for mr in found if mr.branch == branch), None)

    def create(self, *, branch: str, base: str, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        # GitLab creates labels that do not exist yet, so they can go in with the merge request.
        return self._api.call(
            f"create merge request {branch} -> {base}", "POST", self._mrs,
            json={"source_branch": branch, "target_branch": base, "title": title, "description": body,
                  "labels": ",".join(labels)},
            ok=(201,), parse=self._parse,
        )

    def update(self, number: int, *, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        # `labels` replaces the whole set; an empty string removes them all.
        return self._api.call(
            f"update merge request !{number}", "PUT", f"{self._mrs}/{number}",
            json={"title": title, "description": body, "labels": ",".join(labels)}, parse=self._parse,
        )

    def comment(self, number: int, body: str) -> None:
        self._api.call(
            f"comment on merge request !{number}", "POST", f"{self._mrs}/{number}/notes",
            json={"body": body}, ok=(201,),
        )

    def upsert_comment(self, number: int, marker: str, body: str) -> int:
        """Edit the note carrying `marker` in place, or add it (PlanReporter); its id."""
        page = 1
        while True:
            notes: list[dict[str, Any]] = self._api.call(
                f"list notes of merge request !{number}", "GET", f"{self._mrs}/{number}/notes",
                params={"per_page": _PAGE, "page": page, "sort": "asc"}, parse=lambda data: list(data),
            )
            for note in notes:
                if marker in (note.get("body") or ""):
                    self._api.call(f"edit note {note['id']}", "PUT", f"{self._mrs}/{number}/notes/{int(note['id'])}",
                                   json={"body": body})
                    return int(note["id"])
            if len(notes) < _PAGE:
                break
            page += 1
        created: int = self._api.call(
            f"comment on merge request !{number}", "POST", f"{self._mrs}/{number}/notes",
            json={"body": body}, ok=(201,), parse=lambda data: int(data["id"]),
        )
        return created

    def set_status(self, sha: str, state: str, description: str, context: str) -> None:
        """A commit status (PlanReporter); GitLab calls failure and error `failed`."""
        gl_state = {"success": "success", "pending": "pending", "failure": "failed", "error": "failed"}[state]
        self._api.call(
            f"set status {context} on {sha[:12]}", "POST",
            f"projects/{_segment(self.project)}/statuses/{_segment(sha)}",
            json={"state": gl_state, "name": context, "description": description[:255]}, ok=(200, 201),
        )

    def close(self, number: int, *, comment: str | None = None) -> PullRequest:
        if comment:
            self.comment(number, comment)
        return self._api.call(
            f"close merge request !{number}", "PUT", f"{self._mrs}/{number}",
            json={"state_event": "close"}, parse=self._parse,
        )

    def merge(self, number: int) -> PullRequest:
        self._api.call(f"merge merge request !{number}", "PUT", f"{self._mrs}/{number}/merge")
        merged = self.get(number)
        if merged.state != "merged":
            # e.g. the project merges through a merge train or "merge when pipeline succeeds".
            raise ForgeError(f"GitLab: merge merge request !{number}: the merge was accepted but the merge "
                             f"request is still {merged.state}; it may be waiting for a pipeline or merge "
                             f"train, check {merged.url} and run again once it has merged")
        return merged

    def get(self, number: int) -> PullRequest:
        return self._api.call(f"get merge request !{number}", "GET", f"{self._mrs}/{number}", parse=self._parse)

    def list(self, state: PRState | None = None) -> list[PullRequest]:
        api_state = {None: "all", "open": "opened", "closed": "closed", "merged": "merged"}[state]
        result: list[PullRequest] = []
        page = 1
        while True:
            raw_count, items = self._api.call(
                "list merge requests", "GET", self._mrs,
                params={"state": api_state, "order_by": "created_at", "sort": "desc",
                        "per_page": _PAGE, "page": page},
                parse=lambda data: (len(data), [self._parse(item) for item in data if self._is_ours(item)]),
            )
            result.extend(mr for mr in items if mr.branch.startswith(_PREFIX))
            if raw_count < _PAGE:
                break
            page += 1
        if state is not None:
            result = [mr for mr in result if mr.state == state]
        return sorted(result, key=lambda mr: mr.number, reverse=True)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _is_ours(item: dict[str, Any]) -> bool:
        # A merge request from a fork has another source project; its branch names are not ours.
        source, target = item.get("source_project_id"), item.get("target_project_id")
        return source is None or target is None or source == target

    @staticmethod
    def _parse(data: dict[str, Any]) -> PullRequest:
        raw_state = data["state"]
        state = _STATES.get(raw_state, "closed")
        merge_sha: str | None = None
        if state == "merged":
            # merge_commit_sha is null when the project merges by fast-forward; then the base branch
            # tip is the squash commit (if squashed) or the source head itself.
            merge_sha = data.get("merge_commit_sha") or data.get("squash_commit_sha") or data["sha"]
        return PullRequest(
            number=int(data["iid"]),
            title=data["title"],
            body=data.get("description") or "",
            state=state,
            branch=data["source_branch"],
            base=data["target_branch"],
            head_sha=data["sha"],
            merge_sha=merge_sha,
            url=data["web_url"],
            labels=tuple(sorted(str(label) for label in data.get("labels") or ())),
        )


# ---- registration (meshgen.forges.registry) --------------------------------------------------


def _build(target: ForgeTarget) -> GitLabForge:
    fields = target.fields
    base = {"base_url": fields["baseUrl"]} if fields.get("baseUrl") else {}
    return GitLabForge(fields["project"], **base, **target.credentials, **target.options)


def _reporter(repository: str, api_url: str, token: str | None) -> GitLabForge:
    return GitLabForge(repository, base_url=api_url, token=token)


def _push(p: Any) -> Push:
    commit = p.get("checkout_sha") or p.get("after") or ""
    commits = p.get("commits") or []
    last = next((c for c in commits if c.get("id") == commit), commits[-1] if commits else {})
    author = (last.get("author") or {}).get("name") or p.get("user_name")
    return Push((p.get("project") or {}).get("path_with_namespace", ""), p.get("ref", ""), commit, author)


_ACTIONS: dict[str, PRAction] = {"open": "opened", "update": "updated", "reopen": "reopened", "merge": "merged",
                                 "close": "closed"}


def _pr_action(p: Any) -> PRAction:
    action = p["object_attributes"].get("action")
    return _ACTIONS.get(action, "other") if isinstance(action, str) else "other"


def _parse_pr(p: Any) -> PullRequestEvent:
    attrs = p["object_attributes"]
    action = _pr_action(p)
    state: PRState = "merged" if action == "merged" else "closed" if action == "closed" else "open"
    return PullRequestEvent(action, text((p.get("project") or {}).get("path_with_namespace")), PullRequest(
        number=int(attrs["iid"]), title=text(attrs.get("title")), body=text(attrs.get("description")), state=state,
        branch=text(attrs["source_branch"]), base=text(attrs["target_branch"]),
        head_sha=text((attrs.get("last_commit") or {}).get("id")),
        merge_sha=text(attrs.get("merge_commit_sha")) or None if state == "merged" else None,
        url=text(attrs.get("url"))), base_sha=(attrs.get("diff_refs") or {}).get("base_sha"))


FORGE = ForgeSpec(
    kind="gitlab",
    title="GitLab",
    provider=GitLabForge,
    build=_build,
    required=("project",),
    optional=("baseUrl",),
    git_username=GitLabForge.git_username,
    repository=lambda fields: str(fields["project"]),
    reporter=_reporter,
    webhook=WebhookSpec(
        signature_header="x-gitlab-token",
        verify=verify_token("x-gitlab-token"),
        event_header="x-gitlab-event",
        # Idempotency-Key (GitLab 17.4+) is stable across retries of one event; the UUIDs are older fallbacks.
        delivery_headers=("idempotency-key", "x-gitlab-webhook-uuid", "x-gitlab-event-uuid"),
        push_events=("Push Hook",),
        parse_push=_push,
        pr_events=("Merge Request Hook",),
        pr_action=_pr_action,
        parse_pr=_parse_pr,
        pr_head_ref="refs/merge-requests/{n}/head",
        secret_help="Secret compared with X-Gitlab-Token.",
    ),
)
