"""Containers running `serve`: start one, wait until it answers, reach its ports."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tests import contract, docker, http

# The strictest plain-Docker run the image supports (see README, "Deploying").
LOCKED_DOWN = [
    "--user=12345:0",
    "--read-only",
    "--tmpfs=/run",
    "--tmpfs=/tmp",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
]

# The image's runtime state directory, as the contract defines it.
RUN_DIR = contract.CONTAINER_RUN_DIR


class Service:
    """A container running `serve`, with its published ports."""

    def __init__(self, name: str, http_port: int = 80, https_port: int = 443) -> None:
        self.name = name
        self.ports = (http_port, https_port)

    @property
    def http(self) -> int:
        return docker.port(self.name, f"{self.ports[0]}/tcp")

    @property
    def https(self) -> int:
        return docker.port(self.name, f"{self.ports[1]}/tcp")

    def exec(self, *cmd: str, check: bool = True) -> docker.Result:
        return docker.docker("exec", self.name, *cmd, check=check)

    def kill(self, pid: int, signal: str = "KILL") -> None:
        self.exec("sh", "-c", f"kill -{signal} {pid}")  # no procps in the image: the builtin

    def runtime(self) -> dict:
        return json.loads(self.exec("cat", f"{RUN_DIR}/runtime.json").stdout)


@contextmanager
def served(
    image: str,
    env: dict[str, str] | None = None,
    opts: Sequence[str] = (),
    ready: str = "/",
    ports: tuple[int, int] = (80, 443),
    timeout: float = 60,
) -> Iterator[Service]:
    """`docker run IMAGE serve`, published on 127.0.0.1, yielded once `ready`
    answers (within `timeout` seconds)."""
    args = ["-p", f"127.0.0.1::{ports[0]}", "-p", f"127.0.0.1::{ports[1]}", *opts]
    args += [f"--env={k}={v}" for k, v in (env or {}).items()]
    with docker.container(image, "serve", opts=args) as name:
        service = Service(name, *ports)
        up = docker.wait_for(
            lambda: not docker.state(name)["Running"] or http.answers(service.http, ready),
            timeout=timeout,
        )
        if not up or not docker.state(name)["Running"]:
            raise AssertionError(f"{image} did not start serving:\n{docker.logs(name)}")
        yield service


PS = """
import json, os
out = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        stat = open(f'/proc/{pid}/stat').read()
        cmd = open(f'/proc/{pid}/cmdline').read().replace('\\0', ' ').strip()
        uid = os.stat(f'/proc/{pid}').st_uid
    except OSError:
        continue
    out.append({'pid': int(pid), 'ppid': int(stat.rsplit(')', 1)[1].split()[1]), 'uid': uid, 'cmd': cmd})
print(json.dumps(out))
"""


def processes(name: str) -> list[dict]:
    """Every process in the container: pid, ppid, uid, cmd (no ps in the image)."""
    result = docker.docker("exec", name, "/usr/bin/python3", "-c", PS, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else []


def masters(name: str, program: str) -> list[int]:
    """PIDs of `program`'s master processes (children of supervisord, PID 1)."""
    return [p["pid"] for p in processes(name) if p["ppid"] == 1 and program in p["cmd"]]


def workers(name: str, program: str) -> list[dict]:
    roots = set(masters(name, program))
    return [p for p in processes(name) if p["ppid"] in roots]
