"""`make bench`: aiohttp-parent against the classic Dockerfile (bench/peer/),
measured side by side in one run: A/B alternating rounds, medians, ratios.

Writes bench/results/latest.md, latest.json and latest.png (or --out DIR).
--smoke runs one short round on an existing parent image (the test suite's
check that this harness still works); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
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
REALISTIC = ROOT / "bench/realistic"
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
    cold_rounds: int = 1
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


def build_project_parent(s: Settings) -> tuple[float, list[tuple[str, float]]]:
    """`packer build` of the ONBUILD variant, as `make image` runs it, with
    Ansible's profile_tasks on: (seconds, every task's (name, seconds))."""
    if not s.packer_vars:
        raise SystemExit("bench: no Packer variables given; run `make bench`")
    cmd = ["packer", "build", "-color=false", *s.packer_vars, "."]
    env = {
        **os.environ,
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
    }
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"bench: {shlex.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return time.monotonic() - start, ansible_task_times(result.stdout)


def ansible_task_times(output: str) -> list[tuple[str, float]]:
    """profile_tasks' closing summary: `role : task ---- 7.40s` lines, slowest first."""
    # Packer prefixes each line (`docker.parent: `); the summary follows the recap.
    summary = output.rsplit("PLAY RECAP", 1)[-1]
    line = re.compile(r"^\s*(?:[\w.-]+: )?(.+?) -{3,} (\d+\.\d+)s$", re.M)
    return [(name.strip(), float(seconds)) for name, seconds in line.findall(summary)]


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


def build_realistic(side: str, s: Settings, context: Path, no_cache: bool) -> float:
    """The realistic child, one Dockerfile for both sides (its PARENT_IMAGE)."""
    parent = s.project_parent if side == PROJECT else s.peer_parent
    tag = f"aiohttp-bench/realistic-{side}:latest"
    cache = ["--no-cache"] if no_cache else []
    cmd = [docker.DOCKER, "build", "-q", *cache, "--build-arg", f"PARENT_IMAGE={parent}"]
    return timed([*cmd, "-t", tag, str(context)], env=docker.ENV)


