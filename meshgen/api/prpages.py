"""The local forge in the browser: /prs and /prs/{n} (issue 10, item 8).

With the embedded default (envRepo.forge.kind: local) pull requests live in the environment
repository as refs; these pages show them: title, state, the description (markdown rendered with
raw HTML disabled, so nothing in it runs), the semantic diff and the per-file YAML diff. A
write-scope token sees Merge and Close buttons: plain form posts, each carrying a CSRF token
(an HMAC of the pull request and action keyed by the caller's token, so no other site can forge
one), and a cross-site Origin is refused outright.

Browsers cannot send a bearer header, so /login exchanges a token for an HttpOnly, SameSite=Strict
cookie; an `Authorization: Bearer` header works as everywhere else in the API. With
MESHGEN_API_PUBLIC_READS the pages are readable without a token (the buttons still need one).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markdown_it import MarkdownIt
from starlette.concurrency import run_in_threadpool

from meshgen.api.security import Problem

router = APIRouter(tags=["pull requests (local forge)"], include_in_schema=False)
COOKIE = "meshgen_token"
MAX_FORM_BYTES = 8 * 1024
_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_PAGES = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True)
# CommonMark with raw HTML off: `<script>` in a description is shown as text, never run; link targets
# are validated by markdown-it (no javascript:, vbscript:, data: links).
_MD = MarkdownIt("commonmark", {"html": False, "linkify": False})


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    kind, _, given = header.partition(" ")
    if kind.lower() == "bearer" and given.strip():
        return given.strip()
    return request.cookies.get(COOKIE) or None


def _allowed(request: Request, scope: str) -> bool:
    token = _token(request)
    try:
        request.app.state.meshgen.auth.check(f"Bearer {token}" if token else None, scope)
    except Problem:
        return False
    return True


def _csrf(token: str, number: int, action: str) -> str:
    return hmac.new(token.encode(), f"meshgen-csrf|{number}|{action}".encode(), hashlib.sha256).hexdigest()


def _forge(request: Request) -> Any:
    from meshgen.forges.base import ForgeError
    from meshgen.forges.local import LocalForge
    from meshgen.giturls import local_path

    st = request.app.state.meshgen
    config = st.config
    if config is None or config.env_repo.forge.kind != "local":
        from meshgen.forges.registry import remote_kinds_text

        raise Problem(404, "Not Found", "these pages show the local forge's pull requests; with "
                      f"envRepo.forge.kind {remote_kinds_text()}, open them on the forge")
    path = local_path(config.env_repo.url, Path(st.settings.root))
    if path is None or not path.exists():
        raise Problem(404, "Not Found", "no environment repository yet; run a sync first (meshgen sync or meshgen up)")
    try:
        return LocalForge(path)
    except ForgeError as exc:
        raise Problem(503, "Service Unavailable", str(exc)) from exc


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_form(next: str = "/prs") -> HTMLResponse:
    return HTMLResponse(_PAGES.get_template("login.html").render(next=_safe_next(next), error=None))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    token, target = form.get("token", ""), _safe_next(form.get("next", "/prs"))
    st = request.app.state.meshgen
    try:
        st.auth.check(f"Bearer {token}" if token else None, "read")
        if not token:
            raise Problem(401, "Unauthorized", "a token is needed")
    except Problem:
        page = _PAGES.get_template("login.html").render(next=target, error="That token is not valid here.")
        return HTMLResponse(page, status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/")
    return response


def _safe_next(target: str) -> str:
    """Only a path of this server: never an open redirect. Browsers read `//host`, `///host` and
    `/\\host` as another origin (and drop tabs and newlines first), so a target must be one `/`
    followed by anything but another slash or backslash, with no control characters."""
    parts = urlsplit(target)
    local = (not parts.scheme and not parts.netloc and target.startswith("/") and target[1:2] not in ("/", "\\")
             and "\\" not in target and target.isprintable())
    return target if local else "/prs"


async def _form(request: Request) -> dict[str, str]:
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise Problem(413, "Content Too Large", f"a form here is at most {MAX_FORM_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Problem(413, "Content Too Large", f"a form here is at most {MAX_FORM_BYTES} bytes")
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


@router.get("/prs", response_class=HTMLResponse)
async def list_prs(request: Request) -> Response:
    if not _allowed(request, "read"):
        return _login_redirect(request)
    forge = _forge(request)
    prs = await run_in_threadpool(forge.list)
    return HTMLResponse(_PAGES.get_template("prs.html").render(prs=prs))


@router.get("/prs/{number}", response_class=HTMLResponse)
async def show_pr(request: Request, number: int) -> Response:
    if not _allowed(request, "read"):
        return _login_redirect(request)
    from meshgen.forges.base import ForgeError
    from meshgen.gitops.prdiff import pr_diff

    forge = _forge(request)
    try:
        pr = await run_in_threadpool(forge.get, number)
    except ForgeError as exc:
        raise Problem(404, "Not Found", f"no pull request #{number}: {exc}") from exc
    change = await run_in_threadpool(pr_diff, forge.repo, pr)
    token = _token(request)
    can_write = token is not None and _allowed(request, "write") and pr.state == "open"
    return HTMLResponse(_PAGES.get_template("pr.html").render(
        pr=pr, description=_MD.render(pr.body), comments=forge.comments(number), change=change,
        can_write=can_write, csrf={a: _csrf(token, number, a) for a in ("merge", "close")} if token is not None and can_write else {},
    ))


@router.post("/prs/{number}/{action}")
async def act(request: Request, number: int, action: str) -> Response:
    if action not in ("merge", "close"):
        raise Problem(404, "Not Found", "the actions are merge and close")
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.url.netloc:
        raise Problem(403, "Forbidden", "cross-site form posts are refused; use the page on this server")
    token = _token(request)
    if token is None or not _allowed(request, "write"):
        raise Problem(403, "Forbidden", "merging and closing need a write-scope token (log in at /login)")
    form = await _form(request)
    if not hmac.compare_digest(form.get("csrf", ""), _csrf(token, number, action)):
        raise Problem(403, "Forbidden", "missing or wrong CSRF token; reload the pull request page and try again")
    from meshgen.forges.base import ForgeError
    from meshgen.gitops.sync import record_pr_state

    forge = _forge(request)
    try:
        pr = await run_in_threadpool(forge.merge if action == "merge" else forge.close, number)
    except ForgeError as exc:
        raise Problem(409, "Conflict", str(exc)) from exc
    st = request.app.state.meshgen
    try:
        if await run_in_threadpool(record_pr_state, st.records, pr):
            await run_in_threadpool(lambda: st.view.refresh(force=True))
    except Exception:  # noqa: BLE001, S110 - Redis down: the next sync records it
        pass
    return RedirectResponse(f"/prs/{number}", status_code=303)
