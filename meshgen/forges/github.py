"""GitHub (and GitHub Enterprise Server) pull requests over REST API v3.

Field names and request bodies follow the `pulls`, `issues/labels` and `issues/comments`
operations of GitHub's OpenAPI description (a trimmed copy is kept in shared/reference/api).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ._http import _ApiClient, _HTTPForge, _resolve_token, _RetryPolicy, _Secret, _segment
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
    verify_hmac_sha256,
)

if TYPE_CHECKING:  # github_app imports PyJWT: only a GitHub App configuration loads it
    from .github_app import GitHubApp, InstallationTokens

_PREFIX = "meshgen/"
_PAGE = 100  # GitHub's maximum per_page


class GitHubForge(_HTTPForge):
    """Pull requests on one GitHub repository.

    base_url is the REST API root: https://api.github.com for github.com, or
    https://HOST/api/v3 for GitHub Enterprise Server. The token (fine-grained: "Pull requests"
    and "Issues" read/write, "Contents" read/write to merge) comes from exactly one of `token`,
    `token_env` (an environment variable name) or `token_file` (a file path), or, instead of a
    token, from a GitHub App installation (`app`, see github_app.py: installation tokens minted
    and refreshed on demand; the app needs Pull requests, Issues and Contents read/write).
    """

    kind: ClassVar[str] = "github"
    #: GitHub's documented username for token-authenticated HTTPS git (installation tokens need it; PATs accept it).
    git_username: ClassVar[str] = "x-access-token"

    def __init__(
        self,
        owner: str,
        repo: str,
        *,
        base_url: str = "https://api.github.com",
        token: str | None = None,
        token_env: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        app: GitHubApp | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_wait: float = 60.0,
        backoff: float = 1.0,
    ) -> None:
        self.owner = owner
        self.repo = repo
        retry = _RetryPolicy(max_attempts=max_attempts, max_wait=max_wait, backoff=backoff)
        secret: _Secret
        self.app_tokens: InstallationTokens | None
        if app is not None:
            if (token, token_env, token_file) != (None, None, None):
                raise ForgeError("GitHub: give either a GitHub App (envRepo.forge.app) or a token, not both")
            from .github_app import InstallationTokens

            secret = self.app_tokens = InstallationTokens.shared(app, base_url, timeout=timeout, retry=retry)
        else:
            self.app_tokens = None
            secret = _resolve_token("GitHub", token=token, token_env=token_env, token_file=token_file)
        self._api = _ApiClient(
            "GitHub", base_url, secret, lambda value: ("Authorization", f"Bearer {value}"),
            timeout=timeout,
            retry=retry,
            extra_headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
            hint_not_found=(f"check owner/repo ({owner}/{repo}), base_url ({base_url}) and the pull request "
                            "number; GitHub also answers 404 when the token cannot see a private repository"
                            + ("" if app is None else " (for a GitHub App: when its installation does not "
                               "include the repository)")),
            hint_auth=("check that the token is valid, not expired, and has Pull requests, Issues and "
                       "Contents read/write access to the repository") if app is None else
                      (f"check that GitHub App {app.app_id} has Pull requests, Issues and Contents "
                       "read/write permissions and that its installation includes the repository"),
        )
        self._repo_path = f"repos/{_segment(owner)}/{_segment(repo)}"

    def __repr__(self) -> str:
        return f"GitHubForge(base_url={self._api.base_url!r}, repo='{self.owner}/{self.repo}')"

    def check_access(self) -> str:
        """Whether meshgen can push branches and open pull requests here (for `meshgen doctor`).

        A sentence saying what was verified, or ForgeError with the fix. GET /repos/{owner}/{repo}
        proves the credential works and sees the repository; its `permissions.push` (reported for
        tokens acting as a user) says whether it may push. An app installation's rights are the
        `permissions` of its installation token instead: Contents and Pull requests must be write.
        """
        data = self._api.call(f"read repository {self.owner}/{self.repo}", "GET", self._repo_path, parse=dict)
        where = f"{self.owner}/{self.repo}"
        if self.app_tokens is not None:
            app = self.app_tokens.app
            self.app_tokens.refresh()  # the permissions of a token minted now, not of a cached one
            granted = dict(self.app_tokens.permissions)
            missing = [name for name in ("contents", "pull_requests") if granted.get(name) not in ("write", "admin")]
            if missing:
                have = ", ".join(f"{k}: {v}" for k, v in sorted(granted.items())) or "none"
                raise ForgeError(f"GitHub: GitHub App {app.app_id} (installation {app.installation_id}) sees {where} "
                                 f"but lacks write access to {' and '.join(missing)} (it has {have}); give the app "
                                 "Contents and Pull requests read/write in its settings, then accept the new "
                                 "permissions on the installation")
            return (f"{where}: GitHub App {app.app_id} (installation {app.installation_id}) can push and open "
                    "pull requests (contents and pull_requests: write)")
        permissions = data.get("permissions")
        if not isinstance(permissions, dict):
            return f"{where}: the token is valid and sees the repository (GitHub did not report push permission)"
        if not permissions.get("push"):
            raise ForgeError(f"GitHub: the token can read {where} but not push to it, so meshgen cannot push "
                             "branches or open pull requests; give it Contents and Pull requests read/write "
                             "(fine-grained token) or the repo scope (classic), for a user with write access")
        return f"{where}: the token can push and open pull requests"

    # -- Forge protocol ------------------------------------------------------------------------

    def find_open(self, branch: str) -> PullRequest | None:
        # head=owner:branch restricts to branches of this repository's owner, so a fork's branch
        # that happens to be called meshgen/... is never mistaken for ours.
        found = self._api.call(
            f"find open pull request for {branch}", "GET", f"{self._repo_path}/pulls",
            params={"head": f"{self.owner}:{branch}", "state": "open", "per_page": _PAGE},
            parse=lambda data: [self._parse(item) for item in data if self._is_ours(item)],
        )
        return next((pr for pr in found if pr.branch == branch), None)

    def create(self, *, branch: str, base: str, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        pr = self._api.call(
            f"create pull request {branch} -> {base}", "POST", f"{self._repo_path}/pulls",
            json={"title": title, "head": branch, "base": base, "body": body}, ok=(201,), parse=self._parse,
        )
        if labels:
            pr = self._with_labels(pr, labels)
        return pr

    def update(self, number: int, *, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        pr = self._api.call(
            f"update pull request #{number}", "PATCH", f"{self._repo_path}/pulls/{number}",
            json={"title": title, "body": body}, parse=self._parse,
        )
        return self._with_labels(pr, labels)

    def comment(self, number: int, body: str) -> None:
        # Pull requests are issues for conversation purposes; there is no /pulls/{n}/comments for this
        # (that endpoint is for review comments on diff lines).
        self._api.call(
            f"comment on pull request #{number}", "POST", f"{self._repo_path}/issues/{number}/comments",
            json={"body": body}, ok=(201,),
        )

    def close(self, number: int, *, comment: str | None = None) -> PullRequest:
        if comment:
            self.comment(number, comment)
        return self._api.call(
            f"close pull request #{number}", "PATCH", f"{self._repo_path}/pulls/{number}",
            json={"state": "closed"}, parse=self._parse,
        )

    def merge(self, number: int) -> PullRequest:
        self._api.call(
            f"merge pull request #{number}", "PUT", f"{self._repo_path}/pulls/{number}/merge",
            json={"merge_method": "merge"},
        )
        # The merge answer has the sha but not the rest; re-read so the caller gets the whole,
        # consistent picture (state merged, merge_commit_sha) from one source.
        merged = self.get(number)
        if merged.state != "merged":
            raise ForgeError(f"GitHub: merge pull request #{number}: the forge accepted the merge but the pull "
                             f"request is {merged.state}; look at it on GitHub ({merged.url})")
        return merged

    def get(self, number: int) -> PullRequest:
        return self._api.call(
            f"get pull request #{number}", "GET", f"{self._repo_path}/pulls/{number}", parse=self._parse
        )

    def list(self, state: PRState | None = None) -> list[PullRequest]:
        # GitHub has no "merged" filter: merged pull requests are closed ones with merged_at set.
        api_state = {None: "all", "open": "open", "closed": "closed", "merged": "closed"}[state]
        result: list[PullRequest] = []
        page = 1
        while True:
            items: list[dict[str, Any]] = self._api.call(
                "list pull requests", "GET", f"{self._repo_path}/pulls",
                params={"state": api_state, "sort": "created", "direction": "desc",
                        "per_page": _PAGE, "page": page},
                parse=lambda data: list(data),
            )
            result.extend(self._parse(item) for item in items
                          if item["head"]["ref"].startswith(_PREFIX) and self._is_ours(item))
            if len(items) < _PAGE:
                break
            page += 1
        if state is not None:
            result = [pr for pr in result if pr.state == state]
        return sorted(result, key=lambda pr: pr.number, reverse=True)

    # -- plan reporting on blueprints pull requests (PlanReporter) -----------------------------

    def upsert_comment(self, number: int, marker: str, body: str) -> int:
        """Edit the comment carrying `marker` in place, or add it; returns its id. One comment, never two."""
        page = 1
        while True:
            items: list[dict[str, Any]] = self._api.call(
                f"list comments of pull request #{number}", "GET", f"{self._repo_path}/issues/{number}/comments",
                params={"per_page": _PAGE, "page": page}, parse=lambda data: list(data),
            )
            for item in items:
                if marker in (item.get("body") or ""):
                    self._api.call(f"edit comment {item['id']}", "PATCH",
                                   f"{self._repo_path}/issues/comments/{int(item['id'])}", json={"body": body})
                    return int(item["id"])
            if len(items) < _PAGE:
                break
            page += 1
        created: int = self._api.call(
            f"comment on pull request #{number}", "POST", f"{self._repo_path}/issues/{number}/comments",
            json={"body": body}, ok=(201,), parse=lambda data: int(data["id"]),
        )
        return created

    def set_status(self, sha: str, state: str, description: str, context: str) -> None:
        """A commit status (state: success | failure | pending | error) on `sha`."""
        self._api.call(
            f"set status {context} on {sha[:12]}", "POST", f"{self._repo_path}/statuses/{_segment(sha)}",
            json={"state": state, "description": description[:140], "context": context}, ok=(201,),
        )

    # -- helpers -------------------------------------------------------------------------------

    def _with_labels(self, pr: PullRequest, labels: tuple[str, ...]) -> PullRequest:
        """Replace the label set. GitHub creates labels that do not exist yet."""
        if labels:
            names = self._api.call(
                f"set labels on pull request #{pr.number}", "PUT",
                f"{self._repo_path}/issues/{pr.number}/labels",
                json={"labels": list(labels)}, parse=lambda data: [label["name"] for label in data],
            )
        else:
            # PUT requires at least one label in the documented body; DELETE is the "clear" call.
            self._api.call(
                f"clear labels on pull request #{pr.number}", "DELETE",
                f"{self._repo_path}/issues/{pr.number}/labels", ok=(200, 204),
            )
            names = []
        return replace(pr, labels=tuple(sorted(names)))

    def _is_ours(self, item: dict[str, Any]) -> bool:
        # head.label is "owner:branch"; GitHub logins are case-insensitive.
        return str(item["head"]["label"]).lower() == f"{self.owner}:{item['head']['ref']}".lower()

    @staticmethod
    def _parse(data: dict[str, Any]) -> PullRequest:
        # merged_at (present in both the full and the list shape) tells merged from closed; the
        # `merged` boolean exists only in the full shape.
        merged = data["merged_at"] is not None
        state: PRState = "merged" if merged else ("open" if data["state"] == "open" else "closed")
        return PullRequest(
            number=int(data["number"]),
            title=data["title"],
            body=data["body"] or "",
            state=state,
            branch=data["head"]["ref"],
            base=data["base"]["ref"],
            head_sha=data["head"]["sha"],
            # For an open pull request merge_commit_sha is GitHub's trial merge, not a real commit on
            # the base branch, so it is only reported once merged.
            merge_sha=data["merge_commit_sha"] if merged else None,
            url=data["html_url"],
            labels=tuple(sorted(label["name"] for label in data["labels"])),
        )



# ---- registration (meshgen.forges.registry) --------------------------------------------------


def _build(target: ForgeTarget) -> GitHubForge:
    fields, credentials = target.fields, dict(target.credentials)
    app = credentials.pop("app", None)
    key = credentials.pop("app_private_key_file", None)
    if app is not None:
        from .github_app import GitHubApp

        if key is None:
            raise ForgeError("envRepo.forge.app (a GitHub App) is set but MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE is "
                             "not: set it to the path of the app's private key (.pem)")
        credentials["app"] = GitHubApp(app_id=str(app["id"]), installation_id=app["installation_id"],
                                       private_key_file=Path(key))
    base = {"base_url": fields["baseUrl"]} if fields.get("baseUrl") else {}
    return GitHubForge(fields["owner"], fields["repo"], **base, **credentials, **target.options)


def _reporter(repository: str, api_url: str, token: str | None) -> GitHubForge:
    owner, _, name = repository.partition("/")
    return GitHubForge(owner, name, base_url=api_url, token=token)


def _push(p: Any) -> Push:
    head = p.get("head_commit") or {}
    author = (head.get("author") or {}).get("name") or (p.get("pusher") or {}).get("name")
    return Push((p.get("repository") or {}).get("full_name", ""), p.get("ref", ""), p.get("after", ""), author)


_ACTIONS: dict[str, PRAction] = {"opened": "opened", "synchronize": "updated", "reopened": "reopened"}


def pr_action(p: Any, actions: Mapping[str, PRAction] = _ACTIONS) -> PRAction:
    """The action of a pull_request event (GitHub and Gitea: `closed` with `merged` is a merge)."""
    action = p.get("action")
    if action == "closed":
        return "merged" if (p.get("pull_request") or {}).get("merged") is True else "closed"
    return actions.get(action, "other") if isinstance(action, str) else "other"


def parse_pr(p: Any, actions: Mapping[str, PRAction] = _ACTIONS) -> PullRequestEvent:
    """A pull_request event (GitHub's shape; Gitea and Forgejo send the same)."""
    action = pr_action(p, actions)
    pr = p["pull_request"]
    merged = action == "merged"
    state: PRState = "merged" if merged else "closed" if action == "closed" else "open"
    return PullRequestEvent(action, text((p.get("repository") or {}).get("full_name")), PullRequest(
        number=int(pr["number"]), title=text(pr.get("title")), body=text(pr.get("body")), state=state,
        branch=text(pr["head"]["ref"]), base=text(pr["base"]["ref"]), head_sha=text(pr["head"].get("sha")),
        merge_sha=text(pr.get("merge_commit_sha")) or None if merged else None, url=text(pr.get("html_url"))),
        base_sha=pr["base"].get("sha"))


FORGE = ForgeSpec(
    kind="github",
    title="GitHub",
    provider=GitHubForge,
    build=_build,
    required=("owner", "repo"),
    optional=("baseUrl", "app"),
    git_username=GitHubForge.git_username,
    repository=lambda fields: f"{fields['owner']}/{fields['repo']}",
    reporter=_reporter,
    webhook=WebhookSpec(
        signature_header="x-hub-signature-256",
        verify=verify_hmac_sha256("x-hub-signature-256", prefix="sha256="),
        event_header="x-github-event",
        delivery_headers=("x-github-delivery",),
        push_events=("push",),
        parse_push=_push,
        pr_events=("pull_request",),
        pr_action=pr_action,
        parse_pr=parse_pr,
        pr_head_ref="refs/pull/{n}/head",
        ping_events=("ping",),
        secret_help="Secret for X-Hub-Signature-256.",
    ),
)
