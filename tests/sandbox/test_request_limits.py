"""The request-size limit (`sandbox/app/limits.py`) at the ASGI level: an announced length over the limit is refused
at once; a streamed body is counted, also when a length is announced alongside a transfer encoding."""

from __future__ import annotations

import asyncio
from typing import Any

from sandbox.app.limits import RequestLimits


def _through(headers: list[tuple[bytes, bytes]], chunks: list[bytes], limit: int = 10, *, ended: bool = True
             ) -> tuple[list[str], int]:
    """What the app behind the limit received (message types) and the status answered; with `ended` false the
    client disconnects after the last chunk instead of ending the body."""
    seen: list[str] = []
    status = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pending = [{"type": "http.request", "body": c, "more_body": not ended or i < len(chunks) - 1}
               for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "path": "/v1/jobs", "query_string": b"", "headers": headers}
    asyncio.run(RequestLimits(app, max_body_bytes=limit)(scope, receive, send))
    return seen, status


def test_a_body_within_its_announced_length_reaches_the_app() -> None:
    assert _through([(b"content-length", b"8")], [b"12345678"]) == (["http.request"], 200)


def test_an_announced_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    assert _through([(b"content-length", b"11")], [b"12345678901"]) == ([], 413)


def test_a_streamed_body_over_the_limit_is_refused_before_the_app_runs_even_with_a_small_announced_length() -> None:
    chunked = [(b"content-length", b"4"), (b"transfer-encoding", b"chunked")]
    assert _through(chunked, [b"123456", b"789012"]) == ([], 413)
    assert _through([], [b"123456", b"789012"]) == ([], 413)


def test_a_streamed_body_within_the_limit_reaches_the_app_whole() -> None:
    assert _through([], [b"1234", b"5678", b"90"]) == (["http.request"] * 3, 200)
    assert _through([], [b"12345", b"67890"], limit=10) == (["http.request"] * 2, 200)


def test_a_client_that_disconnects_mid_body_is_handed_on_to_the_app() -> None:
    assert _through([], [b"1234"], ended=False)[0] == ["http.request", "http.disconnect"]
