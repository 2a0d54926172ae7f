"""Children built by buildah and run by podman: what happens to the ONBUILD
contract in each image format, and the loud stop when it was lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import docker, http

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples/hello"
MARKER = "/usr/local/lib/aiohttp-parent/onbuild.done"
# podman asks for more open files and processes than this host's hard limits
# allow (`error setting rlimit type 7: operation not permitted`): README.rst,
# "Buildah and Podman".
PODMAN_ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
# Podman 4.3, unlike Docker, keeps ports below 1024 root's inside the container:
# the image's app user binds 80 once they are opened to it (README, "Buildah and Podman").
PODMAN_LOW_PORTS = ["--sysctl", "net.ipv4.ip_unprivileged_port_start=0"]
# `serve` refuses a child without its ONBUILD steps before starting anything.
STOPS_WITHIN = 10


@pytest.fixture(autouse=True, scope="module")
def _tools() -> None:
    """A missing tool fails these tests: they must not pass by being skipped."""
    missing = [t for t in ("buildah", "podman", "skopeo") if not shutil.which(t)]
    assert not missing, f"{missing} missing: scripts/host-setup.sh (make host) installs them"


def run(*args: str, check: bool = True, timeout: float = 300) -> docker.Result:
    """buildah, podman or skopeo, like docker.docker()."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    result = docker.Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{result.output}")
    return result


def image_config(image: str) -> dict:
    """The image's config as buildah stores it for its manifest type."""
    info = json.loads(run("buildah", "inspect", "--type", "image", image).stdout)
    manifest = json.loads(info["Manifest"])
    config = info["Docker" if "docker" in manifest["mediaType"] else "OCIv1"]["config"]
    return {"mediaType": manifest["mediaType"], **config}


@pytest.fixture(scope="module")
def images() -> Iterator[list[str]]:
    """Names in buildah's storage (shared with other users of this host) that
    the tests made; removed, newest first, at the end. A failed build leaves
    its working container behind: those of these images go first."""
    made: list[str] = []
    yield made
    containers = json.loads(run("buildah", "containers", "--json", check=False).stdout or "[]")
    for container in containers or []:
        if container["imagename"] in made:
            run("buildah", "rm", container["id"], check=False)
    for name in reversed(made):
        run("buildah", "rmi", name, check=False)


@pytest.fixture(scope="module")
def parent(parent_image: str, images: list[str]) -> Iterator[str]:
    """The parent as a buildah user takes it from Docker (docker-daemon:), in
    Docker format; under a name of its own, so that removing buildah's copy of
    it (docker.io/NAME) cannot take one another user pulled."""
    name = f"{docker.unique('aiohttp-parent-test/buildah-parent')}:latest"
    docker.docker("tag", parent_image, name)
    images.append(f"docker.io/{name}")
    yield f"docker-daemon:{name}"
    docker.docker("rmi", name, check=False)


@pytest.fixture(scope="module")
def oci_child(
    parent: str, images: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[str, docker.Result]]:
    """examples/hello, built with --format docker FROM the same parent stored in
    OCI format, which has no field for ONBUILD: `oci-layout` (skopeo copy to an
    oci: directory) or `containers-storage` (skopeo copy --format oci into
    buildah's storage). Built once for each."""
    built: dict[str, tuple[str, docker.Result]] = {}

    def get(where: str) -> tuple[str, docker.Result]:
        if where not in built:
            if where == "oci-layout":
                ref = oci_layout(parent, images, tmp_path_factory.mktemp("oci-parent"))
            else:
                ref = f"localhost/{docker.unique('aiohttp-parent-test/oci-parent')}:latest"
                run("skopeo", "copy", "-q", "--format", "oci", parent, f"containers-storage:{ref}")
                images.append(ref)
            built[where] = build(ref, images, "docker")
        return built[where]

    return get


def oci_layout(source: str, images: list[str], directory: Path) -> str:
    """skopeo copy SOURCE to an oci: directory; what FROM names to use it."""
    ref = f"oci:{directory}:parent"
    run("skopeo", "copy", "-q", source, ref)
    # What buildah names its copy of an oci: image: localhost/ and the path.
    images.append(f"localhost/{str(directory).lstrip('/')}:latest")
    return ref


def build(
    parent_ref: str, images: list[str], fmt: str, dockerfile: Path | None = None
) -> tuple[str, docker.Result]:
    """examples/hello built by buildah as a user would, FROM parent_ref."""
    tag = f"localhost/{docker.unique('aiohttp-parent-test/buildah-hello')}:latest"
    args = ["buildah", "bud", "--format", fmt, "-t", tag]
    args += ["--build-arg", f"PARENT_IMAGE={parent_ref}"]
    if dockerfile is not None:
        args += ["-f", str(dockerfile)]
    result = run("nice", "-n", "10", *args, str(HELLO))
    images.append(tag)
    return tag, result


@pytest.fixture(scope="module")
def child(parent: str, images: list[str]) -> Callable[[str], tuple[str, docker.Result]]:
    """examples/hello from the Docker-format parent, in output format docker or
    oci; built once per format."""
    built: dict[str, tuple[str, docker.Result]] = {}

    def get(fmt: str) -> tuple[str, docker.Result]:
        if fmt not in built:
            built[fmt] = build(parent, images, fmt)
        return built[fmt]

    return get


def podman_run(image: str, *cmd: str, check: bool = True) -> docker.Result:
    return run("podman", "run", "--rm", *PODMAN_ULIMITS, image, *cmd, check=check, timeout=120)


def assert_served(image: str) -> None:
    """`podman run IMAGE serve`, published on 127.0.0.1, answers the example's page."""
    name = docker.unique("aiohttp-parent-test-podman")
    opts = ["--name", name, *PODMAN_ULIMITS, *PODMAN_LOW_PORTS, "--publish", "127.0.0.1::80"]
    run("podman", "run", "--detach", *opts, image, "serve")
    try:
        port = int(run("podman", "port", name, "80/tcp").stdout.split(":")[-1])

        def running() -> bool:
            state = run("podman", "inspect", "--format", "{{.State.Running}}", name, check=False)
            return state.stdout.strip() == "true"

        up = docker.wait_for(lambda: not running() or http.answers(port), timeout=60)
        if not up or not running():
            logs = run("podman", "logs", name, check=False).output
            raise AssertionError(f"{image} did not serve under podman:\n{logs}")
        assert http.request(port, "/").text == "Hello from aiohttp-parent\n"
    finally:
        run("podman", "rm", "-f", "-t", "10", name, check=False)


# --- a Docker-format parent: the contract holds in both output formats ------------


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_docker_format_parent_runs_every_trigger(child, fmt: str) -> None:
    tag, result = child(fmt)
    for trigger in ("ARG DEV=0", "COPY . /app", "/usr/local/lib/aiohttp-parent/onbuild"):
        assert trigger in result.output
    assert "aiohttp-parent onbuild: done" in result.output
    # Run here, not handed on to the child's own children.
    assert not image_config(tag).get("OnBuild")


def test_docker_output_keeps_the_healthcheck(child) -> None:
    tag, _ = child("docker")
    config = image_config(tag)
    assert config["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert config["Healthcheck"]["Test"] == ["CMD", "/usr/local/lib/aiohttp-parent/healthcheck"]


def test_oci_output_warns_and_drops_the_healthcheck(child) -> None:
    tag, result = child("oci")
    assert "HEALTHCHECK is not supported for OCI image format" in result.output
    config = image_config(tag)
    assert config["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert "Healthcheck" not in config


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_child_records_its_onbuild_steps(child, fmt: str) -> None:
    tag, _ = child(fmt)
    result = podman_run(tag, "cat", MARKER)
    assert result.stdout == "The ONBUILD steps of aiohttp-parent ran in this image (DEV=0).\n"
    # The steps ran as root (USER root, the first trigger); the child runs as app (the last).
    assert podman_run(tag, "id", "-un").stdout == "app\n"


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_buildah_child_serves_under_podman(child, fmt: str) -> None:
    tag, _ = child(fmt)
    assert_served(tag)


# --- an OCI-format parent: the contract is lost, and `serve` says so ---------------


OCI_PARENTS = ["oci-layout", "containers-storage"]


@pytest.mark.parametrize("where", OCI_PARENTS)
def test_oci_format_parent_loses_every_trigger_without_a_word(oci_child, where: str) -> None:
    # The build succeeds (run() checks), in spite of --format docker for the child.
    tag, result = oci_child(where)
    assert "aiohttp-parent onbuild" not in result.output
    assert "COPY . /app" not in result.output
    assert "hello" not in podman_run(tag, "ls", "/app").stdout.split()  # no build context


@pytest.mark.parametrize("where", OCI_PARENTS)
def test_child_without_its_onbuild_steps_stops_at_once_saying_why(oci_child, where: str) -> None:
    tag, _ = oci_child(where)
    started = time.monotonic()
    result = podman_run(tag, "serve", check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 78, result.output
    assert elapsed < STOPS_WITHIN, result.output
    assert f"the parent's ONBUILD steps never ran in this image ({MARKER} is missing)" in (
        result.stderr
    )
    for fix in ("buildah bud --format docker", "docker-daemon:", '"Without ONBUILD"'):
        assert fix in result.stderr
    assert "Traceback" not in result.output
    assert "gunicorn" not in result.output  # nothing was started


def test_base_variant_child_serves_from_an_oci_format_parent(
    parent_image: str, images: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The -base tag has no triggers to lose: its child writes the steps itself."""
    base = f"{parent_image}-base"
    assert docker.image_exists(base), f"make image builds {base} next to {parent_image}"
    ref = oci_layout(f"docker-daemon:{base}", images, tmp_path_factory.mktemp("oci-base"))
    tag, _ = build(ref, images, "oci", dockerfile=ROOT / "examples/hello-base/Dockerfile")
    assert_served(tag)
