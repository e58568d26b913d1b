"""Swagger UI at ``/docs`` and ReDoc at ``/redoc`` from files the installation ships (no CDN),
so the API documentation works on a machine without internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

VENDOR = Path(__file__).parent / "static" / "vendor"


def add_offline_docs(app: FastAPI) -> None:
    """Mount the Swagger UI files (``swagger-ui-bundle`` package) and the vendored ReDoc script,
    and serve both pages; ``app`` must be built with ``docs_url=None, redoc_url=None``."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/static/swagger-ui", StaticFiles(directory=swagger_ui_path), name="swagger-ui")
    app.mount("/static/vendor", StaticFiles(directory=VENDOR), name="vendor")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} API",
                                   swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger-ui/favicon-32x32.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} API",
                              redoc_js_url="/static/vendor/redoc.standalone.js",
                              redoc_favicon_url="/static/swagger-ui/favicon-32x32.png", with_google_fonts=False)


__all__ = ["add_offline_docs"]
