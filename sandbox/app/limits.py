"""A pure ASGI middleware for request limits: bodies larger than a setting, and NUL bytes in paths.

- A request body other than a dataset upload (multipart) may not exceed `SLUICE_MAX_REQUEST_BYTES`: a 40 MiB JSON
  body once reached the store as a refused job's SQL. Uploads are bounded by `SLUICE_MAX_UPLOAD_BYTES` where they
  are spooled. The check uses Content-Length when it is sent (the server delivers no more than it announces);
  otherwise (a chunked body) it reads the body up to the limit before the app runs, and answers 413 as soon as the
  limit is passed, so the app never sees a cut-off body.
- A NUL byte in the path or query (`%00`) is answered 400 `invalid_path` instead of reaching the store, where
  PostgreSQL refuses it with an internal error.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM = "application/problem+json"


class RequestLimits:
    """Refuses oversized non-upload bodies (413 `request_too_large`) and NUL bytes in paths (400 `invalid_path`)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if "\x00" in path or b"%00" in scope.get("query_string", b"") or b"\x00" in scope.get("query_string", b""):
            await _problem(send, 400, "invalid_path", "the path or query contains a NUL byte", path)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        if content_type.startswith("multipart/"):
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length")
        limit = self.max_body_bytes
        if length is not None and length.isdigit():
            if int(length) > limit:
                await _problem(send, 413, "request_too_large",
                               f"the request body is larger than SLUICE_MAX_REQUEST_BYTES ({limit} bytes)", path)
                return
            if b"transfer-encoding" not in headers:  # the server delivers at most Content-Length bytes: no count
                await self.app(scope, receive, send)
                return
        buffered, complete = await _read_up_to(receive, limit)
        if not complete:
            await _problem(send, 413, "request_too_large",
                           f"the request body is larger than SLUICE_MAX_REQUEST_BYTES ({limit} bytes)", path)
            return

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)


async def _read_up_to(receive: Receive, limit: int) -> tuple[list[Message], bool]:
    """A streamed body's messages, read until it ends or passes `limit` bytes (then False: it is too large).

    A disconnect ends the reading too and is handed on, so the app sees what it would have seen unbuffered.
    """
    messages: list[Message] = []
    seen = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, True
        seen += len(message.get("body", b""))
        if seen > limit:
            return messages, False
        if not message.get("more_body", False):
            return messages, True


async def _problem(send: Send, status: int, code: str, detail: str, instance: str) -> None:
    body = json.dumps({"type": f"https://sluice.example/problems/{code}", "title": "Request refused",
                       "status": status, "detail": detail, "code": code, "instance": instance}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
