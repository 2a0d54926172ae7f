"""`serve`: nginx in front of gunicorn under supervisord, through real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import pytest

from tests import contract, docker, http
from tests.service import Service, processes, served, workers

ONE_WORKER = {"WEB_CONCURRENCY": "1"}  # the app's request counter is per worker


@pytest.fixture(scope="module")
def service(example_image: str):
    with served(example_image, env=ONE_WORKER) as svc:
        yield svc


def whoami(port: int, headers: dict[str, str] | None = None) -> dict:
    return json.loads(http.request(port, "/whoami", headers=headers).body)


def test_root_is_the_app_through_nginx(service: Service) -> None:
    resp = http.request(service.http, "/")
    assert resp.status == 200
    assert resp.text == "Hello from aiohttp-parent\n"
    assert resp.headers["server"] == "nginx"  # server_tokens off: no version


def test_static_files_are_served_by_nginx_not_the_app(service: Service) -> None:
    resp = http.request(service.http, "/static/hello.txt")
    assert resp.status == 200
    assert resp.text == "static file\n"
    assert resp.headers["cache-control"] == "max-age=3600"
    assert "/static/hello.txt" not in whoami(service.http)["seen"]


def test_static_text_is_gzipped(service: Service) -> None:
    resp = http.request(service.http, "/static/asset.txt", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert len(gzip.decompress(resp.body)) == 51200


def test_websocket_echo_through_nginx(service: Service) -> None:
    async def echo() -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{service.http}/ws") as ws,
        ):
            await ws.send_str("ping through nginx")
            return (await ws.receive(timeout=5)).data

    assert asyncio.run(echo()) == "ping through nginx"


def test_app_sees_client_address_and_scheme_from_nginx(service: Service) -> None:
    seen = whoami(service.http)
    assert seen["remote"] not in ("", None, "127.0.0.1")  # the client, as nginx saw it
    assert seen["scheme"] == "http"
    assert seen["host"] == f"127.0.0.1:{service.http}"


def test_app_reading_the_peername_gets_nginx_on_loopback(service: Service) -> None:
    """Code written for nginx in front over TCP (aiohttp's docs unpack the
    peername; aiohttp-remotes' XForwardedStrict checks it) reads nginx's
    loopback address, not the unix socket's empty one."""
    assert whoami(service.http)["peername"] == ["127.0.0.1", 0]


def test_spoofed_forwarded_for_is_not_trusted(service: Service) -> None:
    real = whoami(service.http)["remote"]
    spoofed = whoami(service.http, headers={"X-Forwarded-For": "203.0.113.9"})
    assert spoofed["remote"] == real


def test_app_runs_as_unprivileged_user_on_uvloop(service: Service) -> None:
    seen = whoami(service.http)
    assert seen["uid"] != 0
    assert seen["loop"].startswith("uvloop")
    assert seen["debug"] is False  # DEV=0


def test_nginx_workers_are_unprivileged(service: Service) -> None:
    uids = {p["uid"] for p in workers(service.name, "nginx")}
    assert uids
    assert 0 not in uids


def test_a_container_started_without_flags_runs_nothing_as_root(service: Service) -> None:
    # `docker run -p 80:80 IMAGE serve`: port 80 too, as the app user.
    procs = processes(service.name)
    assert {p["uid"] for p in procs} == {contract.CONTAINER_UID}, procs
    assert any(p["cmd"].startswith("nginx: master") for p in procs)
    # docker-bench-security 4.1 reads the container's configured user.
    assert docker.inspect(service.name)["Config"]["User"].split(":")[0] not in ("", "0", "root")


def test_health_status_becomes_healthy(example_image: str) -> None:
    with served(example_image, opts=["--health-interval=1s", "--health-start-period=1s"]) as svc:
        assert docker.wait_for(
            lambda: docker.state(svc.name)["Health"]["Status"] == "healthy", timeout=20
        )


# --- workers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "env", "expected"),
    [(["--cpus=1"], {}, 1), (["--cpus=1.5"], {}, 2), (["--cpus=1"], {"WEB_CONCURRENCY": "3"}, 3)],
    ids=["cpus-1", "cpus-1.5", "web-concurrency"],
)
def test_worker_count_follows_the_cpu_limit(example_image: str, opts, env, expected: int) -> None:
    with served(example_image, env=env, opts=opts) as svc:
        assert svc.runtime()["workers"] == expected
        assert docker.wait_for(lambda: len(workers(svc.name, "gunicorn")) == expected, timeout=10)


def test_nginx_workers_follow_the_cpu_limit(example_image: str) -> None:
    with served(example_image, opts=["--cpus=1"]) as svc:
        assert len(workers(svc.name, "nginx")) == 1


# --- faults (more in tests/reliability) ---


def test_crash_looping_program_stops_the_container(build_child) -> None:
    # Starts fine (past supervisord's startsecs), then the master dies: a crash
    # loop. (Not 3 or 4: gunicorn's own "the app cannot start" statuses.)
    # The master alone: fork() does not pass an alarm on (a thread started at
    # import would make gunicorn import the app in each worker instead).
    crashy = (
        "import os, signal\nfrom aiohttp import web\napp = web.Application()\n"
        "signal.signal(signal.SIGALRM, lambda *_: os._exit(7))\nsignal.alarm(2)\n"
    )
    tag, _ = build_child({"requirements.txt": "", "crashy.py": crashy}, name="crashloop")
    with docker.container(tag, "serve", opts=["--env=APP_MODULE=crashy:app"]) as name:
        assert docker.wait_exit(name, timeout=60) == 1
        assert "program 'gunicorn' exited unexpectedly 5 times in 60 s" in docker.logs(name)
