"""The CLI's HTTP client: the same API as everyone else, in-process by default or against SLUICE_URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from sandbox.config import Settings


class ApiError(Exception):
    """A problem+json answer from the API."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code = str(problem.get("code", "http_error"))
        super().__init__(f"{self.code}: {problem.get('detail', '')}")


class _ProgressFile:
    """A read-only file wrapper that reports bytes read (multipart upload progress)."""

    def __init__(self, fh: IO[bytes], progress: Callable[[int], None]) -> None:
        self._fh = fh
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        if chunk:
            self._progress(len(chunk))
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


class Client:
    """Calls the Sluice API as one principal; every call is authenticated, authorized and audited."""

    def __init__(self, settings: Settings, api_key: str | None = None, *, _http: Any = None) -> None:
        self.settings = settings
        self._headers = {"X-Sluice-Client": "cli"}
        key = api_key or settings.api_key
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._owner = _http is None
        if _http is not None:
            self._http = _http
        elif settings.url:
            self._http = httpx.Client(base_url=settings.url.rstrip("/"), timeout=600)
        else:
            from starlette.testclient import TestClient

            from sandbox.app import create_app

            self._app = create_app(settings)
            self._http = TestClient(self._app, base_url="http://sluice.local", raise_server_exceptions=False)

    def with_key(self, api_key: str) -> Client:
        """Another client for a different principal, sharing this one's connection or in-process app."""
        return Client(self.settings, api_key, _http=self._http)

    def close(self) -> None:
        """Close the connection; an in-process app also stops its workers and store connections."""
        if self._owner:
            self._http.close()
            app = getattr(self, "_app", None)
            if app is not None:
                state = app.state.sluice
                state.metering.close()
                state.runs.close()
                state.engine.dispose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, raw: bool = False, **kwargs: Any) -> Any:
        """Send a request; return parsed JSON (or bytes when `raw`), raising ApiError on a problem."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        resp = _checked(self._http.request(method, path, headers=headers, **kwargs))
        ctype = resp.headers.get("content-type", "")
        if "json" in ctype and not raw:
            return resp.json()
        return resp.content

    def fetch(self, path: str, method: str = "GET", **kwargs: Any) -> tuple[bytes, dict[str, str]]:
        """Send a request (GET by default); return the raw body and the response headers, raising ApiError on a
        problem."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        resp = _checked(self._http.request(method, path, headers=headers, **kwargs))
        return resp.content, {k.lower(): v for k, v in resp.headers.items()}

    def get(self, path: str, raw: bool = False, **kwargs: Any) -> Any:
        return self.request("GET", path, raw=raw, **kwargs)

    def post(self, path: str, body: Any | None = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", path, **kwargs)

    def upload(self, path: str, metadata: dict[str, Any], file: Path | None,
               progress: Callable[[int], None] | None = None) -> Any:
        """POST multipart: `metadata` as JSON plus an optional file, reporting upload progress."""
        data = {"metadata": json.dumps(metadata, ensure_ascii=False)}
        if file is None:
            return self.request("POST", path, data=data)
        with file.open("rb") as fh:
            stream: Any = _ProgressFile(fh, progress) if progress else fh
            return self.request("POST", path, data=data, files={"file": (file.name, stream)})


def _checked(resp: httpx.Response) -> httpx.Response:
    """The response, or ApiError with its problem (or the start of its text) when it is a 4xx/5xx."""
    if resp.status_code >= 400:
        try:
            problem = resp.json()
        except ValueError:
            problem = {"code": "http_error", "detail": resp.text[:500]}
        raise ApiError(resp.status_code, problem)
    return resp
