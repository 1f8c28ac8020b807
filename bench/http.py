"""HTTP helpers of the benchmarks: an answer's JSON or a clear failure, and waiting for a process to answer."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx


def ok(resp: httpx.Response) -> Any:
    """The answer's JSON; a 4xx/5xx raises RuntimeError naming the request and the answer."""
    if resp.status_code >= 400:
        raise RuntimeError(f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}")
    return resp.json()


def wait_healthy(proc: subprocess.Popen[bytes], url: str, what: str, tries: int = 200) -> None:
    """Wait until GET `url` answers 200; otherwise stop `proc` and raise RuntimeError('<what> did not start')."""
    for _ in range(tries):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.terminate()
    proc.wait(timeout=30)
    raise RuntimeError(f"{what} did not start")
