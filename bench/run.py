"""`make bench`: aiohttp-parent against the classic Dockerfile (bench/peer/),
measured side by side in one run: A/B alternating rounds, medians, ratios.

Writes bench/results/latest.md, latest.json and latest.png (or --out DIR).
--smoke runs one short round on an existing parent image (the test suite's
check that this harness still works); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import ansible, docker, http  # noqa: E402  (the suite's plain helpers)
from tests.reliability.load import wrk  # noqa: E402
from tests.reliability.report import git_revision, machine  # noqa: E402

PROJECT, PEER = "project", "peer"
HELLO = ROOT / "examples/hello"
PEER_DIR = ROOT / "bench/peer"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass
class Figure:
    """One comparison: samples per side, and the target for project ÷ peer."""

    title: str
    unit: str
    target: str  # e.g. "<= 0.85"; empty: informational
    samples: dict[str, list[float]] = field(default_factory=lambda: {PROJECT: [], PEER: []})
    note: str = ""  # why a missed target is missed, and what would close it

    def median(self, side: str) -> float | None:
        values = self.samples[side]
        return statistics.median(values) if values else None

    @property
    def ratio(self) -> float | None:
        project, peer = self.median(PROJECT), self.median(PEER)
        if project is None or not peer:
            return None
        return project / peer

    @property
    def met(self) -> bool | None:
        if not self.target or self.ratio is None:
            return None
        op, bound = self.target.split()
        return self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)


@dataclass
class Settings:
    rounds: int
    build_rounds: int
    wrk_seconds: int
    wrk_connections: int
    cold_builds: bool
    project_parent: str
    packer_vars: list[str] = field(default_factory=list)
    peer_parent: str = "aiohttp-peer:bench"


# --- building -----------------------------------------------------------------------


def timed(cmd: list[str], **kwargs: object) -> float:
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise SystemExit(f"bench: {shlex.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return time.monotonic() - start


def pins() -> dict[str, str]:
    defaults = yaml.safe_load((ROOT / "roles/python_venv/defaults/main.yml").read_text())
    return {
        name: defaults[f"python_venv_{name}_version"] for name in ("aiohttp", "gunicorn", "uvloop")
    }


def build_project_parent(s: Settings) -> float:
    """`packer build` of the ONBUILD variant, as `make image` runs it."""
    if not s.packer_vars:
        raise SystemExit("bench: no Packer variables given; run `make bench`")
    return timed(["packer", "build", "-color=false", *s.packer_vars, "."], cwd=ROOT)


def build_peer_parent(s: Settings, base: str, no_cache: bool) -> float:
    with tempfile.TemporaryDirectory() as context:
        shutil.copytree(PEER_DIR, context, dirs_exist_ok=True)
        shutil.copy(CA_BUNDLE, Path(context) / "build-ca.pem")
        args = [f"--build-arg=BASE={base}"] + [
            f"--build-arg={name.upper()}_VERSION={version}" for name, version in pins().items()
        ]
        cache = ["--no-cache"] if no_cache else []
        return timed(
            [docker.DOCKER, "build", "-q", *cache, *args, "-t", s.peer_parent, context],
            env=docker.ENV,
        )


def build_child(side: str, s: Settings) -> tuple[str, float]:
    tag = f"aiohttp-bench/hello-{side}:latest"
    if side == PROJECT:
        extra = ["--build-arg", f"PARENT_IMAGE={s.project_parent}"]
    else:
        extra = [
            "-f",
            str(PEER_DIR / "child.Dockerfile"),
            "--build-arg",
            f"PEER_IMAGE={s.peer_parent}",
        ]
    cmd = [docker.DOCKER, "build", "-q", "--no-cache", *extra, "-t", tag, str(HELLO)]
    return tag, timed(cmd, env=docker.ENV)


# --- running --------------------------------------------------------------------------


def serve_args(side: str) -> list[str]:
    return ["serve"] if side == PROJECT else []


def running(
    image: str, side: str, env: dict[str, str] | None = None
) -> AbstractContextManager[str]:
    """The side's child serving, port 80 published on 127.0.0.1; removed afterwards."""
    opts = ["-p", "127.0.0.1::80", *(f"--env={k}={v}" for k, v in (env or {}).items())]
    return docker.container(image, *serve_args(side), opts=opts)


def wait_served(name: str, timeout: float = 60) -> bool:
    port = docker.port(name, "80/tcp")

    def ok() -> bool:
        try:
            return http.request(port, "/", timeout=2).status == 200
        except OSError:
            return False

    return docker.wait_for(ok, timeout=timeout, interval=0.02)


