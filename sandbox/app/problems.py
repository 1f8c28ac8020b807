"""The only place errors become HTTP: RFC 9457 problem+json with a stable `code`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from disclosure.errors import DisclosureError
from policy.errors import PolicyError
from sandbox.app.schemas import describe_error, describe_errors
from sandbox.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    NotFoundOrNotYours,
    RateLimited,
    Refused,
    SluiceError,
    Unauthenticated,
)

PROBLEM = "application/problem+json"
log = logging.getLogger("sluice.app")

_STATUS: list[tuple[type[SluiceError], int]] = [
    (Unauthenticated, 401),
    (NotFoundOrNotYours, 404),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Refused, 422),
    (InvalidInput, 400),
    (RateLimited, 429),
]

# What became of an access, by the class of what stopped it (the audit record's `decision`).
_OUTCOME: list[tuple[type[BaseException], str]] = [
    (Unauthenticated, "deny"),
    (Forbidden, "deny"),
    (RateLimited, "deny"),
    (Refused, "refused"),
    (Conflict, "refused"),
    (PolicyError, "refused"),
    (InvalidInput, "invalid"),
    (NotFound, "invalid"),
    (RequestValidationError, "invalid"),
]


def status_for(exc: SluiceError) -> int:
    """HTTP status for a sandbox error class."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def outcome_of(exc: BaseException) -> tuple[str, int, str]:
    """(decision, HTTP status, code) for an exception that ended a request: deny, refused, invalid or failed."""
    if isinstance(exc, StarletteHTTPException):
        return ("invalid" if exc.status_code < 500 else "failed"), exc.status_code, _http_code(exc.status_code)
    if isinstance(exc, RequestValidationError):
        return "invalid", 422, "validation_error"
    if isinstance(exc, SluiceError):
        status = status_for(exc)
    elif isinstance(exc, PolicyError):
        status = 422
    else:
        return "failed", 500, exc.code if isinstance(exc, DisclosureError) else "internal_error"
    for cls, decision in _OUTCOME:
        if isinstance(exc, cls):
            return decision, status, exc.code
    return "failed", status, exc.code


def _http_code(status: int) -> str:
    return {404: "route_not_found", 405: "method_not_allowed"}.get(status, "http_error")


Unaudited = Callable[[Request, BaseException], None]


def problem(status: int, code: str, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": f"https://sluice.example/problems/{code}", "title": title, "status": status,
            "detail": detail, "code": code, "instance": instance, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    retry_after = extra.get("context", {}).get("retry_after") if isinstance(extra.get("context"), dict) else None
    if status == 429 and retry_after:
        headers = {"Retry-After": str(retry_after)}
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


def install(app: FastAPI, on_unaudited: Unaudited | None = None) -> None:
    """Register the exception handlers; `on_unaudited` records failures that happened before any audit
    dependency ran (e.g. a malformed JSON body, refused before dependencies are solved)."""

    def audit(request: Request, exc: BaseException) -> None:
        if on_unaudited is not None:
            on_unaudited(request, exc)

    @app.exception_handler(SluiceError)
    async def _sluice(request: Request, exc: SluiceError) -> Response:
        if isinstance(exc, Unauthenticated) and request.url.path.startswith("/console"):
            # the console's pages send a browser without a valid session to the sign-in page
            target = "/console/sign-in?" + urlencode({"next": request.url.path, "why": exc.code})
            return RedirectResponse(target, status_code=303)
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
        audit(request, exc)
        model = body_model(request)
        errors = [{"loc": list(e.get("loc", ())), "msg": describe_error(e, model), "type": e.get("type", "")}
                  for e in exc.errors()]
        return problem(422, "validation_error", "Invalid request", describe_errors(list(exc.errors()), model),
                       request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        audit(request, exc)
        code = _http_code(exc.status_code)
        return problem(exc.status_code, code, "HTTP error", str(exc.detail), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal_error", "Internal error", "an unexpected error occurred; see server logs",
                       request.url.path)
