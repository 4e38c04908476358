"""/docs (Swagger UI) and /redoc, with their JavaScript and CSS served by meshgen itself (from the
fastapi-offline package), not from a CDN: they work on a network without internet access.

The assets are a mount (`mount_assets`), which an APIRouter cannot carry into an app.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = "/docs/assets"

router = APIRouter(include_in_schema=False)


def mount_assets(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    openapi_url, title, assets = _page(request, "Swagger UI")
    return get_swagger_ui_html(openapi_url=openapi_url, title=title, swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                               swagger_css_url=f"{assets}/swagger-ui.css", swagger_favicon_url=f"{assets}/favicon.png")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    openapi_url, title, assets = _page(request, "ReDoc")
    return get_redoc_html(openapi_url=openapi_url, title=title, redoc_js_url=f"{assets}/redoc.standalone.js",
                          redoc_favicon_url=f"{assets}/favicon.png", with_google_fonts=False)


def _page(request: Request, name: str) -> tuple[str, str, str]:
    """The document's URL, the page's title and the assets' URL, under the app's root path (a proxy's prefix)."""
    root = request.scope.get("root_path", "")
    app = request.app
    return f"{root}{app.openapi_url}", f"{app.title} - {name}", f"{root}{DOCS_ASSETS}"
