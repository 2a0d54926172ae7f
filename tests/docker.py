"""Thin helpers over the docker CLI: real builds, real containers, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DOCKER = os.environ.get("DOCKER", "docker")
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
    *args: str, check: bool = True, timeout: float = 600, input: str | None = None
) -> Result:
    proc = subprocess.run(
        [DOCKER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
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


def build(
    context: Path,
    tag: str,
    build_args: dict[str, str] | None = None,
    check: bool = True,
    dockerfile: Path | None = None,
) -> Result:
    args = ["build", "--force-rm", "-t", tag]
    if dockerfile is not None:
        args += ["-f", str(dockerfile)]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    return docker(*args, str(context), check=check)


# BuildKit here is the daemon's own, reached by Debian's 20.10 client (the
# client on PATH has no buildx); None when that client is missing.
BUILDKIT_DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else None


def buildkit_build(
    context: Path, tag: str, secrets: dict[str, Path], dockerfile: Path | None = None
) -> Result:
    """`docker build` with BuildKit and `--secret id=ID,src=FILE` for each secret."""
    assert BUILDKIT_DOCKER is not None, "BuildKit needs Debian's docker client, /usr/bin/docker"
    args = [BUILDKIT_DOCKER, "build", "--progress=plain", "-t", tag]
    if dockerfile is not None:
        args += ["-f", str(dockerfile)]
    for key, path in secrets.items():
        args += ["--secret", f"id={key},src={path}"]
    proc = subprocess.run(
        [*args, str(context)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"BuildKit build of {tag} failed:\n{result.output}")
    return result


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
