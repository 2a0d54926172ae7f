"""examples/swarm/stack.yaml on a real orchestrator: a single-node Docker Swarm
that these tests create and always leave. Under steady client load through the
stack's load balancer, a rolling update, an update to a release that cannot
start (Swarm rolls it back by itself) and scaling 3 -> 6 -> 3 must not fail a
request. What they measure is printed and written to examples/swarm/results.json."""

from __future__ import annotations

import http.client
import json
import os
import platform
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import docker
from tests.http import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = ROOT / "examples/swarm/stack.yaml"
RESULTS_FILE = ROOT / "examples/swarm/results.json"
REPLICAS = 3  # the stack file's deploy.replicas
# Marks the node of a swarm these tests created: "<host>:<pid>" of the run.
SWARM_LABEL = "aiohttp-parent.test-swarm"
# What each release answers in /whoami's "version" (HELLO_VERSION), and what
# else its image sets: "broken" names a module that does not exist, so gunicorn
# cannot load the app and the container exits 1 within seconds.
RELEASES = {
    "v1": "HELLO_VERSION=v1",
    "v2": "HELLO_VERSION=v2",
    "broken": "HELLO_VERSION=broken APP_MODULE=hello.missing:create_app",
}
# Bounds of every wait, in seconds.
DEPLOY_TIMEOUT = 90
UPDATE_TIMEOUT = 150
SCALE_TIMEOUT = 90
REMOVE_TIMEOUT = 60
RESULTS: dict[str, object] = {}


def run_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5
) -> float:
    """Poll PREDICATE until it is true; the seconds it took. Fails naming WHAT."""
    start = time.monotonic()
    if not docker.wait_for(predicate, timeout=timeout, interval=interval):
        raise AssertionError(f"not within {timeout:.0f} s: {what}")
    return time.monotonic() - start


# --- the swarm -----------------------------------------------------------------


