"""GET /: the status page, services x environments, from the in-process snapshot.

Read scope, from an `Authorization: Bearer` header or, for a browser logged in at /login
(meshgen.api.prpages), from the token cookie.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from meshgen.api.prpages import COOKIE
from meshgen.api.security import BEARER_AUTH, problem_responses
from meshgen.api.state import ApiState
from meshgen.rollout import STATES

PAGE_REFRESH_SECONDS = 15
PAGE_MAX_ROWS = 2000
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parents[2] / "templates"),
                                autoescape=True)

router = APIRouter(tags=["status page"])


async def _page_access(request: Request) -> ApiState:
    """The state, once the header or the login cookie carries a read-scope token."""
    api: ApiState = request.app.state.meshgen
    cookie = request.cookies.get(COOKIE)
    api.auth.check(request.headers.get("authorization") or (f"Bearer {cookie}" if cookie else None), "read")
    return api


@router.get("/", response_class=HTMLResponse, openapi_extra=BEARER_AUTH, summary="Status page: services x environments",
            responses=problem_responses(401, 403, 422, 503))
async def status_page(
    api: Annotated[ApiState, Depends(_page_access)],
    team: Annotated[str | None, Query(max_length=63, description="Only this team.")] = None,
) -> HTMLResponse:
    api.loaded_view()
    return HTMLResponse(_render_page(api, team or None))


def _pr_link(url: str) -> str:
    """Local-forge pull requests (`file://...#pr-N`) open on this server's /prs/N; others as they are."""
    if url.startswith("file://") and "#pr-" in url:
        number = url.rsplit("#pr-", 1)[1]
        if number.isdigit():
            return f"/prs/{number}"
    return url


_TEMPLATES.filters["pr_link"] = _pr_link


def _render_page(api: ApiState, team: str | None) -> str:
    view = api.view
    snap = view.snapshot
    keys = snap.matching(None, team, None)
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for key in keys:
        e = snap.entries[key]
        row = rows.setdefault((e.namespace, e.service), {})
        row[e.env] = e.data
        if len(rows) > PAGE_MAX_ROWS:
            rows.pop((e.namespace, e.service))
            break
    age = view.age()
    counts: dict[str, int] = dict.fromkeys(STATES, 0)
    for key in keys:
        counts[snap.entries[key].state] += 1
    return _TEMPLATES.get_template("status.html").render(
        envs=snap.envs, teams=snap.teams, team=team, rows=sorted(rows.items()), counts=counts,
        total=len(keys), truncated=len(rows) >= PAGE_MAX_ROWS, max_rows=PAGE_MAX_ROWS,
        age=age, stale=view.is_stale(age), argocd=view.argocd_configured, refresh=PAGE_REFRESH_SECONDS,
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
