"""Publishing to a registry (README.rst, "Publishing to a registry").

`make push` publishes copies of the test parent to Debian's docker-registry
on 127.0.0.1 (plain HTTP: the daemon allows 127.0.0.0/8 without TLS); the
local tags are then removed, and a child of examples/hello is built FROM the
registry's image with each builder and served.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests import docker, http, service

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.0.0-push"
PATH = "ci"  # the REGISTRY's path: images go to HOST:PORT/ci/NAME
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ARCHES = ("amd64", "arm64")
ONBUILD_DONE = "aiohttp-parent onbuild: done"

pytestmark = pytest.mark.slow


def make_push(*variables: str) -> docker.Result:
    proc = subprocess.run(
        ["make", "--no-print-directory", "push", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return docker.Result(proc.returncode, proc.stdout, proc.stderr)


def push_both_variants(registry: Registry, name: str, *variables: str) -> docker.Result:
    """make push of NAME:VERSION, :latest and their -base tags to the test's path."""
    return make_push(
        f"REGISTRY={registry.host}/{PATH}",
        f"IMAGE_NAME={name}",
        f"IMAGE_VERSION={VERSION}",
        "TAG_LATEST=true",
        *variables,
    )


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT

    def get(self, path: str, accept: str | None = None) -> dict:
        request = urllib.request.Request(
            f"http://{self.host}/v2/{path}", headers={"Accept": accept} if accept else {}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def repositories(self) -> list[str]:
        return self.get("_catalog")["repositories"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """`docker-registry serve` on a free port of 127.0.0.1, storing in a tmp dir."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is missing: make host (or apt-get install docker-registry)"
    root = tmp_path_factory.mktemp("registry")
    port = http.free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    (root / "config.yml").write_text(yaml.safe_dump(config))
    log = root / "registry.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        up = docker.wait_for(
            lambda: proc.poll() is not None or http.answers(port, "/v2/"), timeout=15
        )
        if not up or proc.poll() is not None:
            raise AssertionError(f"docker-registry did not start:\n{log.read_text()}")
        yield Registry(f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Pushed:
    registry: Registry
    name: str  # IMAGE_NAME
    images: dict[str, str]  # tag -> the local image it was copied from

    @property
    def repository(self) -> str:
        return f"{self.registry.host}/{PATH}/{self.name}"


def copies(name: str, tags: dict[str, str]) -> list[str]:
    """Tag each image as NAME:TAG ({TAG: image}); the new names."""
    refs = []
    for tag, image in tags.items():
        docker.docker("tag", image, f"{name}:{tag}")
        refs.append(f"{name}:{tag}")
    return refs


@pytest.fixture(scope="module")
def pushed(parent_image: str, registry: Registry) -> Iterator[Pushed]:
    """`make push` of copies of the test parent (both tags of both variants),
    under a name of this test's; afterwards no local tag of it is left, so the
    builds below can only find it in the registry."""
    name = docker.unique("aiohttp-parent-test-push")
    base = f"{parent_image}-base"
    images = {VERSION: parent_image, "latest": parent_image}
    images |= {f"{VERSION}-base": base, "latest-base": base}
    local = copies(name, images)
    published = Pushed(registry, name, images)
    remote = [f"{published.repository}:{tag}" for tag in images]
    try:
        result = push_both_variants(registry, name)
        assert result.returncode == 0, result.output
    finally:
        # Each is another tag of an image that keeps its own: rmi only untags.
        docker.docker("rmi", *local, *remote, check=False)
    yield published
    docker.docker("rmi", *remote, check=False)  # what a build pulled


def test_push_publishes_both_tags_of_the_parent_and_of_base(pushed: Pushed) -> None:
    tags = pushed.registry.get(f"{PATH}/{pushed.name}/tags/list")["tags"]
    assert sorted(tags) == sorted(pushed.images)


@pytest.mark.parametrize("tag", [VERSION, "latest", f"{VERSION}-base", "latest-base"])
def test_pushed_tag_is_the_local_image(pushed: Pushed, tag: str) -> None:
    """The registry serves the very image config (labels, HEALTHCHECK, ONBUILD):
    its digest is the local image's ID."""
    manifest = pushed.registry.get(f"{PATH}/{pushed.name}/manifests/{tag}", accept=MANIFEST_V2)
    assert manifest["config"]["digest"] == docker.inspect(pushed.images[tag])["Id"]


# --- make push refuses, and pushes nothing -------------------------------------


@pytest.fixture(scope="module")
def other_onbuild_image(
    parent_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An image labelled as the ONBUILD variant that is not the parent (another build)."""
    context = tmp_path_factory.mktemp("other")
    (context / "Dockerfile").write_text(
        f"FROM {parent_image}-base\nLABEL aiohttp-parent.variant=onbuild\n"
    )
    tag = f"{docker.unique('aiohttp-parent-test/other')}:latest"
    docker.build(context, tag)
    yield tag
    docker.docker("rmi", tag, check=False)
    shutil.rmtree(context, ignore_errors=True)


REFUSALS: dict[str, tuple[Callable[[str, str], dict[str, str]], str]] = {
    # scenario: (the tags made locally from (parent, other build), what make says)
    "missing-images": (lambda parent, other: {VERSION: parent}, "does not exist"),
    "latest-is-another-build": (
        lambda parent, other: {
            VERSION: parent,
            "latest": other,
            f"{VERSION}-base": f"{parent}-base",
            "latest-base": f"{parent}-base",
        },
        "is another image than",
    ),
    "base-tag-on-the-onbuild-image": (
        lambda parent, other: {
            VERSION: parent,
            "latest": parent,
            f"{VERSION}-base": parent,
            "latest-base": parent,
        },
        "is not the base image",
    ),
}


@pytest.mark.parametrize("scenario", REFUSALS)
def test_push_refuses_images_that_are_not_what_make_image_tagged(
    scenario: str, parent_image: str, other_onbuild_image: str, registry: Registry
) -> None:
    tags, message = REFUSALS[scenario]
    name = docker.unique("aiohttp-parent-test-refused")
    local = copies(name, tags(parent_image, other_onbuild_image))
    try:
        result = push_both_variants(registry, name)
    finally:
        docker.docker("rmi", *local, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "nothing pushed" in result.stderr
    assert f"{PATH}/{name}" not in registry.repositories()


@pytest.mark.parametrize(
    ("registry_value", "message"),
    [
        ("", "REGISTRY is not set"),
        ("team", "does not start with a registry host"),
        ("127.0.0.1:5000/Team/", "is not host[:port][/path]"),
    ],
)
def test_push_needs_a_registry(registry_value: str, message: str) -> None:
    result = make_push(f"REGISTRY={registry_value}")
    assert result.returncode != 0
    assert message in result.stderr


# --- several architectures: each plain tag a manifest list ---------------------

TAGS = (VERSION, "latest", f"{VERSION}-base", "latest-base")  # the plain tags


@pytest.fixture(scope="module")
def arm64_stand_ins(parent_image: str) -> Iterator[dict[str, str]]:
    """{plain tag: an arm64 image}: the test parent and its -base with arm64
    (variant v8) in their config, by scripts/image_arch.py (docker save, edit,
    docker load: a few seconds). Their layers are amd64 code: fit to be
    published and pulled, not run."""
    name = docker.unique("aiohttp-parent-test/arm64")
    images = {}
    for variant, source in (("onbuild", parent_image), ("base", f"{parent_image}-base")):
        images[variant] = f"{name}:{variant}"
        docker.docker("tag", source, images[variant])
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/image_arch.py"), images[variant], "arm64"],
            check=True,
            capture_output=True,
        )
    yield {tag: images["base" if tag.endswith("-base") else "onbuild"] for tag in TAGS}
    docker.docker("rmi", *images.values(), check=False)


def multiarch_tags(parent: str, arm64: dict[str, str]) -> dict[str, str]:
    """{tag: image}: what `make image` and `make image ARCH=arm64` tag, from
    the test parent (amd64) and the stand-ins ({plain tag: arm64 image})."""
    amd64 = {tag: f"{parent}-base" if tag.endswith("-base") else parent for tag in TAGS}
    return amd64 | {f"{tag}-arm64": image for tag, image in arm64.items()}


@dataclass
class MultiArch:
    registry: Registry
    name: str
    images: dict[str, str]  # local tag (plain: amd64, -arm64) -> the image it copies

    @property
    def repository(self) -> str:
        return f"{self.registry.host}/{PATH}/{self.name}"

    def local(self, tag: str, arch: str) -> str:
        """The local image published for the plain TAG and ARCH."""
        return self.images[tag if arch == "amd64" else f"{tag}-{arch}"]


@pytest.fixture(scope="module")
def multiarch(parent_image: str, arm64_stand_ins: dict[str, str], registry: Registry) -> MultiArch:
    """`make push ARCHES="amd64 arm64"` of copies of the test parent (the plain
    tags) and of the stand-ins (the -arm64 tags), both variants."""
    name = docker.unique("aiohttp-parent-test-multiarch")
    images = multiarch_tags(parent_image, arm64_stand_ins)
    local = copies(name, images)
    published = MultiArch(registry, name, images)
    remote = [f"{published.repository}:{tag}-{arch}" for tag in TAGS for arch in ARCHES]
    try:
        result = push_both_variants(registry, name, "ARCHES=amd64 arm64")
        assert result.returncode == 0, result.output
    finally:
        docker.docker("rmi", *local, *remote, check=False)
    return published


def test_multiarch_push_publishes_each_architecture_under_a_tag_of_its_own(
    multiarch: MultiArch,
) -> None:
    tags = multiarch.registry.get(f"{PATH}/{multiarch.name}/tags/list")["tags"]
    expected = [*TAGS, *(f"{tag}-{arch}" for tag in TAGS for arch in ARCHES)]
    assert sorted(tags) == sorted(expected)


@pytest.mark.parametrize("tag", TAGS)
def test_multiarch_tag_is_a_manifest_list_of_amd64_and_arm64(
    multiarch: MultiArch, tag: str
) -> None:
    """Each entry names its platform and serves the very image config of that
    architecture's local image."""
    path = f"{PATH}/{multiarch.name}/manifests"
    index = multiarch.registry.get(f"{path}/{tag}", accept=f"{MANIFEST_LIST}, {OCI_INDEX}")
    assert index["mediaType"] == MANIFEST_LIST
    entries = {entry["platform"]["architecture"]: entry for entry in index["manifests"]}
    assert sorted(entries) == sorted(ARCHES)
    assert {entry["platform"]["os"] for entry in entries.values()} == {"linux"}
    for arch, entry in entries.items():
        manifest = multiarch.registry.get(f"{path}/{entry['digest']}", accept=MANIFEST_V2)
        local = docker.inspect(multiarch.local(tag, arch))["Id"]
        assert manifest["config"]["digest"] == local, arch


@pytest.mark.parametrize("arch", ARCHES)
def test_pull_of_a_multiarch_tag_takes_the_platform_asked_for(
    multiarch: MultiArch, arch: str
) -> None:
    """What FROM does on an amd64 or an arm64 host: docker pull --platform."""
    ref = f"{multiarch.repository}:{VERSION}"
    try:
        docker.docker("pull", "-q", "--platform", f"linux/{arch}", ref)
        pulled = docker.inspect(ref)
    finally:
        docker.docker("rmi", ref, check=False)
    assert pulled["Architecture"] == arch
    assert pulled["Id"] == docker.inspect(multiarch.local(VERSION, arch))["Id"]


MULTIARCH_REFUSALS: dict[str, tuple[Callable[[dict[str, str], str], dict[str, str]], str]] = {
    # scenario: (the local tags from (every tag make image gives, parent), what make says)
    "an-arm64-image-missing": (
        lambda tags, parent: {tag: tags[tag] for tag in tags if tag != "latest-base-arm64"},
        "latest-base-arm64 does not exist",
    ),
    "an-amd64-image-tagged-arm64": (
        lambda tags, parent: tags | {f"{VERSION}-arm64": parent},
        f"{VERSION}-arm64 is built for amd64, not arm64",
    ),
}


@pytest.mark.parametrize("scenario", MULTIARCH_REFUSALS)
def test_multiarch_push_refuses_an_image_not_of_its_architecture(
    scenario: str, parent_image: str, arm64_stand_ins: dict[str, str], registry: Registry
) -> None:
    tags, message = MULTIARCH_REFUSALS[scenario]
    name = docker.unique("aiohttp-parent-test-refused")
    local = copies(name, tags(multiarch_tags(parent_image, arm64_stand_ins), parent_image))
    try:
        result = push_both_variants(registry, name, "ARCHES=amd64 arm64")
    finally:
        docker.docker("rmi", *local, check=False)
    assert result.returncode != 0
    assert f"{name}:{message}" in result.stderr
    assert "nothing pushed" in result.stderr
    assert f"{PATH}/{name}" not in registry.repositories()


# --- children FROM the registry, with each builder -----------------------------


@dataclass
class Child:
    tag: str  # in the Docker daemon, whichever builder made it
    output: str  # the builder's log


def child_context(path: Path, parent: str) -> Path:
    """examples/hello, FROM the registry's parent."""
    context = path / "hello"
    shutil.copytree(ROOT / "examples/hello", context)
    (context / "Dockerfile").write_text(f"FROM {parent}\nENV APP_MODULE=hello.app:create_app\n")
    return context


def build_legacy(context: Path, tag: str, storage: Path) -> str:
    return docker.build_log(docker.build(context, tag, builder="legacy"))  # pulls the missing FROM


def build_buildkit(context: Path, tag: str, storage: Path) -> str:
    return docker.build_log(docker.build(context, tag, builder="buildkit"))


def build_buildah(context: Path, tag: str, storage: Path) -> str:
    """buildah bud in Docker format (OCI drops ONBUILD) with storage of its own,
    then the image into the Docker daemon, to be served like the others."""
    buildah = shutil.which("buildah")
    assert buildah, "buildah is missing: make host (or apt-get install buildah)"
    store = [buildah, f"--root={storage}/root", f"--runroot={storage}/run"]
    local = f"localhost/{tag}"

    def run(*args: str) -> str:
        proc = subprocess.run(
            ["nice", "-n", "10", *store, *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"buildah {args[0]} failed:\n{output}"
        return output

    try:
        output = run("bud", "--format=docker", "--tls-verify=false", "-t", local, str(context))
        run("push", local, f"docker-daemon:{tag}")
        return output
    finally:
        subprocess.run([*store, "rmi", "--all", "--force"], capture_output=True, check=False)
        shutil.rmtree(storage, ignore_errors=True)


BUILDERS = {"legacy": build_legacy, "buildkit": build_buildkit, "buildah": build_buildah}

# What each builder prints when it fetches the FROM image from a registry.
PULLED = {
    "legacy": "Pulling from {path}",
    "buildkit": "resolve {repository}:{version}@sha256:",
    "buildah": "Trying to pull {repository}:{version}",
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def child(
    request: pytest.FixtureRequest, pushed: Pushed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Child]]:
    builder = request.param
    tmp = tmp_path_factory.mktemp(builder)
    parent = f"{pushed.repository}:{VERSION}"
    tag = f"{docker.unique(f'aiohttp-parent-test/registry-{builder}')}:latest"
    docker.docker("rmi", parent, check=False)  # a previous build's pull: fetch it again
    try:
        output = BUILDERS[builder](child_context(tmp, parent), tag, tmp / "buildah")
        yield builder, Child(tag, output)
    finally:
        docker.docker("rmi", "-f", tag, check=False)
        docker.docker("rmi", parent, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def test_child_pulls_its_parent_from_the_registry(child: tuple[str, Child], pushed: Pushed) -> None:
    builder, built = child
    expected = PULLED[builder].format(
        path=f"{PATH}/{pushed.name}", repository=pushed.repository, version=VERSION
    )
    assert expected in built.output


def test_child_runs_the_onbuild_triggers(child: tuple[str, Child]) -> None:
    _, built = child
    assert ONBUILD_DONE in built.output


def test_child_keeps_the_parent_labels(child: tuple[str, Child], parent_image: str) -> None:
    _, built = child
    parent = docker.inspect(parent_image)["Config"]["Labels"]
    labels = docker.inspect(built.tag)["Config"]["Labels"]
    assert {key: labels.get(key) for key in parent} == parent


def test_child_keeps_the_parent_healthcheck(child: tuple[str, Child], parent_image: str) -> None:
    _, built = child
    parent = docker.inspect(parent_image)["Config"]["Healthcheck"]
    assert parent
    assert docker.inspect(built.tag)["Config"]["Healthcheck"] == parent


def test_child_serves_its_app(child: tuple[str, Child]) -> None:
    _, built = child
    with service.served(built.tag) as svc:
        assert http.request(svc.http).text == "Hello from aiohttp-parent\n"
