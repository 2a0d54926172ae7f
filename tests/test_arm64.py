"""The arm64 image under QEMU emulation: `make test-arm64`, not part of `make test`.

make test-arm64 builds the arm64 parent (`make image ARCH=arm64`) and names it
in AIOHTTP_PARENT_ARM64_IMAGE; without it conftest.py does not collect this
file (neither run nor counted as skipped). A child
built FROM it, exactly as a user builds examples/hello, must be an arm64 image
running arm64 code, and serve HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests import docker, http
from tests.conftest import ROOT
from tests.service import Service, served

PARENT = os.environ["AIOHTTP_PARENT_ARM64_IMAGE"]

pytestmark = pytest.mark.slow

# Everything runs under QEMU, several times slower than natively: the child's
# build steps and the service's start-up get more time than elsewhere.
START_TIMEOUT = 300


@pytest.fixture(scope="module")
def child() -> Iterator[str]:
    """examples/hello, built FROM the arm64 parent (docker build in its folder)."""
    tag = f"{docker.unique('aiohttp-parent-test/hello-arm64')}:latest"
    docker.build(ROOT / "examples/hello", tag, {"PARENT_IMAGE": PARENT})
    yield tag
    docker.docker("rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def service(child: str) -> Iterator[Service]:
    with served(child, env={"WEB_CONCURRENCY": "1"}, timeout=START_TIMEOUT) as svc:
        yield svc


@pytest.mark.parametrize("which", ["parent", "child"])
def test_image_config_says_arm64(which: str, child: str) -> None:
    image = PARENT if which == "parent" else child
    config = docker.inspect(image)
    assert (config["Os"], config["Architecture"]) == ("linux", "arm64")


def test_child_runs_arm64_code(child: str) -> None:
    result = docker.run(child, "python", "-c", "import platform; print(platform.machine())")
    assert result.stdout.strip() == "aarch64", result.output


def test_child_serves_the_app_through_nginx(service: Service) -> None:
    resp = http.request(service.http, "/", timeout=30)
    assert resp.status == 200
    assert resp.text == "Hello from aiohttp-parent\n"
    assert resp.headers["server"] == "nginx"


def test_child_health_route_answers(service: Service) -> None:
    resp = http.request(service.http, "/healthz", timeout=30)
    assert resp.status == 200
    assert json.loads(resp.body) == {"status": "ok"}
