"""Thin helpers over the docker CLI: real builds, real containers, no mocks."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DOCKER = os.environ.get("DOCKER", "docker")
# Every docker command but a BuildKit build runs with the classic builder's
# setting, so the client on PATH (no buildx here) never asks for BuildKit.
ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def docker(
    *args: str,
    check: bool = True,
    timeout: float = 600,
    input: str | None = None,
    client: str = DOCKER,
    env: dict[str, str] = ENV,
) -> Result:
    proc = subprocess.run(
        [client, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input,
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} failed ({proc.returncode}):\n{result.output}"
        )
    return result


def inspect(obj: str) -> dict:
    return json.loads(docker("inspect", obj).stdout)[0]


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


# BuildKit is what users build with (Docker's default since 23.0); "legacy" is
# the classic builder (DOCKER_BUILDKIT=0), which older hosts and CI still run.
Builder = Literal["buildkit", "legacy"]
BUILDERS: tuple[Builder, ...] = ("buildkit", "legacy")


@functools.cache
def buildkit_client() -> str | None:
    """A docker client that builds with BuildKit: the one on PATH if it has
    buildx, else Debian's 20.10 client, which drives the daemon's built-in
    BuildKit without buildx (the case on this machine); None if neither."""
    if docker("buildx", "version", check=False).returncode == 0:
        return DOCKER
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else None


def build(
    context: Path,
    tag: str,
    build_args: dict[str, str] | None = None,
    check: bool = True,
    dockerfile: Path | None = None,
    builder: Builder = "buildkit",
    secrets: dict[str, Path] | None = None,
    cache: bool = False,
) -> Result:
    """`docker build` of CONTEXT as TAG with BUILDER. Without CACHE every
    build runs its steps and prints them (read them with build_log): BuildKit
    keeps its cache after the images are removed, across test sessions.
    SECRETS ({id: file}) become `--secret id=ID,src=FILE`: BuildKit only."""
    args = ["build", "-t", tag] if cache else ["build", "--no-cache", "-t", tag]
    if dockerfile is not None:
        args += ["-f", str(dockerfile)]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    if builder == "legacy":
        assert not secrets, "build secrets need BuildKit"
        return docker(*args, "--force-rm", str(context), check=check)
    client = buildkit_client()
    assert client is not None, (
        "BuildKit needs a docker client with buildx, or Debian's docker.io 20.10 (/usr/bin/docker)"
    )
    # Plain progress prints every step's output, the onbuild lines included;
    # the default display hides it when the build succeeds.
    args.append("--progress=plain")
    for key, path in (secrets or {}).items():
        args += ["--secret", f"id={key},src={path}"]
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    return docker(*args, str(context), check=check, client=client, env=env)


# BuildKit's plain progress prefixes each line a step prints with the step
# number and the seconds since it started ("#8 0.205 "); the classic builder
# prints the line as it is.
_BUILDKIT_PREFIX = re.compile(r"^#\d+ \d+\.\d+(?: |$)", re.MULTILINE)


def build_log(result: Result) -> str:
    """A build's output with every line as its step printed it, whichever
    builder ran it."""
    return _BUILDKIT_PREFIX.sub("", result.output)


def run(image: str, *cmd: str, opts: Sequence[str] = (), check: bool = False) -> Result:
    return docker("run", "--rm", *opts, image, *cmd, check=check, timeout=120)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextmanager
def container(image: str, *cmd: str, opts: Sequence[str] = ()) -> Iterator[str]:
    """A detached container, removed (with its logs printed on failure) afterwards."""
    name = unique("aiohttp-parent-test")
    docker("run", "-d", "--name", name, *opts, image, *cmd)
    try:
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)


def wait_for(predicate: object, timeout: float = 30, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


def port(name: str, container_port: str) -> int:
    return int(docker("port", name, container_port).stdout.splitlines()[0].rsplit(":", 1)[1])


def logs(name: str) -> str:
    result = docker("logs", name, check=False)
    return result.stdout + result.stderr


def state(name: str) -> dict:
    return inspect(name)["State"]


def wait_exit(name: str, timeout: float) -> int | None:
    """The container's exit code once it has stopped, or None if still running."""
    if wait_for(lambda: not state(name)["Running"], timeout=timeout):
        return state(name)["ExitCode"]
    return None
