"""The only place errors become HTTP: RFC 9457 problem+json with a stable `code`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from disclosure.errors import DisclosureError
from policy.errors import PolicyError
from sandbox.app.schemas import describe_error, describe_errors
from sandbox.errors import Conflict, Forbidden, InvalidInput, NotFound, Refused, SluiceError, Unauthenticated

PROBLEM = "application/problem+json"
log = logging.getLogger("sluice.app")

_STATUS: list[tuple[type[SluiceError], int]] = [
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Refused, 422),
    (InvalidInput, 400),
]


def status_for(exc: SluiceError) -> int:
    """HTTP status for a sandbox error class."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def problem(status: int, code: str, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": f"https://sluice.example/problems/{code}", "title": title, "status": status,
            "detail": detail, "code": code, "instance": instance, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _jsonable(context: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in context.items():
        out[k] = v if isinstance(v, str | int | float | bool | type(None) | list | dict) else str(v)
    return out


def body_model(request: Request) -> type[BaseModel] | None:
    """The pydantic model of the matched route's JSON body, if it has one."""
    field = getattr(request.scope.get("route"), "body_field", None)
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def install(app: FastAPI) -> None:
    """Register the exception handlers."""

    @app.exception_handler(SluiceError)
    async def _sluice(request: Request, exc: SluiceError) -> JSONResponse:
        status = status_for(exc)
        return problem(status, exc.code, type(exc).__name__, exc.message, request.url.path,
                       context=_jsonable(exc.context))

    @app.exception_handler(PolicyError)
    async def _policy(request: Request, exc: PolicyError) -> JSONResponse:
        return problem(422, exc.code, "Refused", exc.message, request.url.path, context=_jsonable(exc.context))

    @app.exception_handler(DisclosureError)
    async def _disclosure(request: Request, exc: DisclosureError) -> JSONResponse:
        log.error("disclosure error on %s: %s", request.url.path, exc.code)
        return problem(500, exc.code, "Signing or audit-log error", exc.message, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        model = body_model(request)
        errors = [{"loc": list(e.get("loc", ())), "msg": describe_error(e, model), "type": e.get("type", "")}
                  for e in exc.errors()]
        return problem(422, "validation_error", "Invalid request", describe_errors(list(exc.errors()), model),
                       request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, "HTTP error", str(exc.detail), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal_error", "Internal error", "an unexpected error occurred; see server logs",
                       request.url.path)
