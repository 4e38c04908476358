"""GET /api/v1/rollouts and /api/v1/rollouts/{env}/{namespace}/{service}: is my change live?

Both answer from the in-process snapshot (meshgen.api.view) with its pre-encoded JSON bodies,
so a request is a dict lookup (one rollout) or a bisect and a byte join (a page).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Response

from meshgen.api.models import Rollout, RolloutPage
from meshgen.api.security import BEARER_AUTH, Problem, problem_responses
from meshgen.api.state import ReadAccess
from meshgen.api.view import page_after
from meshgen.rollout import State

router = APIRouter(tags=["rollouts"])


def path_namespace(value: str) -> str:
    """The namespace a path segment names: "-" is the empty namespace (the _mesh folder)."""
    return "" if value == "-" else value


@router.get("/api/v1/rollouts", response_model=RolloutPage, openapi_extra=BEARER_AUTH,
            summary="Rollouts, filtered, sorted by env/namespace/service, paginated by cursor",
            responses=problem_responses(401, 403, 422, 503))
async def list_rollouts(
    api: ReadAccess,
    env: Annotated[str | None, Query(description="Only this environment.", max_length=63)] = None,
    team: Annotated[str | None, Query(description="Only this team.", max_length=63)] = None,
    state: Annotated[State | None, Query(description="Only this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page (the last key served).",
                                        max_length=512)] = None,
) -> Response:
    view = api.loaded_view()
    snap = view.snapshot
    keys = snap.matching(env, team, state)
    page, next_cursor = page_after(keys, cursor or None, limit)
    tail_argo, tail_plain = view.tails()
    entries = snap.entries
    items = b",".join(entries[k].head + (tail_argo if entries[k].used_argocd else tail_plain) for k in page)
    nxt = json.dumps(next_cursor)
    body = b'{"items":[' + items + f'],"total":{len(keys)},"limit":{limit},"next_cursor":{nxt}}}'.encode()
    return Response(body, media_type="application/json")


@router.get("/api/v1/rollouts/{env}/{namespace}/{service}", response_model=Rollout, openapi_extra=BEARER_AUTH,
            summary="Is the change to this service in this environment live?",
            responses=problem_responses(401, 403, 404, 422, 503))
async def get_rollout(api: ReadAccess, env: str, namespace: str, service: str) -> Response:
    view = api.view if api.view.snapshot.entries else api.loaded_view()
    entry = view.snapshot.entries.get(f"{env}/{path_namespace(namespace)}/{service}")
    if entry is None:
        raise Problem(404, "Not Found", f"meshgen has no rollout for {env}/{namespace}/{service}; check the "
                      "names (GET /api/v1/rollouts lists them) or wait for the first sync", slug="no-rollout")
    tail_argo, tail_plain = view.tails()
    return Response(entry.head + (tail_argo if entry.used_argocd else tail_plain), media_type="application/json")
