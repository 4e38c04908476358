"""A tiny HTTP forge framework for tests: real HTTP on 127.0.0.1, schema checks on both directions,
a request counter and fault injection.

Each fake forge (GitHub, Gitea, GitLab) subclasses FakeForge and declares its routes with
@route(METHOD, template). When the fake has an API description (`spec`), the template must be
a documented path: its query parameters, request body and response body are all validated
against that description, and any mismatch is recorded in `violations` (the fixture fails the
test on teardown). A schema mismatch is not turned into an HTTP error, so the test fails on the
real cause rather than on a confusing retry.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from gitserver import Account, GitHttpServer

from ._gitrepo import BareRepo
from ._schemas import ApiSpec


class HttpError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    template: str
    params: dict[str, str]  # path parameters, percent-decoded
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Fault:
    """Answer `status` instead of the real handler, `times` times (None = forever).

    status 0 means "no error": sleep `delay` seconds, then let the real handler answer (a slow
    forge, to provoke client read timeouts after the request was already applied).
    """

    method: str
    template: str
    status: int
    times: int | None
    headers: Callable[[], dict[str, str]] = dict
    body: Any = None
    delay: float = 0.0


@dataclass
class _Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: Callable[[Any, Request], tuple[int, Any]]


def route(method: str, template: str) -> Callable[[Callable[..., tuple[int, Any]]], Callable[..., tuple[int, Any]]]:
    def mark(fn: Callable[..., tuple[int, Any]]) -> Callable[..., tuple[int, Any]]:
        fn._route = (method, template)  # type: ignore[attr-defined]
        return fn
    return mark


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


@dataclass
class PRRecord:
    """Forge-neutral state of one pull/merge request."""

    number: int
    title: str
    body: str
    head: str
    base: str
    created: float
    state: str = "open"  # open | closed (merged ones are closed + merged)
    merged: bool = False
    labels: list[str] = field(default_factory=list)
    frozen_head_sha: str | None = None  # the head once closed or merged
    merge_sha: str | None = None
    comments: list[str] = field(default_factory=list)
    from_fork: bool = False


class FakeForge:
    """Base class: HTTP plumbing, auth, counting, faults, validation, and the shared PR store.

    Its git side is real smart HTTP (`git http-backend` behind basic auth, tests/gitserver.py) at
    `git_url`, accepting the token under the forge's documented HTTPS username (`git_username`;
    None: any non-empty name, as Gitea/Forgejo do), so pushes go through the network as in
    production. Like the real forges, a pull request whose head branch was never pushed is refused.
    """

    spec: ApiSpec | None = None
    prefix: str = ""
    auth_header: str = "authorization"
    git_username: str | None = None

    def __init__(self, repo: BareRepo, token: str) -> None:
        self.repo = repo
        self.token = token
        self.hits: Counter[str] = Counter()
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.prs: dict[int, PRRecord] = {}
        self.lock = threading.RLock()
        self._routes: list[_Route] = []
        for name in dir(type(self)):
            fn = getattr(type(self), name)
            if callable(fn) and hasattr(fn, "_route"):
                method, template = fn._route
                if self.spec is not None and template in self.spec.doc["paths"]:
                    self.spec.operation(template, method)  # KeyError: undocumented method
                self._routes.append(_Route(method, template, _compile(template), fn))
        # More literal text first, so /pulls/{index}/merge wins over /pulls/{base}/{head}.
        self._routes.sort(key=lambda r: -len(re.sub(r"\{\w+\}", "", r.template)))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        repo_path = Path(self.repo.repo.path).resolve()
        self.git = GitHttpServer(repo_path.parent, [Account(token, self.git_username)])
        self._git_rel = repo_path.name

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeForge:
        self._thread.start()
        self.git.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.git.stop()

    @property
    def git_url(self) -> str:
        """The environment repository's HTTPS clone URL (basic auth with the forge token)."""
        return self.git.url(self._git_rel)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.root + self.prefix

    # -- test controls -------------------------------------------------------------------------

    def inject(self, method: str, template: str, status: int, *, times: int | None = 1,
               headers: Callable[[], dict[str, str]] = dict, body: Any = None, delay: float = 0.0) -> None:
        assert any(r.method == method and r.template == template for r in self._routes), (method, template)
        self.faults.append(Fault(method, template, status, times, headers, body, delay))

    def count(self, method: str, template: str) -> int:
        return self.hits[f"{method} {template}"]

    def total_hits(self) -> int:
        return sum(self.hits.values())

    # -- shared store helpers ------------------------------------------------------------------

    def new_pr(self, *, title: str, body: str, head: str, base: str, from_fork: bool = False) -> PRRecord:
        number = max(self.prs, default=0) + 1
        pr = PRRecord(number, title, body, head, base, created=time.time(), from_fork=from_fork)
        self.prs[number] = pr
        return pr

    def pr_or_404(self, number: str) -> PRRecord:
        pr = self.prs.get(int(number)) if number.isdigit() else None
        if pr is None:
            raise HttpError(404, self.not_found_body())
        return pr

    def head_sha(self, pr: PRRecord) -> str:
        if pr.frozen_head_sha is not None:
            return pr.frozen_head_sha
        sha = self.repo.tip(pr.head)
        assert sha is not None, f"branch {pr.head} vanished"
        return sha

    def do_merge(self, pr: PRRecord) -> str:
        head = self.head_sha(pr)
        sha = self.repo.merge(head, pr.base, f"Merge pull request #{pr.number} from {pr.head}\n\n{pr.title}")
        pr.frozen_head_sha = head
        pr.merged = True
        pr.state = "closed"
        pr.merge_sha = sha
        return sha

    def not_found_body(self) -> Any:
        return {"message": "Not Found"}

    def unauthorized_body(self, presented: str) -> Any:
        # Echo what was presented, as a badly behaved proxy might: meshgen must scrub it.
        return {"message": f"Bad credentials: {presented}"}

    def expected_auth(self) -> str:
        raise NotImplementedError

    def authorized(self, template: str, presented: str) -> bool:
        """Does `presented` (the auth header) open `template`? One fixed token unless a fake says more."""
        return presented == self.expected_auth()

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(self, method: str, raw_target: str, headers: dict[str, str], raw_body: bytes
                 ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_target)
        path = parts.path
        if not path.startswith(self.prefix):
            self.violations.append(f"{method} {path}: outside the API prefix {self.prefix}")
            return 404, self.not_found_body(), {}
        path = path[len(self.prefix):]
        for candidate in self._routes:
            match = candidate.regex.match(path) if candidate.method == method else None
            if match:
                break
        else:
            self.violations.append(f"{method} {path}: no such endpoint in the fake (undocumented call?)")
            return 404, self.not_found_body(), {}
        key = f"{method} {candidate.template}"
        with self.lock:
            self.hits[key] += 1
        presented = headers.get(self.auth_header, "")
        if not self.authorized(candidate.template, presented):
            return 401, self.unauthorized_body(presented), {}
        active: Fault | None = None
        with self.lock:
            for fault in self.faults:
                if fault.method == method and fault.template == candidate.template and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    active = fault
                    break
        if active is not None and active.status:
            return active.status, active.body if active.body is not None else {"message": "injected"}, \
                active.headers()
        if active is not None:
            time.sleep(active.delay)  # outside the lock: other requests go on meanwhile
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            self.violations.append(f"{key}: request body is not JSON")
            return 400, {"message": "Problems parsing JSON"}, {}
        self._check_request(key, method, candidate.template, query, body)
        request = Request(method, candidate.template, {k: unquote(v) for k, v in match.groupdict().items()},
                          query, body, headers)
        try:
            with self.lock:
                status, payload = candidate.handler(self, request)
            extra: dict[str, str] = {}
        except HttpError as err:
            status, payload, extra = err.status, err.body, err.headers
        self._check_response(key, method, candidate.template, status, payload)
        return status, payload, extra

    def _check_request(self, key: str, method: str, template: str, query: dict[str, str], body: Any) -> None:
        spec = self.spec
        if spec is None or template not in spec.doc["paths"]:
            self.check_request_without_spec(key, method, template, query, body)
            return
        documented = spec.query_parameters(template, method)
        for name, value in query.items():
            if name not in documented:
                self.violations.append(f"{key}: undocumented query parameter {name!r}")
                continue
            schema = documented[name]
            typed: Any = int(value) if schema.get("type") == "integer" and value.lstrip("-").isdigit() else value
            for error in spec.errors(schema, typed):
                self.violations.append(f"{key}: query {name}={value!r}: {error}")
        body_schema = spec.request_schema(template, method)
        if body is not None:
            if body_schema is None:
                self.violations.append(f"{key}: sent a body, but the operation takes none")
            else:
                self.violations.extend(f"{key}: request body: {e}" for e in spec.errors(body_schema, body))

    def _check_response(self, key: str, method: str, template: str, status: int, payload: Any) -> None:
        spec = self.spec
        if spec is None or template not in spec.doc["paths"]:
            self.check_response_without_spec(key, method, template, status, payload)
            return
        if status >= 400:
            return  # error bodies are not what meshgen parses for data
        try:
            schema = spec.response_schema(template, method, status)
        except AssertionError as exc:
            self.violations.append(f"{key}: fake answered an undocumented status: {exc}")
            return
        if schema is not None:
            self.violations.extend(f"{key}: response body ({status}): {e}" for e in spec.errors(schema, payload))
        elif payload is not None:
            self.violations.append(f"{key}: response {status} is documented without a body")

    # For routes without a description (all of GitLab, Gitea's label creation): hand-written schemas.
    def check_request_without_spec(self, key: str, method: str, template: str, query: dict[str, str],
                                   body: Any) -> None:
        pass

    def check_response_without_spec(self, key: str, method: str, template: str, status: int,
                                    payload: Any) -> None:
        pass


def _make_handler(forge: FakeForge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real forges do
        # Send status, headers and body as one write: with unbuffered writes, Nagle plus delayed
        # ACKs add ~40 ms to every request on loopback.
        wbufsize = -1
        disable_nagle_algorithm = True

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, payload, extra = forge.dispatch(self.command, self.path, headers, raw)
            except Exception as exc:  # noqa: BLE001  # a bug in the fake: make it visible, answer 500
                forge.violations.append(f"fake crashed on {self.command} {self.path}: {exc!r}")
                status, payload, extra = 500, {"message": "fake crashed"}, {}
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler
