"""Session fixtures: the parent image (built once, reused while its inputs are
unchanged) and builders for child images from small contexts."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import testinfra

from tests import docker

ROOT = Path(__file__).resolve().parent.parent
# The files the parent image is built from; their digest is stored as a label.
IMAGE_INPUTS = ("Makefile", "packer.pkr.hcl", "ansible.cfg", "playbooks", "roles", "scripts")
DIGEST_LABEL = "aiohttp-parent.build.inputs"

ChildBuilder = Callable[..., tuple[str, docker.Result]]


def inputs_digest() -> str:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "--", *IMAGE_INPUTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    digest = hashlib.sha256()
    for name in sorted(listed):
        path = ROOT / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def parent_image() -> str:
    """aiohttp-parent:test, built with this host's CA bundle kept (children pip
    install through this machine's TLS-intercepting proxy)."""
    if tag := os.environ.get("AIOHTTP_PARENT_IMAGE"):
        return tag
    tag = "aiohttp-parent:test"
    digest = inputs_digest()
    if (
        docker.image_exists(tag)
        and docker.inspect(tag)["Config"]["Labels"].get(DIGEST_LABEL) == digest
    ):
        return tag
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            "image",
            "IMAGE_VERSION=test",
            "TAG_LATEST=false",
            "CA_CERTIFICATES_KEEP=true",
            f"BUILD_INPUTS_DIGEST={digest}",
        ],
        cwd=ROOT,
        check=True,
    )
    return tag


@pytest.fixture(scope="session")
def parent_host(parent_image: str) -> Iterator[testinfra.host.Host]:
    """A running container of the parent image, for testinfra."""
    with docker.container(parent_image, "sleep", "infinity") as name:
        yield testinfra.get_host(f"docker://{name}")


def write_context(path: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        if name.endswith(".sh"):
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture(scope="session")
def build_child(
    parent_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildBuilder]:
    """Build a child image from {path: content}; a Dockerfile of just
    `FROM <parent>` is added unless the files bring their own."""
    built: list[str] = []

    def build(
        files: dict[str, str],
        build_args: dict[str, str] | None = None,
        check: bool = True,
        name: str = "child",
    ) -> tuple[str, docker.Result]:
        context = tmp_path_factory.mktemp(name)
        write_context(context, {"Dockerfile": f"FROM {parent_image}\n", **files})
        tag = f"{docker.unique('aiohttp-parent-test/' + name)}:latest"
        result = docker.build(context, tag, build_args, check=check)
        if result.returncode == 0:
            built.append(tag)
        return tag, result

    yield build
    if built:
        docker.docker("rmi", "-f", *built, check=False)


@pytest.fixture(scope="session")
def example_image(parent_image: str) -> Iterator[str]:
    """examples/hello, built exactly as a user would (docker build in its folder)."""
    tag = f"{docker.unique('aiohttp-parent-test/hello')}:latest"
    docker.build(ROOT / "examples/hello", tag, {"PARENT_IMAGE": parent_image})
    yield tag
    docker.docker("rmi", "-f", tag, check=False)
