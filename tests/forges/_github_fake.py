"""A GitHub REST v3 fake: the pulls/issues endpoints meshgen uses, answers shaped by github-pulls.json.

GitHub App endpoints (`enable_app`): the reference subset in shared/reference/api does not include
them, so `POST /app/installations/{installation_id}/access_tokens` follows GitHub's REST docs
("Generating a JSON Web Token (JWT) for a GitHub App", "Generating an installation access token for
a GitHub App", "Create an installation access token for an app"): the app JWT arrives as
`Authorization: Bearer`, is verified with the app's public key (RS256 only), and must carry
`iss` = the app id, an `iat` not in the future and an `exp` in the future but at most 10 minutes
ahead; a wrong installation id answers 404. The 201 answer is `{token, expires_at, permissions,
repository_selection}` (checked by a hand-written schema below). Installation tokens expire after
`app_token_ttl` seconds of the fake's `clock`, which tests move forward, so refreshing is proven
without sleeping; an expired token is refused with 401 like any bad credential.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
from gitserver import Account
from jsonschema import Draft202012Validator

from ._schemas import github_spec
from ._server import FakeForge, HttpError, PRRecord, Request, route

_PULLS = "/repos/{owner}/{repo}/pulls"
_PULL = "/repos/{owner}/{repo}/pulls/{pull_number}"
_MERGE = "/repos/{owner}/{repo}/pulls/{pull_number}/merge"
_LABELS = "/repos/{owner}/{repo}/issues/{issue_number}/labels"
_COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
_APP_TOKENS = "/app/installations/{installation_id}/access_tokens"
# Not in the reference subset either (GitHub's "Get a repository"): its answer is a full-repository,
# a superset of the documented `repository` schema, which is what the fake sends and checks.
_REPO = "/repos/{owner}/{repo}"

# Hand-written from GitHub's REST docs (the endpoint is not in the reference subset).
_APP_TOKEN_REQUEST = Draft202012Validator({
    "type": "object", "additionalProperties": False,
    "properties": {"repositories": {"type": "array", "items": {"type": "string"}},
                   "repository_ids": {"type": "array", "items": {"type": "integer"}},
                   "permissions": {"type": "object", "additionalProperties": {"enum": ["read", "write", "admin"]}}},
})
_APP_TOKEN_RESPONSE = Draft202012Validator({
    "type": "object", "additionalProperties": False,
    "required": ["token", "expires_at"],
    "properties": {"token": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"},
                   "permissions": {"type": "object", "additionalProperties": {"enum": ["read", "write", "admin"]}},
                   "repository_selection": {"enum": ["all", "selected"]},
                   "repositories": {"type": "array"}, "single_file": {"type": "string"},
                   "has_multiple_single_files": {"type": "boolean"},
                   "single_file_paths": {"type": "array", "items": {"type": "string"}}},
})
#: GitHub refuses app JWTs whose exp is more than 10 minutes ahead.
JWT_MAX_LIFETIME = 600


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
        self.app: dict[str, Any] | None = None
        self.app_tokens: dict[str, float] = {}  # installation token -> expiry (fake clock)
        self.jwt_rejections: list[str] = []  # why app JWTs were refused, for tests to assert on
        self.clock: Callable[[], float] = time.time
        #: What GET /repos/{owner}/{repo} reports for a token acting as a user (`meshgen doctor`).
        self.repo_permissions = {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}

    def expected_auth(self) -> str:
        return f"Bearer {self.token}"

    # -- GitHub App ----------------------------------------------------------------------------

    def enable_app(self, app_id: str, installation_id: int, public_key: Any, *,
                   clock: Callable[[], float] = time.time, token_ttl: float = 3600.0,
                   permissions: dict[str, str] | None = None) -> None:
        """Accept JWTs of app `app_id` (verified with `public_key`) and mint tokens for one installation."""
        self.clock = clock
        self.app = {"id": str(app_id), "installation_id": installation_id, "key": public_key,
                    "ttl": token_ttl,
                    "permissions": permissions or {"contents": "write", "pull_requests": "write",
                                                   "issues": "write", "metadata": "read"}}

    def authorized(self, template: str, presented: str) -> bool:
        scheme, _, credential = presented.partition(" ")
        if template == _APP_TOKENS:
            return scheme == "Bearer" and self._jwt_ok(credential)
        if presented == self.expected_auth():
            return True
        expiry = self.app_tokens.get(credential) if scheme in ("Bearer", "token") else None
        return expiry is not None and self.clock() < expiry

    def _jwt_ok(self, token: str) -> bool:
        app = self.app
        if app is None:
            self.jwt_rejections.append("no app configured")
            return False
        try:
            # Signature (RS256 only) and shape by PyJWT; times against the fake's own clock below.
            claims = jwt.decode(token, app["key"], algorithms=["RS256"], issuer=app["id"],
                                options={"require": ["iat", "exp", "iss"], "verify_exp": False,
                                         "verify_iat": False})
        except jwt.PyJWTError as exc:
            self.jwt_rejections.append(f"{type(exc).__name__}: {exc}")
            return False
        now = self.clock()
        problems = []
        if not isinstance(claims["iat"], int) or not isinstance(claims["exp"], int):
            problems.append("iat/exp must be integers")
        elif claims["iat"] > now + 1:
            problems.append("iat is in the future")
        elif claims["exp"] <= now:
            problems.append("exp is in the past")
        elif claims["exp"] > now + JWT_MAX_LIFETIME:
            problems.append("exp is more than 10 minutes ahead")
        self.jwt_rejections.extend(problems)
        return not problems

    def expire_app_tokens(self) -> None:
        """Revoke every installation token at once (as GitHub does when the app's permissions change)."""
        self.app_tokens.clear()

    @route("POST", _APP_TOKENS)
    def create_installation_token(self, req: Request) -> tuple[int, Any]:
        assert self.app is not None  # authorized() refused otherwise
        if req.params["installation_id"] != str(self.app["installation_id"]):
            raise HttpError(404, {"message": "Not Found",
                                  "documentation_url": "https://docs.github.com/rest/apps/apps"
                                                       "#create-an-installation-access-token-for-an-app"})
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = self.clock() + self.app["ttl"]
        self.app_tokens[token] = expires
        # The git side accepts it too, under GitHub's HTTPS username, for as long as the API does.
        self.git.accounts.append(_InstallationAccount(token, self.git_username, fake=self))
        return 201, {"token": token, "expires_at": _iso(expires), "permissions": dict(self.app["permissions"]),
                     "repository_selection": "selected"}

    @route("GET", _REPO)
    def get_repository(self, req: Request) -> tuple[int, Any]:
        self._repo_or_404(req)
        out = self.spec.skeleton(self.spec.schema("repository"))
        out.update(id=1, name=self.name, full_name=f"{self.owner}/{self.name}", private=True, default_branch="main",
                   html_url=f"{self.root}/{self.owner}/{self.name}", url=f"{self.url}/repos/{self.owner}/{self.name}")
        # GitHub reports `permissions` for tokens acting as a user; an installation token's rights
        # are the permissions of the token itself (the access_tokens answer), so none here.
        if not req.headers.get("authorization", "").startswith("Bearer ghs_"):
            out["permissions"] = dict(self.repo_permissions)
        return 200, out

    def check_request_without_spec(self, key: str, method: str, template: str, query: dict[str, str],
                                   body: Any) -> None:
        if template == _REPO and (query or body is not None):
            self.violations.append(f"{key}: takes no query parameters or body")
        if template == _APP_TOKENS:
            if query:
                self.violations.append(f"{key}: undocumented query parameters {sorted(query)}")
            if body is not None:
                self.violations.extend(f"{key}: request body: {e.message}"
                                       for e in _APP_TOKEN_REQUEST.iter_errors(body))

    def check_response_without_spec(self, key: str, method: str, template: str, status: int,
                                    payload: Any) -> None:
        if template == _REPO and status == 200:
            assert self.spec is not None
            self.violations.extend(f"{key}: response body: {e}"
                                   for e in self.spec.errors(self.spec.schema("repository"), payload))
        if template == _APP_TOKENS and status == 201:
            self.violations.extend(f"{key}: response body: {e.message}"
                                   for e in _APP_TOKEN_RESPONSE.iter_errors(payload))

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


class _InstallationAccount(Account):
    """A git-side account for one installation token: valid while the fake's API would accept it."""

    def __init__(self, password: str, username: str | None, *, fake: GitHubFake) -> None:
        super().__init__(password, username)
        object.__setattr__(self, "_fake", fake)

    def matches(self, username: str, password: str) -> bool:
        fake: GitHubFake = object.__getattribute__(self, "_fake")
        expiry = fake.app_tokens.get(password)
        return super().matches(username, password) and expiry is not None and fake.clock() < expiry
