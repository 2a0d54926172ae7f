"""Session fixtures: the parent image (built by `make image`, which reuses it
while its inputs are unchanged) and builders for child images."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import testinfra
import trustme

from tests import docker

ROOT = Path(__file__).resolve().parent.parent

ChildBuilder = Callable[..., tuple[str, docker.Result]]

# The emulated arm64 tests belong to `make test-arm64`, which names its image;
# `make test` neither runs nor skips them.
collect_ignore = [] if os.environ.get("AIOHTTP_PARENT_ARM64_IMAGE") else ["test_arm64.py"]


def make_parent(version: str, keep_ca: bool, override: str) -> str:
    """aiohttp-parent:VERSION (and -base) from `make image`, which skips the
    build while the images are up to date with their inputs; $OVERRIDE names
    an existing image to use instead."""
    if tag := os.environ.get(override):
        return tag
    # make test's two halves each run pytest: one builds, the other then finds
    # the image up to date rather than building it again beside the first.
    lock = ROOT / ".cache/parent-image.lock"
    lock.parent.mkdir(exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        subprocess.run(
            [
                "make",
                "--no-print-directory",
                "image",
                f"IMAGE_VERSION={version}",
                "TAG_LATEST=false",
                f"CA_CERTIFICATES_KEEP={str(keep_ca).lower()}",
            ],
            cwd=ROOT,
            check=True,
        )
    return f"aiohttp-parent:{version}"


@pytest.fixture(scope="session")
def parent_image() -> str:
    """aiohttp-parent:test, built with this host's CA bundle kept (children pip
    install through this machine's TLS-intercepting proxy)."""
    return make_parent("test", keep_ca=True, override="AIOHTTP_PARENT_IMAGE")


@pytest.fixture(scope="session")
def parent_image_without_ca() -> str:
    """aiohttp-parent:test-noca (and -base): `make image`'s default, which keeps no
    extra CA. Its children reach PyPI through this machine's proxy only with the
    BUILD_CA_CERTIFICATES build arg, as a user's would. A second pair of Packer
    runs (about 6 min), paid only by the tests that use it."""
    return make_parent("test-noca", keep_ca=False, override="AIOHTTP_PARENT_IMAGE_NO_CA")


@pytest.fixture(scope="session")
def proxy_ca() -> str:
    """The PEM text of the extra CAs this host trusts (a TLS-intercepting proxy's)."""
    pems = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    if not pems:
        pytest.skip("this host trusts no extra CA: no TLS-intercepting proxy to build behind")
    return "".join(p.read_text() for p in pems)


@pytest.fixture(scope="session")
def parent_host(parent_image: str) -> Iterator[testinfra.host.Host]:
    """A running container of the parent image, for testinfra. As root: the
    image's own user cannot read everything there is to check (/root)."""
    with docker.container(parent_image, "sleep", "infinity", opts=["--user=0"]) as name:
        yield testinfra.get_host(f"docker://{name}")


def write_context(path: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        if name.endswith(".sh"):
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked both_builders build their children with BuildKit, then
    again with the classic builder; every other child is built with BuildKit."""
    if "builder" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_builders"
    ):
        metafunc.parametrize("builder", docker.BUILDERS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def builder(request: pytest.FixtureRequest) -> docker.Builder:
    """What builds child images: BuildKit, as for users (Docker's default
    since 23.0), or in tests marked both_builders each builder in turn."""
    return getattr(request, "param", "buildkit")


@pytest.fixture(scope="session")
def build_child(
    parent_image: str, builder: docker.Builder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildBuilder]:
    """Build a child image from {path: content}; a Dockerfile of just
    `FROM <parent>` is added unless the files bring their own."""
    yield from child_builder(parent_image, builder, tmp_path_factory)


@pytest.fixture(scope="session")
def build_child_without_ca(
    parent_image_without_ca: str,
    builder: docker.Builder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChildBuilder]:
    """build_child on the parent that keeps no extra CA."""
    yield from child_builder(parent_image_without_ca, builder, tmp_path_factory)


def child_builder(
    parent_image: str, builder: docker.Builder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildBuilder]:
    """The builder behind build_child: yields it, removes its images afterwards."""
    built: list[str] = []

    def build(
        files: dict[str, str | bytes],
        build_args: dict[str, str] | None = None,
        check: bool = True,
        name: str = "child",
        cache: bool = False,
    ) -> tuple[str, docker.Result]:
        context = tmp_path_factory.mktemp(name)
        write_context(context, {"Dockerfile": f"FROM {parent_image}\n", **files})
        tag = f"{docker.unique('aiohttp-parent-test/' + name)}:latest"
        result = docker.build(context, tag, build_args, check=check, builder=builder, cache=cache)
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


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_dir(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tls.crt and tls.key as a user would mount them at /etc/aiohttp-parent/tls."""
    path = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(path / "tls.key"))
    cert.cert_chain_pems[0].write_to_path(str(path / "tls.crt"))
    for f in path.iterdir():
        f.chmod(0o644)  # readable by an arbitrary --user too
    path.chmod(0o755)
    return path