def container_pids(name: str) -> list[int]:
    out = docker.docker("top", name, "-eo", "pid").stdout.split()[1:]
    return [int(pid) for pid in out]


def memory_mib(name: str) -> tuple[float, float]:
    """(sum of RSS, sum of PSS) of the container's processes, read from the host."""
    rss = pss = 0
    for pid in container_pids(name):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def lifecycle(image: str, side: str) -> dict[str, float]:
    """docker run → first 200 through nginx; idle memory; docker stop."""
    start = time.monotonic()
    with running(image, side) as name:
        if not wait_served(name):
            raise SystemExit(f"bench: {image} did not serve:\n{docker.logs(name)}")
        startup = time.monotonic() - start
        time.sleep(3)  # idle: workers booted, nothing in flight
        rss, pss = memory_mib(name)
        stop_start = time.monotonic()
        docker.docker("stop", name, timeout=60)
        stop = time.monotonic() - stop_start
        code = docker.state(name)["ExitCode"]
    return {"startup": startup, "rss": rss, "pss": pss, "stop": stop, "exit": code}


def netns_wrk(name: str, port: int, path: str, s: Settings) -> float:
    """wrk inside the container's network namespace (no docker-proxy in the way)."""
    pid = str(docker.state(name)["Pid"])
    result = wrk(
        port,
        path,
        connections=s.wrk_connections,
        seconds=s.wrk_seconds,
        prefix=["nsenter", "-t", pid, "-n"],
    )
    if result.socket_errors or result.non_2xx:
        print(
            f"bench: warning: {name} {path}: {result.socket_errors} socket errors, {result.non_2xx} non-2xx"
        )
    return result.requests_per_second


def throughput(image: str, side: str, s: Settings) -> dict[str, float]:
    out = {}
    with running(image, side) as name:
        wait_served(name)
        netns_wrk(name, 80, "/", replace(s, wrk_seconds=1))  # warm up
        out["rps_nginx"] = netns_wrk(name, 80, "/", s)
        out["rps_static"] = netns_wrk(name, 80, "/static/asset.txt", s)
        if side == PEER:  # gunicorn's own TCP port inside the container
            out["rps_direct"] = netns_wrk(name, 8000, "/", s)
    if side == PROJECT:  # gunicorn listens on a unix socket: API-only mode serves it on 80
        with running(image, side, env={"API_ONLY": "1"}) as name:
            wait_served(name)
            netns_wrk(name, 80, "/", replace(s, wrk_seconds=1))
            out["rps_direct"] = netns_wrk(name, 80, "/", s)
    return out


def second_converge(image: str) -> tuple[float, int, list[str]]:
    """playbooks/image.yml again over the built image: (seconds, changed tasks, their names)."""
    labels = docker.inspect(image)["Config"]["Labels"]
    extra = {
        # The image puts the venv first on PATH; Packer names the system Python too.
        "ansible_python_interpreter": "/usr/bin/python3",
        "python_venv_python_version": labels["aiohttp-parent.python.version"],
        "ca_certificates_files": [str(CA_BUNDLE)],
        "image_keep_ca_certificates": True,
    }
    # As root, as Packer's build container: the image's own user is not.
    opts = ["--entrypoint", "sleep", "--user", "0"]
    with docker.container(image, "infinity", opts=opts) as name:
        # As if the image were older than apt's cache_valid_time: nothing to
        # install means nothing to fetch, however old the image is.
        docker.docker("exec", name, "touch", "-d", "1 day ago", "/var/lib/apt/lists", check=True)
        start = time.monotonic()
        result = ansible.playbook(name, ROOT / "playbooks/image.yml", extra)
        elapsed = time.monotonic() - start
    recap = re.search(r"changed=(\d+)", result.stdout)
    if result.returncode != 0 or not recap:
        raise SystemExit(f"bench: second converge failed:\n{result.stdout}\n{result.stderr}")
    changed_tasks = [
        match[1]
        for match in re.finditer(
            r"^TASK \[(.+?)\].*?(?=^TASK \[|^PLAY RECAP|\Z)", result.stdout, re.M | re.S
        )
        if re.search(r"^changed:", match[0], re.M)
    ]
    return elapsed, int(recap.group(1)), changed_tasks


# --- the run -------------------------------------------------------------------------


