"""Gitea and Forgejo pull requests over API v1.

Field names and request bodies follow Gitea's swagger (a trimmed copy of v1.27 is kept in
shared/reference/api). Forgejo serves the same API for everything used here.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, ClassVar

from . import github
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
    verify_hmac_sha256,
)

_PREFIX = "meshgen/"
# Gitea silently caps page size at its MAX_RESPONSE_ITEMS setting (50 by default), so a page
# shorter than what we asked for does not mean "last page": we page until an empty one.
_PAGE = 50
# Colour given to labels meshgen has to create (Gitea requires one).
_LABEL_COLOR = "#c5def5"
# Spelled out because the class defines a method called `list`, which shadows the builtin there.
_PullRequests = list[PullRequest]


class GiteaForge(_HTTPForge):
    """Pull requests on one Gitea or Forgejo repository.

    base_url is the instance URL (https://gitea.example.com, or with a sub-path); "/api/v1" is
    appended unless it is already there. The token needs the write:repository and write:issue
    scopes; it comes from exactly one of `token`, `token_env` or `token_file`.
    """

    kind: ClassVar[str] = "gitea"
    #: Gitea/Forgejo accept any non-empty username with a token as password; envRepo.git.username overrides it.
    git_username: ClassVar[str] = "meshgen"

    def __init__(
        self,
        base_url: str,
        owner: str,
        repo: str,
        *,
        token: str | None = None,
        token_env: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_wait: float = 60.0,
        backoff: float = 1.0,
    ) -> None:
        api_url = base_url.rstrip("/")
        if not api_url.endswith("/api/v1"):
            api_url += "/api/v1"
        self.owner = owner
        self.repo = repo
        secret = _resolve_token("Gitea", token=token, token_env=token_env, token_file=token_file)
        self._api = _ApiClient(
            "Gitea", api_url, secret, lambda value: ("Authorization", f"token {value}"),
            timeout=timeout,
            retry=_RetryPolicy(max_attempts=max_attempts, max_wait=max_wait, backoff=backoff),
            hint_not_found=(f"check owner/repo ({owner}/{repo}), base_url ({api_url}) and the pull request "
                            "number; Gitea also answers 404 when the token cannot see a private repository"),
            hint_auth="check that the token is valid and has the write:repository and write:issue scopes",
        )
        self._repo_path = f"repos/{_segment(owner)}/{_segment(repo)}"

    def __repr__(self) -> str:
        return f"GiteaForge(base_url={self._api.base_url!r}, repo='{self.owner}/{self.repo}')"

    def check_access(self) -> str:
        """Whether meshgen can push branches and open pull requests here (for `meshgen doctor`):
        GET /repos/{owner}/{repo} and its `permissions.push`. A sentence, or ForgeError with the fix."""
        data = self._api.call(f"read repository {self.owner}/{self.repo}", "GET", self._repo_path, parse=dict)
        where = f"{self.owner}/{self.repo}"
        permissions = data.get("permissions")
        if not isinstance(permissions, dict) or not permissions.get("push"):
            raise ForgeError(f"Gitea: the token can read {where} but not push to it, so meshgen cannot push "
                             "branches or open pull requests; give the token's user write access to the repository "
                             "(and the token the write:repository and write:issue scopes)")
        return f"{where}: the token can push and open pull requests"

    # -- Forge protocol ------------------------------------------------------------------------

    def find_open(self, branch: str) -> PullRequest | None:
        # GET /pulls/{base}/{head} needs the base branch, which the caller does not give us, so
        # list the open pull requests and match the head branch ourselves.
        for pr in self._list_api("open"):
            if pr.branch == branch:
                return pr
        return None

    def create(self, *, branch: str, base: str, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        # Labels are not sent here: this body takes label *ids*. They are set by name just after.
        pr = self._api.call(
            f"create pull request {branch} -> {base}", "POST", f"{self._repo_path}/pulls",
            json={"head": branch, "base": base, "title": title, "body": body}, ok=(201,), parse=self._parse,
        )
        return self._with_labels(pr, labels) if labels else pr

    def update(self, number: int, *, title: str, body: str, labels: tuple[str, ...]) -> PullRequest:
        pr = self._api.call(
            f"update pull request #{number}", "PATCH", f"{self._repo_path}/pulls/{number}",
            json={"title": title, "body": body}, ok=(200, 201), parse=self._parse,
        )
        return self._with_labels(pr, labels)

    def comment(self, number: int, body: str) -> None:
        self._api.call(
            f"comment on pull request #{number}", "POST", f"{self._repo_path}/issues/{number}/comments",
            json={"body": body}, ok=(201,),
        )

    def upsert_comment(self, number: int, marker: str, body: str) -> int:
        """Edit the comment carrying `marker` in place, or add it (PlanReporter); its id."""
        comments: list[dict[str, Any]] = self._api.call(
            f"list comments of pull request #{number}", "GET", f"{self._repo_path}/issues/{number}/comments",
            parse=lambda data: list(data),
        )
        for item in comments:
            if marker in (item.get("body") or ""):
                self._api.call(f"edit comment {item['id']}", "PATCH",
                               f"{self._repo_path}/issues/comments/{int(item['id'])}", json={"body": body},
                               ok=(200, 201))
                return int(item["id"])
        created: int = self._api.call(
            f"comment on pull request #{number}", "POST", f"{self._repo_path}/issues/{number}/comments",
            json={"body": body}, ok=(201,), parse=lambda data: int(data["id"]),
        )
        return created

    def set_status(self, sha: str, state: str, description: str, context: str) -> None:
        """A commit status (PlanReporter): success, failure, error or pending."""
        self._api.call(
            f"set status {context} on {sha[:12]}", "POST", f"{self._repo_path}/statuses/{_segment(sha)}",
            json={"state": state, "context": context, "description": description[:140]}, ok=(200, 201),
        )

    def close(self, number: int, *, comment: str | None = None) -> PullRequest:
        if comment:
            self.comment(number, comment)
        return self._api.call(
            f"close pull request #{number}", "PATCH", f"{self._repo_path}/pulls/{number}",
            json={"state": "closed"}, ok=(200, 201), parse=self._parse,
        )

    def merge(self, number: int) -> PullRequest:
        # "do" is the documented (lower-case) field; Go's JSON decoding also accepts "Do".
        self._api.call(
            f"merge pull request #{number}", "POST", f"{self._repo_path}/pulls/{number}/merge",
            json={"do": "merge"}, ok=(200, 204),
        )
        merged = self.get(number)
        if merged.state != "merged":
            raise ForgeError(f"Gitea: merge pull request #{number}: the forge accepted the merge but the pull "
                             f"request is {merged.state}; look at it on Gitea ({merged.url})")
        return merged

    def get(self, number: int) -> PullRequest:
        return self._api.call(
            f"get pull request #{number}", "GET", f"{self._repo_path}/pulls/{number}", parse=self._parse
        )

    def list(self, state: PRState | None = None) -> list[PullRequest]:
        result = [pr for pr in self._list_api(state) if pr.branch.startswith(_PREFIX)]
        return sorted(result, key=lambda pr: pr.number, reverse=True)

    # -- helpers -------------------------------------------------------------------------------

    def _list_api(self, state: PRState | None) -> _PullRequests:
        """Every pull request of this repository (not forks) in `state`, all pages."""
        # Gitea has no "merged" filter: merged pull requests are closed ones with merged = true.
        api_state = {None: "all", "open": "open", "closed": "closed", "merged": "closed"}[state]
        result: _PullRequests = []
        page = 1
        while True:
            raw_count, items = self._api.call(
                "list pull requests", "GET", f"{self._repo_path}/pulls",
                params={"state": api_state, "page": page, "limit": _PAGE},
                parse=lambda data: (len(data), [self._parse(item) for item in data if self._is_ours(item)]),
            )
            result.extend(items)
            if raw_count == 0:
                break
            page += 1
        return [pr for pr in result if state is None or pr.state == state]

    def _with_labels(self, pr: PullRequest, labels: tuple[str, ...]) -> PullRequest:
        """Replace the label set, by name, creating repository labels that do not exist yet."""
        if not labels:
            self._api.call(
                f"clear labels on pull request #{pr.number}", "DELETE",
                f"{self._repo_path}/issues/{pr.number}/labels", ok=(200, 204),
            )
            return replace(pr, labels=())
        names = self._put_labels(pr.number, labels)
        missing = [name for name in labels if name not in names]
        if missing:
            # Gitea drops names it does not know instead of failing, so create them and set again.
            for name in missing:
                self._api.call(
                    f"create label {name!r}", "POST", f"{self._repo_path}/labels",
                    json={"name": name, "color": _LABEL_COLOR}, ok=(201,),
                )
            names = self._put_labels(pr.number, labels)
            still = [name for name in labels if name not in names]
            if still:
                raise ForgeError(f"Gitea: set labels on pull request #{pr.number}: labels {still} were created but "
                                 "not applied; check that the token may edit issues of this repository")
        return replace(pr, labels=tuple(sorted(names)))

    def _put_labels(self, number: int, labels: tuple[str, ...]) -> set[str]:
        # Since Gitea 1.19 (and in Forgejo) this body accepts label names as well as ids.
        return self._api.call(
            f"set labels on pull request #{number}", "PUT", f"{self._repo_path}/issues/{number}/labels",
            json={"labels": list(labels)}, parse=lambda data: {label["name"] for label in data},
        )

    @staticmethod
    def _is_ours(item: dict[str, Any]) -> bool:
        # A pull request from a fork has a different head repository; its branch names are not ours.
        head_repo, base_repo = item["head"].get("repo_id"), item["base"].get("repo_id")
        return head_repo is None or base_repo is None or head_repo == base_repo

    @staticmethod
    def _parse(data: dict[str, Any]) -> PullRequest:
        merged = bool(data["merged"])
        state: PRState = "merged" if merged else ("open" if data["state"] == "open" else "closed")
        return PullRequest(
            number=int(data["number"]),
            title=data["title"],
            body=data.get("body") or "",
            state=state,
            branch=data["head"]["ref"],
            base=data["base"]["ref"],
            head_sha=data["head"]["sha"],
            # Gitea sends null (or omits it) until merged; guard anyway, as for GitHub.
            merge_sha=data.get("merge_commit_sha") if merged else None,
            url=data["html_url"],
            labels=tuple(sorted(label["name"] for label in data.get("labels") or ())),
        )


# ---- registration (meshgen.forges.registry) --------------------------------------------------


def _build(target: ForgeTarget) -> GiteaForge:
    fields = target.fields
    return GiteaForge(fields["baseUrl"], fields["owner"], fields["repo"], **target.credentials, **target.options)


def _reporter(repository: str, api_url: str, token: str | None) -> GiteaForge:
    owner, _, name = repository.partition("/")
    return GiteaForge(api_url, owner, name, token=token)


def _push(p: Any) -> Push:
    head = p.get("head_commit") or {}
    author = (head.get("author") or {}).get("name") or (p.get("pusher") or {}).get("login")
    return Push((p.get("repository") or {}).get("full_name", ""), p.get("ref", ""), p.get("after", ""), author)


# Gitea's pull_request payload has GitHub's shape; only the update action is spelled differently.
_ACTIONS: dict[str, PRAction] = {"opened": "opened", "synchronized": "updated", "reopened": "reopened"}


def _pr_action(p: Any) -> PRAction:
    return github.pr_action(p, _ACTIONS)


def _parse_pr(p: Any) -> PullRequestEvent:
    return github.parse_pr(p, _ACTIONS)


FORGE = ForgeSpec(
    kind="gitea",
    title="Gitea / Forgejo",
    provider=GiteaForge,
    build=_build,
    required=("baseUrl", "owner", "repo"),
    git_username=GiteaForge.git_username,
    repository=lambda fields: f"{fields['owner']}/{fields['repo']}",
    reporter=_reporter,
    webhook=WebhookSpec(
        signature_header="x-gitea-signature",
        verify=verify_hmac_sha256("x-gitea-signature", lower=True),
        event_header="x-gitea-event",
        delivery_headers=("x-gitea-delivery",),
        push_events=("push",),
        parse_push=_push,
        pr_events=("pull_request",),
        pr_action=_pr_action,
        parse_pr=_parse_pr,
        pr_head_ref="refs/pull/{n}/head",
        secret_help="Secret for X-Gitea-Signature.",
    ),
)
