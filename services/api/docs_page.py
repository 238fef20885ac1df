"""/docs (Swagger UI) with its JavaScript and CSS served from the files of the
installed `fastapi-offline` package, so the page works on a machine without internet (FastAPI's
default loads them from a CDN). Only its files are used: the route is this one. No /redoc: ReDoc's
bundle fetches its logo from a CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

ASSETS = "/docs-assets"


def install(app: FastAPI) -> None:
    """Serve /docs and its assets (the app is made with docs_url=None and redoc_url=None)."""
    import fastapi_offline

    folder = Path(fastapi_offline.__file__).parent / "static"
    app.mount(ASSETS, StaticFiles(directory=folder), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    async def docs(_request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    app.add_route("/docs", docs, include_in_schema=False)
