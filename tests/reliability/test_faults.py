"""Faults: stopping under load, killed processes, an app that fails, hangs, leaks
or cannot start."""

from __future__ import annotations

import json
import math
import re
import time

import pytest

from tests import docker, http
from tests.reliability.load import Load, recovery
from tests.service import Service, masters, processes, served, workers

STOP_TIMEOUT = 10  # docker stop's default before SIGKILL


def test_docker_stop_under_load(example_image: str, figure) -> None:
    """docker stop during load: 32 keep-alive clients on /, 8 on /slow?seconds=1
    Every request sent before the stop signal gets its 2xx response; the container
    exits 0 before docker stop's 10 s SIGKILL."""
    with served(example_image) as svc:
        paths = {"/": 32, "/slow?seconds=1": 8}
        with Load(svc.http, paths, seconds=30, timeout=15) as load:
            assert docker.wait_for(lambda: len(load.records) > 2000, timeout=20)
            signal_at = time.monotonic()
            docker.docker("stop", "-t", str(STOP_TIMEOUT), svc.name, timeout=60)
            stopped_at = time.monotonic()
            load.stop_after(0.5)
        records = list(load.records)
        code = docker.state(svc.name)["ExitCode"]
    before = [r for r in records if r.start < signal_at]
    failed = [r for r in before if not r.ok]
    slow_done = [r for r in before if r.ok and r.end > signal_at]
    figure(
        f"{len(before):,} requests sent before the signal, {len(failed)} failed; "
        f"{len(slow_done)} were still in flight at the signal and completed; "
        f"stop took {stopped_at - signal_at:.1f} s, exit code {code}"
    )
    assert not failed, failed[:5]
    assert code == 0
    assert stopped_at - signal_at < STOP_TIMEOUT  # else Docker SIGKILLed it (and code is 137)


@pytest.mark.parametrize("target", ["gunicorn master", "gunicorn worker", "nginx master"])
def test_kill_9_under_light_load(example_image: str, target: str, figure) -> None:
    """kill -9 under light load (4 keep-alive clients on /)
    Served again without restarting the container (goal: within 5 s), by one
    new master and its workers (no orphans left holding the port)."""
    program = target.split()[0]
    with served(example_image) as svc:
        if target == "gunicorn worker":
            victim = workers(svc.name, "gunicorn")[0]["pid"]
        else:
            (victim,) = masters(svc.name, program)
        with Load(svc.http, {"/": 4}, seconds=60, timeout=10) as load:
            assert docker.wait_for(lambda: len(load.records) > 200, timeout=20)
            killed_at = time.monotonic()
            svc.kill(victim)
            time.sleep(1)  # let the failures, if any, begin
            # Served is not enough: orphans of a killed master can keep
            # answering until the new master's start kills them. One new master
            # with its own workers, and then served again, still under load.
            healthy = docker.wait_for(
                lambda: (
                    len(masters(svc.name, program)) == 1
                    and masters(svc.name, program) != [victim]
                    and bool(workers(svc.name, program))
                ),
                timeout=30,
            )
            assert docker.wait_for(lambda: load.recovered_since(killed_at), timeout=30)
            load.stop_after(2)
        procs = processes(svc.name)
        running = docker.state(svc.name)["Running"]
        restarts = docker.inspect(svc.name)["RestartCount"]
    records = list(load.records)
    failed, seconds = recovery(records, killed_at)
    fails = [r.end for r in records if not r.ok]
    figure(
        f"served again {seconds:.2f} s after the kill; {failed} request(s) failed, "
        f"all within {max(fails) - min(fails):.2f} s (nginx answers 502 at once while "
        "nothing listens, so 4 clients retry fast)"
        if failed
        else "no request failed; the others kept serving"
    )
    assert not math.isnan(seconds)
    assert healthy, procs
    assert running
    assert restarts == 0


@pytest.fixture(scope="module")
def faulty(faulty_image: str):
    env = {
        "WEB_CONCURRENCY": "2",
        "GUNICORN_TIMEOUT": "3",
        "NGINX_PROXY_READ_TIMEOUT": "5",
    }
    with served(faulty_image, env=env) as svc:
        yield svc


def test_handler_that_raises_gets_500_and_the_service_stays_up(faulty, figure) -> None:
    """App raises on every request
    aiohttp answers 500 (its own error page, no traceback to the client); the
    container keeps serving."""
    responses = [http.request(faulty.http, "/fail") for _ in range(20)]
    statuses = {r.status for r in responses}
    figure(f"20 requests: status {sorted(statuses)}; / still 200")
    assert statuses == {500}
    assert all(b"Traceback" not in r.body for r in responses)
    assert http.request(faulty.http, "/").status == 200


def faulty_request(svc: Service, path: str) -> tuple[http.Response, float, set, set]:
    """GET path: (response, seconds, worker pids before, and once there are 2 again)."""

    def pids() -> set[int]:
        return {w["pid"] for w in workers(svc.name, "gunicorn")}

    before = pids()
    start = time.monotonic()
    response = http.request(svc.http, path, timeout=30)
    elapsed = time.monotonic() - start
    assert docker.wait_for(lambda: len(pids()) == 2, timeout=30)
    return response, elapsed, before, pids()