def swarm_state() -> str:
    return docker.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def swarm_owner() -> str:
    """The label by which a run of these tests marked this node, or ""."""
    result = docker.docker(
        "node",
        "inspect",
        "self",
        "--format",
        f'{{{{index .Spec.Labels "{SWARM_LABEL}"}}}}',
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def run_is_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's run, or not ours to judge: keep it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def network_exists(name: str) -> bool:
    return docker.docker("network", "inspect", name, check=False).returncode == 0


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """A single-node swarm on 127.0.0.1, left (`docker swarm leave --force`)
    afterwards whatever happens. A swarm this node is already in is left alone
    and the tests fail, unless an earlier run of them made it and is gone."""
    state = swarm_state()
    if state != "inactive":
        owner = swarm_owner()
        if not owner or run_is_alive(owner):
            pytest.fail(
                f"this Docker node is already in a swarm (state {state!r}) that these tests "
                "did not create, or that another run of them is using; they leave their "
                "swarm when they end, so they will not use it. Leave it yourself "
                "(docker swarm leave --force) if nothing needs it, or run them elsewhere."
            )
        docker.docker("swarm", "leave", "--force")  # left behind by a run that was killed
    had_gwbridge = network_exists("docker_gwbridge")
    docker.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        owner = f"{socket.gethostname()}:{os.getpid()}"
        node = docker.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        docker.docker("node", "update", "--label-add", f"{SWARM_LABEL}={owner}", node)
        yield
    finally:
        docker.docker("swarm", "leave", "--force", check=False)
        if not had_gwbridge:  # swarm init made it, leaving keeps it
            docker.docker("network", "rm", "docker_gwbridge", check=False)


# --- the releases and the stack -------------------------------------------------


@pytest.fixture(scope="module")
def releases(
    example_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Three releases of examples/hello: images FROM it that differ as a new
    build would (their configuration), tagged for the stack's HELLO_IMAGE."""
    tags: dict[str, str] = {}
    repo = docker.unique("aiohttp-parent-test/swarm-hello")
    try:
        for name, env in RELEASES.items():
            context = tmp_path_factory.mktemp(f"hello-{name}")
            (context / "Dockerfile").write_text(f"FROM {example_image}\nENV {env}\n")
            docker.build(context, f"{repo}:{name}", cache=True)
            tags[name] = f"{repo}:{name}"
        yield tags
    finally:
        if tags:
            docker.docker("rmi", "-f", *tags.values(), check=False)


@dataclass
class Stack:
    name: str
    port: int
    parent_image: str

    @property
    def service(self) -> str:
        return f"{self.name}_hello"

    def deploy(self, image: str) -> docker.Result:
        """`docker stack deploy` of the example with HELLO_IMAGE=IMAGE, as a
        user rolls out a release. It returns at once: Swarm updates the tasks."""
        env = {
            **docker.ENV,
            "HELLO_IMAGE": image,
            "PARENT_IMAGE": self.parent_image,
            "HELLO_PORT": str(self.port),
        }
        return docker.docker(
            "stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE), self.name, env=env
        )

    def inspect(self) -> dict:
        return json.loads(docker.docker("service", "inspect", self.service).stdout)[0]

    def image(self) -> str:
        return self.inspect()["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]

    def update_status(self) -> dict:
        return self.inspect().get("UpdateStatus") or {}

    def containers(self, service: str = "", healthy: bool = False) -> list[str]:
        """Ids (12 characters, the containers' hostnames) of the running
        containers of SERVICE (this stack's app by default)."""
        args = [
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.swarm.service.name={service or self.service}",
        ]
        if healthy:
            args += ["--filter", "health=healthy"]
        return docker.docker(*args).stdout.split()

    def tasks(self, desired: str = "running") -> list[dict[str, str]]:
        filters = ["--filter", f"desired-state={desired}", "--format", "{{json .}}"]
        out = docker.docker("service", "ps", self.service, "--no-trunc", *filters).stdout
        return [json.loads(line) for line in out.splitlines()]

    def wait_update(self, previous: dict, timeout: float = UPDATE_TIMEOUT) -> dict:
        """The update that follows PREVIOUS (an UpdateStatus), once it ended.
        Swarm writes it when the update starts, so an update status with the
        previous start time is the old one. Adds `seconds` (since this call)
        and, if it rolled back, `rollback_started` (seconds until then)."""
        start = time.monotonic()
        seen: dict[str, float] = {}

        def ended() -> bool:
            status = self.update_status()
            if not status or status.get("StartedAt") == previous.get("StartedAt"):
                return False
            seen.setdefault(status["State"], time.monotonic() - start)
            return status["State"] in {
                "completed",
                "paused",
                "rollback_completed",
                "rollback_paused",
            }

        run_until(ended, timeout, f"an update of {self.service} ends")
        status = self.update_status()
        status["seconds"] = seen[status["State"]]
        if "rollback_started" in seen:
            status["rollback_started"] = seen["rollback_started"]
        return status

    def converge(self, image: str) -> None:
        """Make sure the app runs IMAGE on REPLICAS healthy replicas (a test
        that failed before may have left it otherwise)."""
        if self.image() != image:
            previous = self.update_status()
            self.deploy(image)
            assert self.wait_update(previous)["State"] == "completed"
        if self.inspect()["Spec"]["Mode"]["Replicated"]["Replicas"] != REPLICAS:
            docker.docker("service", "scale", "--detach", f"{self.service}={REPLICAS}")
        run_until(
            lambda: len(self.containers()) == REPLICAS == len(self.containers(healthy=True)),
            DEPLOY_TIMEOUT,
            f"{REPLICAS} healthy replicas of {self.service}",
        )


@pytest.fixture(scope="module")
def stack(swarm: None, releases: dict[str, str], parent_image: str) -> Iterator[Stack]:
    """examples/swarm/stack.yaml with release v1, its load balancer on a free
    port; removed afterwards (its tasks and network gone before the swarm is left)."""
    # Host-mode ports are bound on every interface: the port must be free on all.
    st = Stack(docker.unique("apswarm"), free_port(""), parent_image)
    try:
        start = time.monotonic()
        st.deploy(releases["v1"])
        st.converge(releases["v1"])
        run_until(
            lambda: answer(st.port, "/whoami").status == 200,
            DEPLOY_TIMEOUT,
            "the load balancer answers",
        )
        RESULTS["deploy_seconds"] = round(time.monotonic() - start, 1)
        yield st
    finally:
        docker.docker("stack", "rm", st.name, check=False)
        label = f"label=com.docker.stack.namespace={st.name}"
        run_until(
            lambda: (
                not docker.docker("ps", "-aq", "--filter", label).stdout.strip()
                and not network_exists(f"{st.name}_app")
            ),
            REMOVE_TIMEOUT,
            f"stack {st.name}'s containers and network are removed",
        )


# --- load -----------------------------------------------------------------------


@dataclass
class Answer:
    at: float  # time.monotonic() when the answer (or the error) came
    status: int | None  # None: no complete response (refused, reset, timed out)
    version: str = ""
    hostname: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def answer(port: int, path: str, timeout: float = 10) -> Answer:
    """One GET on a new connection, closed after the answer (no keep-alive:
    every request goes through the load balancer's choice of a replica)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
    except OSError as exc:
        return Answer(time.monotonic(), None, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    result = Answer(time.monotonic(), resp.status)
    if result.ok:
        whoami = json.loads(body)
        result.version, result.hostname = whoami["version"], whoami["hostname"]
    else:
        result.error = " ".join(body[:120].decode(errors="replace").split())
    return result


@dataclass
class Load:
    """CLIENTS threads, each sending /whoami requests one after the other to
    the published port, PAUSE seconds apart, until stopped; at most
    MAX_REQUESTS requests and MAX_SECONDS in all."""

    port: int
    clients: int = 4
    pause: float = 0.01
    max_requests: int = 60_000
    max_seconds: float = 240
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        self.started = time.monotonic()

    def _client(self) -> None:
        deadline = self.started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            if len(self.answers) >= self.max_requests:
                return
            self.answers.append(answer(self.port, "/whoami"))
            self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.at >= moment]

    def failed(self) -> list[Answer]:
        return [a for a in list(self.answers) if not a.ok]

    def wait_answers(self, count: int, since: float, timeout: float = 30) -> None:
        run_until(lambda: len(self.since(since)) >= count, timeout, f"{count} answers", 0.05)

    def summary(self) -> dict[str, object]:
        failed = self.failed()
        return {
            "requests": len(self.answers),
            "failed": len(failed),
            "seconds": round(self.answers[-1].at - self.started, 1) if self.answers else 0,
            "first_failures": [
                f"+{a.at - self.started:.2f}s {a.status or ''} {a.error}".strip()
                for a in failed[:5]
            ],
        }


def check_load(load: Load, lasted: bool) -> None:
    """The load lasted the whole phase (LASTED: its clients were still
    running at the end) and every request got a 2xx."""
    assert lasted, f"the load stopped before the phase ended: {load.summary()}"
    assert len(load.answers) >= 200, load.summary()
    assert len(load.failed()) == 0, f"requests failed: {load.summary()}"


def record(phase: str, figures: dict[str, object], load: Load) -> None:
    RESULTS[phase] = {**figures, **load.summary()}
    print(f"\n{phase}: {json.dumps(RESULTS[phase])}")


@pytest.fixture(scope="module", autouse=True)
def results() -> Iterator[None]:
    """examples/swarm/results.json: what this run measured, for the README and
    the issue's notes."""
    start = time.monotonic()
    yield
    if not RESULTS:
        return
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    RESULTS_FILE.write_text(
        json.dumps(
            {
                **RESULTS,
                "module_seconds": round(time.monotonic() - start, 1),
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "revision": revision,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "docker": docker.docker(
                    "version", "--format", "{{.Server.Version}}"
                ).stdout.strip(),
            },
            indent=2,
        )
        + "\n"
    )


# --- the tests --------------------------------------------------------------------


def test_tasks_run_locked_down_as_the_stack_file_says(stack: Stack) -> None:
    # `docker stack deploy` drops what Swarm cannot do (the short tmpfs form
    # among them) without failing: check what reached the containers.
    for service in (stack.service, f"{stack.name}_lb"):
        (container, *_) = stack.containers(service)
        host = docker.inspect(container)["HostConfig"]
        config = docker.inspect(container)["Config"]
        mounts = {m["Target"]: m["Type"] for m in host.get("Mounts") or []}
        assert config["User"] == "10001:0", service
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"], service
        assert mounts.get("/tmp") == "tmpfs", service


def test_rolling_update_drops_no_request_and_switches_release(
    stack: Stack, releases: dict[str, str]
) -> None:
    stack.converge(releases["v1"])
    with Load(stack.port) as load:
        load.wait_answers(50, since=load.started)
        previous = stack.update_status()
        begun = time.monotonic()
        stack.deploy(releases["v2"])
        status = stack.wait_update(previous)
        done = time.monotonic()
        load.wait_answers(300, since=done)
        lasted = load.running
    served, after = [a for a in load.answers if a.at < begun], load.since(done)
    last_v1 = max((a.at for a in load.answers if a.version == "v1"), default=begun)
    record(
        "rolling_update",
        {
            "update_seconds": round(status["seconds"], 1),
            "last_v1_answer_after_seconds": round(last_v1 - begun, 1),
        },
        load,
    )
    check_load(load, lasted)
    assert status["State"] == "completed", status
    assert {a.version for a in served} == {"v1"}
    assert {a.version for a in after} == {"v2"}
    # The load balancer follows the new replicas and spreads over all of them.
    assert {a.hostname for a in after} == set(stack.containers())


def test_release_that_cannot_start_is_rolled_back_without_a_failed_request(
    stack: Stack, releases: dict[str, str]
) -> None:
    stack.converge(releases["v2"])
    with Load(stack.port) as load:
        load.wait_answers(50, since=load.started)
        previous = stack.update_status()
        result = stack.deploy(releases["broken"])
        status = stack.wait_update(previous)
        done = time.monotonic()
        load.wait_answers(300, since=done)
        lasted = load.running
    record(
        "rollback",
        {
            "deploy_exit_status": result.returncode,
            "rollback_started_after_seconds": round(status.get("rollback_started", -1), 1),
            "rollback_completed_after_seconds": round(status["seconds"], 1),
        },
        load,
    )
    check_load(load, lasted)
    # `docker stack deploy` (like `docker service update`) said nothing:
    # only the service's update status tells.
    assert status["State"] == "rollback_completed", status
    running = stack.tasks("running")
    assert [t["Image"] for t in running] == [releases["v2"]] * REPLICAS
    assert all(t["CurrentState"].startswith("Running") for t in running), running
    assert stack.image() == releases["v2"]
    # The broken release was tried, and failed as it should.
    tried = [t for t in stack.tasks("shutdown") if t["Image"] == releases["broken"]]
    assert any("non-zero exit" in t["Error"] for t in tried), tried
    assert {a.version for a in load.answers} == {"v2"}


def test_scaling_out_and_in_drops_no_request(stack: Stack, releases: dict[str, str]) -> None:
    stack.converge(releases["v2"])
    with Load(stack.port) as load:
        load.wait_answers(50, since=load.started)
        begun = time.monotonic()
        docker.docker("service", "scale", "--detach", f"{stack.service}=6")
        out = run_until(
            lambda: len(stack.containers(healthy=True)) == 6, SCALE_TIMEOUT, "6 healthy replicas"
        )
        six = set(stack.containers())
        # Every new replica gets requests within a few seconds (nginx's
        # resolver keeps an answer for 1 s).
        seen = run_until(
            lambda: {a.hostname for a in load.since(begun + out)} >= six,
            15,
            "the load balancer sends requests to all 6 replicas",
            0.1,
        )
        begun = time.monotonic()
        docker.docker("service", "scale", "--detach", f"{stack.service}={REPLICAS}")
        back = run_until(
            lambda: len(stack.containers()) == REPLICAS, SCALE_TIMEOUT, f"{REPLICAS} replicas"
        )
        done = time.monotonic()
        load.wait_answers(300, since=done)
        lasted = load.running
    record(
        "scaling",
        {
            "scale_out_seconds": round(out, 1),
            "all_six_answering_after_seconds": round(out + seen, 1),
            "scale_in_seconds": round(back, 1),
        },
        load,
    )
    check_load(load, lasted)
    assert {a.hostname for a in load.since(done)} == set(stack.containers())
