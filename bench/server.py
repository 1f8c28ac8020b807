"""A `sluice serve` subprocess over its own SLUICE_HOME, for the benchmark and end-to-end tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

# A loaded CI machine can take tens of seconds to import the app and start its sandbox workers.
START_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`sluice init` and `sluice serve` in subprocesses, with SLUICE_* settings given as `settings`."""

    def __init__(self, home: Path, settings: Mapping[str, str] | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.log = log  # the server's stderr (its JSON log lines) goes here when given
        dropped = ("SLUICE_DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
        inherited = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env = {**inherited, "SLUICE_HOME": str(home), **(settings or {})}  # SQLite in home unless given
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def init(self) -> str:
        """Initialize the home; returns the bootstrap admin key."""
        out = subprocess.run([sys.executable, "-m", "sandbox.cli", "init", "--json"], env=self.env, check=True,
                             capture_output=True, text=True)
        return str(json.loads(out.stdout)["api_key"])

    def start(self) -> None:
        """Start serving and wait until /healthz answers."""
        stderr = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([sys.executable, "-m", "sandbox.cli", "serve", "--port", str(self.port)],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        exited = self.proc.poll()
        self.stop()
        raise RuntimeError("sluice serve did not start" + (f" (it exited with {exited})" if exited is not None
                                                            else f" within {START_TIMEOUT_S:.0f} s"))

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, no flush); its sandbox workers exit when their pipe closes."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def stop(self) -> None:
        """Stop the server (its workers stop with it)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None
