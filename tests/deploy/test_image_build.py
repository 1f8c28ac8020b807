"""The image from deploy/Dockerfile, really built (deploy/build-image.sh) and run: as uid 10001, `sluice init` into
the SLUICE_HOME volume, `sluice serve`, and the image's own HEALTHCHECK command against it.

Opt-in, because a build takes minutes and downloads the lock's wheels from PyPI: SLUICE_TEST_IMAGE_BUILD=1.
SLUICE_TEST_IMAGE_BASE=stand-in builds on deploy/python-standin.sh's local stand-in (no Docker Hub here), any other
value is the base image, unset means python:3.11-slim. Skipped without a Docker daemon, buildah or podman. The run
steps are checked with buildah on the development machine; the docker/podman path uses the same CLI verbs
(run, exec, image inspect) but has not run here."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "build-image.sh"
UID = 10001
HOME = "/var/lib/sluice"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("image-build")]


def _engine() -> str:
    forced = os.environ.get("CONTAINER_ENGINE")
    if forced:
        return forced
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    for name in ("buildah", "podman"):
        if shutil.which(name):
            return name
    pytest.skip("no container engine: neither a Docker daemon answers nor buildah/podman is installed")


def _isolation() -> list[str]:
    """The flags deploy/container-engine.sh gives buildah build steps: runc when present (crun refuses this host's
    hybrid cgroups), else chroot isolation."""
    if os.environ.get("BUILDAH_ISOLATION"):
        return [f"--isolation={os.environ['BUILDAH_ISOLATION']}"]
    runc = shutil.which("runc")
    return [f"--runtime={runc}"] if runc else ["--isolation=chroot"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Container:
    """One container of the built image with a host directory as its SLUICE_HOME volume and host networking."""

    engine: str
    image: str
    volume: Path
    env: dict[str, str]
    name: str = field(default_factory=lambda: f"sluice-test-{uuid.uuid4().hex[:8]}")
    server: subprocess.Popen[bytes] | None = None  # buildah: the `buildah run ... sluice serve` process
    serving: bool = False

    def __post_init__(self) -> None:
        if self.engine == "buildah":
            subprocess.run(["buildah", "from", "--pull=never", "--name", self.name, self.image],
                           check=True, capture_output=True)

    def _opts(self) -> list[str]:
        opts = ["--network", "host", "-v", f"{self.volume}:{HOME}"]
        for key, value in self.env.items():
            opts += ["-e", f"{key}={value}"]
        return opts

    def _argv(self, argv: list[str]) -> list[str]:
        if self.engine == "buildah":
            return ["buildah", "run", *_isolation(), *self._opts(), self.name, "--", *argv]
        if self.serving:
            return [self.engine, "exec", self.name, *argv]
        return [self.engine, "run", "--rm", *self._opts(), self.image, *argv]

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._argv(list(argv)), capture_output=True, text=True, timeout=timeout)

    def serve(self, log: Path) -> None:
        if self.engine == "buildah":
            with log.open("wb") as out:
                self.server = subprocess.Popen(self._argv(["sluice", "serve"]), stdout=out, stderr=subprocess.STDOUT)
        else:
            subprocess.run([self.engine, "run", "-d", "--name", self.name, *self._opts(), self.image],
                           check=True, capture_output=True)
        self.serving = True

    def remove(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=30)
        if self.engine == "buildah":
            subprocess.run(["buildah", "rm", self.name], capture_output=True)
        else:
            subprocess.run([self.engine, "rm", "-f", self.name], capture_output=True)


def _image_config(engine: str, image: str) -> dict[str, Any]:
    if engine == "buildah":
        out = subprocess.run(["buildah", "inspect", "--type", "image", image], check=True, capture_output=True)
        config: dict[str, Any] = json.loads(out.stdout)["Docker"]["config"]
        return config
    out = subprocess.run([engine, "image", "inspect", image], check=True, capture_output=True)
    found = json.loads(out.stdout)[0]
    config = dict(found["Config"])
    if "Healthcheck" not in config and found.get("Healthcheck"):  # podman reports it beside Config, docker inside
        config["Healthcheck"] = found["Healthcheck"]
    return config


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str]]:
    if os.environ.get("SLUICE_TEST_IMAGE_BUILD") != "1":
        pytest.skip("opt-in: SLUICE_TEST_IMAGE_BUILD=1 builds deploy/Dockerfile (minutes; needs PyPI)")
    engine = _engine()
    tag = f"localhost/sluice:test-{uuid.uuid4().hex[:8]}"
    base = os.environ.get("SLUICE_TEST_IMAGE_BASE", "")
    args = ["--stand-in"] if base == "stand-in" else (["--base", base] if base else [])
    build = subprocess.run([str(BUILD), "--tag", tag, *args], capture_output=True, text=True, timeout=2400,
                           env={**os.environ, "CONTAINER_ENGINE": engine})
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    try:
        yield engine, tag
    finally:
        rmi = ["buildah", "rmi", tag] if engine == "buildah" else [engine, "rmi", tag]
        subprocess.run(rmi, capture_output=True)


def test_the_image_runs_as_uid_10001_with_a_healthcheck_and_sluice_serve(image: tuple[str, str]) -> None:
    engine, tag = image
    config = _image_config(engine, tag)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Cmd"] == ["sluice", "serve"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["WorkingDir"] == HOME and HOME in config["Volumes"]


def test_the_image_initialises_its_volume_serves_and_passes_its_own_healthcheck(
        image: tuple[str, str], tmp_path: Path) -> None:
    engine, tag = image
    volume = tmp_path / "home"
    volume.mkdir()
    try:
        os.chown(volume, UID, UID)  # what a named volume's first use does for the image's user
    except PermissionError:
        pytest.skip("giving the volume to uid 10001 needs root")
    port = _free_port()
    healthcheck = _image_config(engine, tag)["Healthcheck"]["Test"][1:]
    box = Container(engine, tag, volume, {"SLUICE_PORT": str(port)})
    try:
        who = box.run("id", "-u")
        assert who.returncode == 0 and who.stdout.strip() == str(UID), who.stderr
        # The runtime holds the service and its dependencies, not the lock's development tools.
        dev = box.run("python", "-c", "import pytest")
        assert dev.returncode != 0 and "No module named 'pytest'" in dev.stderr

        init = box.run("sluice", "init", "--json")
        assert init.returncode == 0, init.stderr
        created = json.loads(init.stdout)
        assert created["created"] is True and created["home"] == HOME
        assert created["database_url"] == f"sqlite:///{HOME}/sluice.db"
        assert (volume / "sluice.db").stat().st_uid == UID

        # The healthcheck fails while nothing listens, so its success below means the server answered.
        assert box.run(*healthcheck, timeout=30).returncode != 0
        box.serve(tmp_path / "serve.log")
        deadline = time.monotonic() + 90
        while True:
            check = box.run(*healthcheck, timeout=30)
            if check.returncode == 0:
                break
            log = (tmp_path / "serve.log").read_text(errors="replace") if engine == "buildah" else ""
            assert time.monotonic() < deadline, f"healthcheck never passed: {check.stderr[-2000:]}\n{log[-4000:]}"
            time.sleep(1)
        me = httpx.get(f"http://127.0.0.1:{port}/v1/me",
                       headers={"Authorization": f"Bearer {created['api_key']}"}, timeout=10)
        assert me.status_code == 200 and me.json()["principal_id"] == created["principal_id"]
    finally:
        box.remove()