def realistic_builds(s: Settings, figs: dict[str, Figure], log: Callable[[str], None]) -> None:
    """Each round, per side: a build without cache, then the same context with
    one line of app code changed, built with the cache (what every commit pays)."""
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp) / "realistic"
        shutil.copytree(REALISTIC, context)
        app = context / "service/app.py"
        for n in range(s.build_rounds):
            for side in alternate(n):
                app.write_text(REALISTIC.joinpath("service/app.py").read_text())
                figs["realistic_cold"].samples[side].append(
                    build_realistic(side, s, context, no_cache=True)
                )
                app.write_text(app.read_text() + f"\nCOMMIT = {n}  # a code change\n")
                figs["realistic_rebuild"].samples[side].append(
                    build_realistic(side, s, context, no_cache=False)
                )
    log(
        f"realistic child: cold {figs['realistic_cold'].samples}, "
        f"code change {figs['realistic_rebuild'].samples}"
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


def memory_mib(name: str) -> list[dict]:
    """RSS and PSS (MiB) of each of the container's processes, read from the host."""
    processes = []
    for pid in container_pids(name):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        kib = dict(re.findall(r"^(Rss|Pss):\s+(\d+) kB", rollup, re.M))
        command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        processes.append(
            {"command": command[:80], "rss": int(kib["Rss"]) / 1024, "pss": int(kib["Pss"]) / 1024}
        )
    return processes


def lifecycle(image: str, side: str) -> dict:
    """docker run → first 200 through nginx; idle memory; docker stop."""
    start = time.monotonic()
    with running(image, side) as name:
        if not wait_served(name):
            raise SystemExit(f"bench: {image} did not serve:\n{docker.logs(name)}")
        startup = time.monotonic() - start
        time.sleep(3)  # idle: workers booted, nothing in flight
        processes = memory_mib(name)
        stop_start = time.monotonic()
        docker.docker("stop", name, timeout=60)
        stop = time.monotonic() - stop_start
        code = docker.state(name)["ExitCode"]
    return {
        "startup": startup,
        "rss": sum(p["rss"] for p in processes),
        "pss": sum(p["pss"] for p in processes),
        "processes": processes,
        "stop": stop,
        "exit": code,
    }


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


def log_cost(image: str, s: Settings) -> dict[str, float]:
    """The project with its access logs off, to explain the figures with them on
    (the cost of the log, Docker's log pipeline included): never a target."""
    out = {}
    with running(image, PROJECT, env={"NGINX_ACCESS_LOG_FORMAT": "off"}) as name:
        wait_served(name)
        netns_wrk(name, 80, "/", replace(s, wrk_seconds=1))
        out["rps_nginx"] = netns_wrk(name, 80, "/", s)
        out["rps_static"] = netns_wrk(name, 80, "/static/asset.txt", s)
    env = {"API_ONLY": "1", "GUNICORN_ACCESS_LOG": "0"}
    with running(image, PROJECT, env=env) as name:
        wait_served(name)
        netns_wrk(name, 80, "/", replace(s, wrk_seconds=1))
        out["rps_direct"] = netns_wrk(name, 80, "/", s)
    return out


def machine_state() -> dict:
    """Load and CPU use now, and containers not of this run: the report warns
    when the machine was not quiet (figures from a busy machine mislead)."""

    def cpu_times() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = cpu_times()
    time.sleep(1)
    idle1, total1 = cpu_times()
    busy = 100 * (1 - (idle1 - idle0) / max(1, total1 - total0))
    # Taken before and after the run, when none of the bench's own is running.
    others = docker.docker("ps", "--format", "{{.Names}}").stdout.split()
    return {
        "load": round(os.getloadavg()[0], 2),
        "busy_percent": round(busy, 1),
        "other_containers": others,
    }


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
    """Every figure and its target (issue 15's): project ÷ peer, medians."""
    return {
        "parent_size": Figure("Parent image size", "MB", "<= 0.85"),
        "child_size": Figure("Child image size", "MB", "<= 0.85"),
        "cold_build": Figure("Cold build (packer build / docker build --no-cache)", "s", "<= 2.5"),
        "child_build": Figure("Small child build (docker build --no-cache)", "s", "<= 1.0"),
        "realistic_rebuild": Figure("Realistic child, rebuild after a code change", "s", "<= 0.4"),
        "realistic_cold": Figure("Realistic child, build without cache", "s", "<= 1.0"),
        "startup": Figure("Start-up: docker run to first 200 through nginx", "s", "<= 0.6"),
        "rps_nginx": Figure("Throughput, / through nginx", "req/s", ">= 3.0"),
        "rps_static": Figure("Throughput, 50 KB static file", "req/s", ">= 1.2"),
        "rps_direct": Figure("Throughput, gunicorn direct (API-only)", "req/s", ">= 0.6"),
        "rss": Figure("Idle memory, sum of RSS", "MiB", "<= 1.0"),
        "pss": Figure("Idle memory, sum of PSS", "MiB", "<= 1.0"),
        "stop": Figure("docker stop time", "s", "<= 1.0"),
    }


def alternate(round_no: int) -> tuple[str, str]:
    return (PROJECT, PEER) if round_no % 2 == 0 else (PEER, PROJECT)


def run(s: Settings, base: str, log: Callable[[str], None]) -> dict:
    figs = figures()
    exits: dict[str, list[int]] = {PROJECT: [], PEER: []}
    processes: dict[str, list[dict]] = {}
    task_times: list[list[tuple[str, float]]] = []
    started = time.time()
    state_before = machine_state()
    log(f"machine: {state_before}")

    if s.cold_builds:
        for n in range(s.cold_rounds):
            for side in alternate(n):
                if side == PEER:
                    seconds = build_peer_parent(s, base, no_cache=True)
                else:
                    seconds, tasks = build_project_parent(s)
                    task_times.append(tasks)
                figs["cold_build"].samples[side].append(seconds)
            log(f"cold builds, round {n + 1}/{s.cold_rounds}: {figs['cold_build'].samples}")
    else:
        build_peer_parent(s, base, no_cache=False)
    parents = {PROJECT: s.project_parent, PEER: s.peer_parent}

    children: dict[str, str] = {}
    for n in range(s.build_rounds):
        for side in alternate(n):
            children[side], seconds = build_child(side, s)
            figs["child_build"].samples[side].append(seconds)
    log(f"child builds: {figs['child_build'].samples}")
    realistic_builds(s, figs, log)
    for side in (PROJECT, PEER):
        figs["parent_size"].samples[side].append(docker.inspect(parents[side])["Size"] / 1e6)
        figs["child_size"].samples[side].append(docker.inspect(children[side])["Size"] / 1e6)

    for n in range(s.rounds):
        for side in alternate(n):
            result = lifecycle(children[side], side)
            for key in ("startup", "rss", "pss", "stop"):
                figs[key].samples[side].append(result[key])
            exits[side].append(int(result["exit"]))
            processes[side] = result["processes"]  # the last round's, for the report
        log(f"lifecycle round {n + 1}/{s.rounds} done")

    without_log: dict[str, list[float]] = {}
    for n in range(max(1, s.rounds // 2)):
        for side in alternate(n):
            for key, value in throughput(children[side], side, s).items():
                figs[key].samples[side].append(value)
        for key, value in log_cost(children[PROJECT], s).items():
            without_log.setdefault(key, []).append(value)
        log(f"throughput round {n + 1} done")

    converge_seconds, changed, changed_tasks = second_converge(s.project_parent)
    log(f"second converge: {converge_seconds:.1f} s, changed={changed} {changed_tasks}")
    state_after = machine_state()
    log(f"machine: {state_after}")

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "duration_s": round(time.time() - started),
        "revision": git_revision(),
        "machine": machine(),
        "machine_state": {"before": state_before, "after": state_after},
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
        "access_log_off": {
            key: {"samples": values, "median": statistics.median(values)}
            for key, values in without_log.items()
        },
        "processes": processes,
        "ansible_tasks": _task_summary(task_times),
        "exit_codes": exits,
        "ansible_second_converge": {
            "seconds": converge_seconds,
            "changed": changed,
            "changed_tasks": changed_tasks,
        },
    }


def _task_summary(runs: list[list[tuple[str, float]]]) -> dict:
    """The cold builds' Ansible tasks: how many, their time, the slowest."""
    if not runs:
        return {}
    median_of = {}
    for name in {name for tasks in runs for name, _ in tasks}:
        median_of[name] = statistics.median(
            seconds for tasks in runs for task, seconds in tasks if task == name
        )
    slowest = sorted(median_of.items(), key=lambda item: -item[1])[:8]
    return {
        "tasks": statistics.median(len(tasks) for tasks in runs),
        "seconds": statistics.median(sum(seconds for _, seconds in tasks) for tasks in runs),
        "slowest": [{"task": name, "seconds": seconds} for name, seconds in slowest],
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
        s = Settings(6, 3, 8, 64, True, args.project_parent, cold_rounds=3)
        s.packer_vars = args.packer_vars

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