def figures() -> dict[str, Figure]:
    return {
        "parent_size": Figure("Parent image size", "MB", "<= 0.85"),
        "child_size": Figure("Child image size", "MB", "<= 0.85"),
        "cold_build": Figure("Cold build (packer build / docker build --no-cache)", "s", "<= 1.5"),
        "child_build": Figure("Child build (docker build --no-cache)", "s", "<= 1.0"),
        "startup": Figure("Start-up: docker run to first 200 through nginx", "s", "<= 0.6"),
        "rps_nginx": Figure("Throughput, / through nginx", "req/s", ">= 2.5"),
        "rps_static": Figure("Throughput, 50 KB static file", "req/s", ">= 1.0"),
        "rps_direct": Figure("Throughput, gunicorn direct", "req/s", ""),
        "rss": Figure("Idle memory, sum of RSS", "MiB", "<= 1.0"),
        "pss": Figure("Idle memory, sum of PSS", "MiB", ""),
        "stop": Figure("docker stop time", "s", "<= 1.0"),
    }


def alternate(round_no: int) -> tuple[str, str]:
    return (PROJECT, PEER) if round_no % 2 == 0 else (PEER, PROJECT)


def run(s: Settings, base: str, log: Callable[[str], None]) -> dict:
    figs = figures()
    exits: dict[str, list[int]] = {PROJECT: [], PEER: []}
    started = time.time()

    if s.cold_builds:
        log("cold builds: peer (docker build --no-cache), then project (packer build)")
        figs["cold_build"].samples[PEER].append(build_peer_parent(s, base, no_cache=True))
        figs["cold_build"].samples[PROJECT].append(build_project_parent(s))
    else:
        build_peer_parent(s, base, no_cache=False)
    parents = {PROJECT: s.project_parent, PEER: s.peer_parent}

    children: dict[str, str] = {}
    for n in range(s.build_rounds):
        for side in alternate(n):
            children[side], seconds = build_child(side, s)
            figs["child_build"].samples[side].append(seconds)
    log(f"child builds: {figs['child_build'].samples}")
    for side in (PROJECT, PEER):
        figs["parent_size"].samples[side].append(docker.inspect(parents[side])["Size"] / 1e6)
        figs["child_size"].samples[side].append(docker.inspect(children[side])["Size"] / 1e6)

    for n in range(s.rounds):
        for side in alternate(n):
            result = lifecycle(children[side], side)
            for key in ("startup", "rss", "pss", "stop"):
                figs[key].samples[side].append(result[key])
            exits[side].append(int(result["exit"]))
        log(f"lifecycle round {n + 1}/{s.rounds} done")

    for n in range(max(1, s.rounds // 2)):
        for side in alternate(n):
            for key, value in throughput(children[side], side, s).items():
                figs[key].samples[side].append(value)
        log(f"throughput round {n + 1} done")

    converge_seconds, changed, changed_tasks = second_converge(s.project_parent)
    log(f"second converge: {converge_seconds:.1f} s, changed={changed} {changed_tasks}")

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "duration_s": round(time.time() - started),
        "revision": git_revision(),
        "machine": machine(),
        "settings": s.__dict__,
        "images": {PROJECT: s.project_parent, PEER: s.peer_parent, "base": base},
        "figures": {
            key: {
                "title": f.title,
                "unit": f.unit,
                "target": f.target,
                "samples": f.samples,
                "median": {side: f.median(side) for side in (PROJECT, PEER)},
                "ratio": f.ratio,
                "met": f.met,
            }
            for key, f in figs.items()
        },
        "nginx_vs_direct": _nginx_vs_direct(figs),
        "exit_codes": exits,
        "ansible_second_converge": {
            "seconds": converge_seconds,
            "changed": changed,
            "changed_tasks": changed_tasks,
        },
    }


def _nginx_vs_direct(figs: dict[str, Figure]) -> dict:
    nginx, direct = figs["rps_nginx"].median(PROJECT), figs["rps_direct"].median(PROJECT)
    ratio = nginx / direct if nginx and direct else None
    return {"ratio": ratio, "target": ">= 0.6", "met": ratio is not None and ratio >= 0.6}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short round, no cold builds")
    parser.add_argument("--project-parent", default="aiohttp-parent:bench")
    parser.add_argument("--base", default="local/debian:trixie")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    parser.add_argument("packer_vars", nargs="*", help="after --: `make image`'s -var flags")
    args = parser.parse_args(argv)
    if args.smoke:
        s = Settings(1, 1, 1, 16, False, args.project_parent)
    else:
        s = Settings(6, 3, 8, 64, True, args.project_parent, args.packer_vars)

    from bench import report

    def log(message: str) -> None:
        print(f"bench: {message}", flush=True)

    results = run(s, args.base, log)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write(results, args.out, smoke=args.smoke)
    log(f"wrote {args.out}/latest.md, latest.json, latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
