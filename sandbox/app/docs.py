"""The API's browser documentation, served offline: Swagger UI from the pinned `swagger-ui-bundle` package (no
CDN, so `/docs` works on a government network without internet), and bearer auth declared in the OpenAPI
document so that its Authorize button sends the API key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}
BEARER = "bearerAuth"


def assets_dir() -> Path:
    """The folder of the bundled Swagger UI files."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(swagger_ui_path)


def install(app: FastAPI, public: frozenset[tuple[str, str]]) -> None:
    """Serve /docs and its assets from the package, and declare bearer auth (routes in `public` need none)."""

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs/swagger-ui-bundle.js", swagger_css_url="/docs/swagger-ui.css",
                                   swagger_favicon_url="/docs/favicon-32x32.png",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_ui_parameters={"persistAuthorization": True})

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    for name, media in ASSETS.items():
        app.add_api_route(f"/docs/{name}", _asset(name, media), methods=["GET"], include_in_schema=False)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {
                BEARER: {"type": "http", "scheme": "bearer", "description": "an API key: sk_<id>_<secret>"}}
            doc["security"] = [{BEARER: []}]
            for path, operations in doc.get("paths", {}).items():
                for method, operation in operations.items():
                    if (method.upper(), path) in public:
                        operation["security"] = []
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _asset(name: str, media: str) -> Any:
    def serve() -> FileResponse:
        return FileResponse(assets_dir() / name, media_type=media, headers={"Cache-Control": "max-age=86400"})

    serve.__name__ = f"docs_asset_{name.replace('-', '_').replace('.', '_')}"
    return serve