def test_worker_that_dies_mid_request_gets_502(faulty, figure) -> None:
    """App kills its worker mid-request (os._exit)
    nginx answers 502; gunicorn replaces the worker; the container keeps serving.
    (A reused upstream connection that closes within 1 s is replayed once, as
    for an idle close, so an instant crash may take a second worker along.)"""
    response, elapsed, before, after = faulty_request(faulty, "/die")
    figure(
        f"{response.status} after {elapsed * 1000:.0f} ms; {len(before - after)} worker(s) replaced"
    )
    assert response.status == 502
    assert after != before
    assert http.request(faulty.http, "/").status == 200


def test_blocked_event_loop_is_killed_by_gunicorn_timeout(faulty, figure) -> None:
    """App blocks its event loop (time.sleep) with GUNICORN_TIMEOUT=3
    gunicorn kills the worker after its timeout and starts another; nginx
    answers 502 (the connection closed, rather than its own 5 s read timeout
    running out: 504) and does not replay the request to block a second
    worker; the container keeps serving."""
    for _ in range(20):  # every nginx worker now holds reusable upstream connections
        http.request(faulty.http, "/")
    response, elapsed, before, after = faulty_request(faulty, "/block")
    logs = docker.logs(faulty.name)
    figure(
        f"{response.status} after {elapsed:.1f} s; {len(before - after)} worker replaced "
        "(WORKER TIMEOUT logged), not replayed"
    )
    assert response.status == 502
    assert len(before - after) == 1
    assert logs.count("WORKER TIMEOUT") == 1
    assert http.request(faulty.http, "/").status == 200


def test_hanging_request_gets_504_at_the_read_timeout(faulty, figure) -> None:
    """App awaits forever (the event loop stays free), NGINX_PROXY_READ_TIMEOUT=5
    nginx answers 504 after its read timeout; the worker is not killed (it is
    healthy) and keeps serving."""
    response, elapsed, before, after = faulty_request(faulty, "/hang")
    figure(f"{response.status} after {elapsed:.1f} s; workers unchanged")
    assert response.status == 504
    assert elapsed >= 5
    assert after == before
    assert http.request(faulty.http, "/").status == 200


def test_leaking_worker_is_recycled_by_max_requests(faulty_image: str, figure) -> None:
    """A worker leaking 4 MiB per request, GUNICORN_MAX_REQUESTS=10 (jitter 5), 5 req/s
    gunicorn replaces the worker after its 10-15 requests (aiohttp's worker checks
    the count once a second, so up to a second's worth more), bounding its memory;
    no request fails during the recycling."""
    env = {
        "WEB_CONCURRENCY": "1",
        "GUNICORN_MAX_REQUESTS": "10",
        "GUNICORN_MAX_REQUESTS_JITTER": "5",
    }
    rate = 5
    with served(faulty_image, env=env) as svc:
        results = []
        for _ in range(80):
            response = http.request(svc.http, "/leak")
            assert response.status == 200, response.body
            results.append(json.loads(response.body))
            time.sleep(1 / rate)
    pids = [r["pid"] for r in results]
    per_worker = [pids.count(pid) for pid in dict.fromkeys(pids)]
    peak = max(r["rss_kib"] for r in results) / 1024
    first = results[0]["rss_kib"] / 1024
    figure(
        f"80 requests served by {len(per_worker)} successive workers "
        f"({', '.join(map(str, per_worker))} requests each); worker RSS "
        f"{first:.0f} to {peak:.0f} MiB (without recycling: +320 MiB)"
    )
    bound = 15 + rate + 1
    assert len(per_worker) >= 80 // bound
    assert max(per_worker) <= bound
    assert peak - first < bound * 4 + 10


@pytest.mark.parametrize(
    ("module", "cause"),
    [
        ("broken:app", "RuntimeError: cannot reach the database at db:5432"),
        ("faulty:nosuchattribute", "AttributeError"),
        ("faulty_typo:create_app", "ModuleNotFoundError"),
    ],
    ids=["raises-at-import", "missing-attribute", "module-typo"],
)
def test_permanent_start_up_failure_exits_with_its_cause(
    faulty_image: str, module: str, cause: str, figure
) -> None:
    """The app cannot start (it raises at import, or APP_MODULE names nothing)
    The container exits non-zero within 30 s, the cause in its log, and does
    not restart the app forever."""
    opts = [f"--env=APP_MODULE={module}"]
    start = time.monotonic()
    with docker.container(faulty_image, "serve", opts=opts) as name:
        code = docker.wait_exit(name, timeout=30)
        elapsed = time.monotonic() - start
        logs = docker.logs(name)
    lines = [line for line in logs.splitlines() if cause.split(":")[0] in line]
    figure(f"exit {code} after {elapsed:.1f} s; log: {lines[0].strip() if lines else '?'}")
    assert code not in (None, 0), logs
    assert cause in logs
    assert re.search(r"aiohttp-parent: (error|stopped)", logs)
