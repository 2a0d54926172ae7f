"""Child apps with the habits of published aiohttp code (tests/apps/): each
serves, or the container stops within seconds saying once what to change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import docker, http
from tests.service import LOCKED_DOWN, RUN_DIR, Service, processes

APPS = Path(__file__).resolve().parent / "apps"
# A failing start must end this fast: the stated deadline, generously.
FAILS_WITHIN = 10


def read_app(name: str) -> dict[str, str]:
    root = APPS / name
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def app_image(build_child) -> Callable[[str], str]:
    """The image of tests/apps/NAME, built once per module."""
    built: dict[str, str] = {}

    def image(name: str) -> str:
        if name not in built:
            built[name], _ = build_child(read_app(name), name=f"app-{name}")
        return built[name]

    return image


def start(image: str, env: dict[str, str], opts: list[str] = (), args: list[str] = ()) -> str:
    name = docker.unique("aiohttp-parent-test-app")
    docker.docker(
        "run", "-d", "--name", name, "-p", "127.0.0.1::80",
        *[f"--env={k}={v}" for k, v in env.items()], *opts, image, "serve", *args,
    )  # fmt: skip
    return name


def serve_from_start(image: str, env: dict[str, str], **kw: Any) -> tuple[Service, list[int], str]:
    """Start serving and poll / from the first moment: (service, every status
    seen until the first 200, the start-up log)."""
    return poll_until_served(start(image, env, **kw))


def poll_until_served(name: str) -> tuple[Service, list[int], str]:
    service = Service(name)
    port = service.http
    statuses: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and docker.state(name)["Running"]:
        with contextlib.suppress(OSError):  # nothing listens yet: nginx waits for the app
            statuses.append(http.request(port, "/", timeout=5).status)
        if statuses and statuses[-1] == 200:
            break
        time.sleep(0.05)
    return service, statuses, docker.logs(name)


def assert_clean_start(statuses: list[int], logs: str) -> None:
    assert statuses, logs
    assert statuses[-1] == 200, logs
    assert not {502, 504} & set(statuses), statuses
    noisy = [
        line
        for line in logs.splitlines()
        if re.search(r"\b(CRIT|ERROR|error|Traceback|Bad file descriptor)\b", line)
    ]
    assert not noisy, logs


def fail(image: str, env: dict[str, str], **kw: Any) -> tuple[int | None, float, str]:
    """Start a container that must stop: (exit status, seconds, log)."""
    began = time.monotonic()
    name = start(image, env, **kw)
    try:
        code = docker.wait_exit(name, timeout=60)
        return code, time.monotonic() - began, docker.logs(name)
    finally:
        docker.docker("rm", "-f", "-v", name, check=False)


@pytest.fixture
def cleanup():
    names: list[str] = []
    yield names
    for name in names:
        docker.docker("rm", "-f", "-v", name, check=False)


def served_text(app_image, app: str, env: dict[str, str], cleanup, **kw: Any) -> tuple[str, str]:
    svc, statuses, logs = serve_from_start(app_image(app), env, **kw)
    cleanup.append(svc.name)
    assert_clean_start(statuses, logs)
    return http.request(svc.http, "/").text, logs


# --- forms that serve ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "text"),
    [
        ("forms:app", "an application"),
        ("forms", "an application"),
        ("forms:create_app", "an async factory"),
        ("forms:make_app", "a sync factory"),
        ("forms:create_app()", "an async factory"),
        ('forms:configured("called", loud=True)', "CALLED"),
        ("forms:legacy", "a factory taking the loop"),
        ("heroku", "told port 80"),
    ],
    ids=[
        "application",
        "module-only",
        "async-factory",
        "sync-factory",
        "call",
        "call-args",
        "loop-argument",
        "port-from-environment",
    ],
)
def test_factory_forms_serve(app_image, cleanup, module: str, text: str) -> None:
    body, logs = served_text(app_image, "forms", {"APP_MODULE": module}, cleanup)
    assert body == f"{text}\n"
    assert logs.count("aiohttp-parent: serving") == 1


def test_session_made_at_import_works_in_every_worker(app_image, cleanup) -> None:
    """asyncio.get_event_loop() at import, in the master: each worker imports the
    app's modules again, so the session belongs to the loop that serves it."""
    svc, statuses, logs = serve_from_start(app_image("forms"), {"APP_MODULE": "importloop"})
    cleanup.append(svc.name)
    assert_clean_start(statuses, logs)
    bodies = {http.request(svc.http, "/").text for _ in range(10)}
    assert bodies == {"the session got pong\n"}
    assert logs.count("made an asyncio event loop (asyncio.get_event_loop() at import)") == 1


@pytest.mark.parametrize("limit", ["", "32m"], ids=["nginx-default", "raised"])
def test_app_taking_larger_bodies_than_nginx_is_warned(app_image, cleanup, limit) -> None:
    env = {"APP_MODULE": "forms:uploads"} | ({"NGINX_CLIENT_MAX_BODY_SIZE": limit} if limit else {})
    body, logs = served_text(app_image, "forms", env, cleanup)
    assert body == "uploads\n"
    warned = (
        "the app accepts request bodies up to 32 MiB (client_max_size), but nginx answers 413 "
        "to any above NGINX_CLIENT_MAX_BODY_SIZE=10m: raise it to match"
    )
    assert logs.count(warned if not limit else "but nginx answers 413") == (0 if limit else 1), logs


def test_thread_started_at_import_runs_in_the_worker_that_serves(app_image, cleanup) -> None:
    """Threads do not survive gunicorn's fork: a preloaded import's poller would
    run in the master alone, and the worker would serve a count frozen at the fork."""
    env = {"APP_MODULE": "importthread", "WEB_CONCURRENCY": "1"}
    svc, statuses, logs = serve_from_start(app_image("forms"), env)
    cleanup.append(svc.name)
    assert_clean_start(statuses, logs)
    first = int(http.request(svc.http, "/").text)
    time.sleep(0.5)
    assert int(http.request(svc.http, "/").text) > first
    warned = "started thread(s) refresher, which would run in gunicorn's master alone"
    assert logs.count(warned) == 1, logs


def test_directory_changed_at_import_is_kept(app_image, cleanup) -> None:
    body, _ = served_text(app_image, "forms", {"APP_MODULE": "elsewhere"}, cleanup)
    assert body == "read from the directory the import chose\n"


BODY_SIZE = 100_000


def upload_begun(port: int) -> socket.socket:
    """A POST /upload whose body has begun to arrive, and not ended."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        "POST /upload HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Content-Length: {BODY_SIZE}\r\nExpect: 100-continue\r\n\r\n"
    )
    sock.sendall(head.encode() + b"x" * 1000)
    return sock


@pytest.mark.parametrize("buffering", ["on", "off"])
def test_request_body_reaches_the_app_whole_or_as_it_arrives(
    app_image, cleanup, buffering: str
) -> None:
    """README, "Request bodies": buffered by nginx (its default) or streamed;
    either way nginx answers Expect: 100-continue itself."""
    env = {
        "APP_MODULE": "forms:streaming",
        "WEB_CONCURRENCY": "1",
        "NGINX_PROXY_REQUEST_BUFFERING": buffering,
    }
    svc, statuses, logs = serve_from_start(app_image("forms"), env)
    cleanup.append(svc.name)
    assert_clean_start(statuses, logs)

    def seen() -> list[dict[str, str | None]]:
        return json.loads(http.request(svc.http, "/seen").text)

    with upload_begun(svc.http) as sock:
        if buffering == "off":
            assert docker.wait_for(seen, timeout=10), "the app never saw the upload begin"
        else:
            time.sleep(1)
            assert seen() == [], "nginx passed the request on before its body was whole"
        sock.sendall(b"x" * (BODY_SIZE - 1000))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b" 200 OK\r\n" in answer, answer
    assert answer.endswith(f"\r\n\r\n{BODY_SIZE}\n".encode()), answer
    assert seen() == [{"expect": None}]


@pytest.mark.parametrize("raised", [False, True], ids=["nginx-default", "conf-d-raises-it"])
def test_header_limit_is_nginx_s_until_a_conf_d_file_raises_it(
    build_child, cleanup, raised: bool
) -> None:
    """README, "Request bodies": nginx's 8 KiB header line, whatever the app allows."""
    conf = "large_client_header_buffers 4 32k;\n"
    files = {**read_app("forms")}
    if raised:
        files["container/files/etc/nginx/conf.d/headers.conf"] = conf
    tag, _ = build_child(files, name="app-forms-headers")
    svc, statuses, logs = serve_from_start(tag, {"APP_MODULE": "forms:big_headers"})
    cleanup.append(svc.name)
    assert_clean_start(statuses, logs)
    cookie = "session=" + "a" * 16000
    answer = http.request(svc.http, "/cookie", headers={"Cookie": cookie})
    if raised:
        assert (answer.status, answer.text) == (200, f"{len(cookie)}\n")
    else:
        assert answer.status == 400
        assert "Request Header Or Cookie Too Large" in answer.text


def test_serving_is_said_only_once_the_app_answers(app_image, cleanup) -> None:
    _, logs = served_text(app_image, "forms", {"APP_MODULE": "forms:create_app"}, cleanup)
    assert "aiohttp-parent: starting forms:create_app" in logs
    assert logs.index("Booting worker") < logs.index("aiohttp-parent: serving forms:create_app")


@pytest.mark.parametrize(
    ("module", "text"),
    [("server", "Hello from run_app"), ("server_coro", "Hello from a coroutine")],
    ids=["application", "coroutine"],
)
def test_run_app_at_import_serves_with_a_warning(app_image, cleanup, module, text) -> None:
    svc, statuses, logs = serve_from_start(app_image("runapp"), {"APP_MODULE": module})
    cleanup.append(svc.name)
    assert statuses[-1] == 200, logs
    assert http.request(svc.http, "/").text == f"{text}\n"
    assert logs.count(f"warning: {module}, when it is imported, calls web.run_app()") == 1
    assert 'Guard that call with `if __name__ == "__main__":`' in logs


def test_main_that_runs_the_app_serves_with_a_warning(app_image, cleanup) -> None:
    body, logs = served_text(app_image, "forms", {"APP_MODULE": "forms:main"}, cleanup)
    assert body == "a main that runs the app\n"
    assert logs.count("warning: forms:main calls web.run_app()") == 1  # once, not per worker


@pytest.mark.parametrize(
    ("module", "killed"),
    [("forms:slow_shutdown", True), ("forms:create_app", False), ("forms:own_sigterm", False)],
    ids=["on-shutdown-too-slow", "clean-stop", "app-handles-sigterm"],
)
def test_stop_names_workers_killed_at_the_graceful_timeout(
    app_image, cleanup, module: str, killed: bool
) -> None:
    # aiohttp's worker notices a stop within a second: 3 s leave a clean stop time.
    env = {"APP_MODULE": module, "GUNICORN_GRACEFUL_TIMEOUT": "3", "WEB_CONCURRENCY": "1"}
    svc, statuses, logs = serve_from_start(app_image("forms"), env)
    cleanup.append(svc.name)
    assert statuses[-1] == 200, logs
    docker.docker("stop", "-t", "20", svc.name)
    logs = docker.logs(svc.name)
    assert docker.state(svc.name)["ExitCode"] == 0, logs
    said = re.findall(
        r"warning: gunicorn killed worker\(s\) \d+ \(SIGKILL\): still running (\S+)", logs
    )
    assert said == (["GUNICORN_GRACEFUL_TIMEOUT=3"] if killed else []), logs
    if module == "forms:own_sigterm":  # the app's handler ran, and so did the worker's stop
        assert "the app saw SIGTERM" in logs, logs
        assert "the app cleaned up" in logs, logs
        assert logs.count("warning: the app's own SIGTERM handler") == 1, logs


def test_other_images_gunicorn_files_are_said_to_be_unread(build_child, cleanup) -> None:
    """gunicorn's own gunicorn.conf.py, and what a team moving from the
    uvicorn-gunicorn images brings: gunicorn_conf.py, prestart.sh, MODULE_NAME."""
    files = {
        **read_app("forms"),
        "gunicorn.conf.py": "workers = 4\n",
        "gunicorn_conf.py": "workers = 4\n",
        "prestart.sh": "#!/bin/sh\necho migrating\n",
    }
    tag, _ = build_child(files, name="gunicornconf")
    code, _, logs = fail(tag, {"MODULE_NAME": "forms", "VARIABLE_NAME": "app"})
    assert code == 78, logs
    assert (
        "MODULE_NAME and VARIABLE_NAME are other images' settings: here, APP_MODULE=forms:app"
        in logs
    )
    svc, statuses, logs = serve_from_start(tag, {"APP_MODULE": "forms:app"})
    cleanup.append(svc.name)
    assert statuses[-1] == 200, logs
    assert logs.count("warning: /app/gunicorn.conf.py is not read") == 1, logs
    assert logs.count("warning: /app/gunicorn_conf.py is not read") == 1, logs
    assert logs.count("warning: /app/prestart.sh is not run") == 1, logs


def test_app_parsing_argv_sees_its_own_arguments_only(app_image, cleanup) -> None:
    # polls.py runs argparse at import: gunicorn's --config would make it exit.
    body, _ = served_text(app_image, "argv", {"APP_MODULE": "polls:init_func"}, cleanup)
    assert body == "hello\n"


def test_serve_arguments_are_the_apps_argv(app_image, cleanup) -> None:
    body, _ = served_text(
        app_image, "argv", {"APP_MODULE": "polls:init_func"}, cleanup, args=["--greeting", "hi"]
    )
    assert body == "hi\n"


# --- forms and apps that cannot serve ----------------------------------------------------

FAILURES = {
    "tuple": (
        "forms:with_address",
        "returned a tuple (Application, str, int), not an aiohttp.web.Application: "
        "return the Application alone",
    ),
    "none": ("forms:forgot_return", "returned None, not an aiohttp.web.Application"),
    "constant": ("forms:VERSION", "APP_MODULE='forms:VERSION' is a str, not one of"),
    "missing-attribute": (
        "forms:create_ap",
        "AttributeError: module 'forms' has no attribute 'create_ap'; it has app (an "
        "Application), create_app (an async function), make_app (a function)",
    ),
    "module-typo": ("froms:app", "ModuleNotFoundError: No module named 'froms'"),
    "file-not-module": (
        "forms.py:app",
        "No module named 'forms.py' (a module, not a file: forms:app)",
    ),
    "unknown-argument": (
        "forms:configured",
        "APP_MODULE='forms:configured' requires 1 argument(s) (name)",
    ),
    "database-refused": (
        "forms:database",
        "APP_MODULE='forms:database' failed to start: ConnectionRefusedError",
    ),
    "unset-environment-variable": (
        "forms:from_environment",
        "failed to start: KeyError: 'DATABASE_URL' (the environment variable DATABASE_URL is "
        "not set: docker run -e DATABASE_URL=..., or ENV)",
    ),
    "own-server": (
        "forms:own_server",
        "APP_MODULE='forms:own_server' starts a server of its own (http://0.0.0.0:8080) when "
        "it is called: the image runs the server",
    ),
    "own-server-at-import": (
        "selfserving",
        "APP_MODULE='selfserving' starts a server of its own (http://0.0.0.0:8080) when it is "
        "imported: the image runs the server, on PORT, in each gunicorn worker; "
        'guard that with `if __name__ == "__main__":`',
    ),
    "exits-when-called": (
        "forms:exits",
        "APP_MODULE='forms:exits' failed to start: it exits (SystemExit: 'settings.toml not "
        "found'); an app that parses its command line gets the arguments given after `serve`",
    ),
    "exits-on-startup": (
        "forms:exits_on_startup",
        "APP_MODULE='forms:exits_on_startup' failed to start: it exits (SystemExit: 'cache not "
        "configured')",
    ),
    "exits-at-import": (
        "cli",
        "APP_MODULE='cli' cannot be loaded: it exits (SystemExit: 2); an app that parses its "
        "command line gets the arguments given after `serve`: []",
    ),
    "read-only-database": (
        "forms:notes",
        "failed to start: OperationalError: attempt to write a readonly database (the app runs "
        "as uid 10001, which may write only in /tmp",
    ),
    "worker-fails-to-boot": (
        "brokenboot",
        "a gunicorn worker failed to boot: TypeError: 'NoneType' object is not callable",
    ),
    "removed-module": (
        "removed",
        "No module named 'distutils' (Python 3.12 removed the distutils module: use setuptools "
        "(it provides distutils again) in requirements.txt)",
    ),
    "application-given-a-loop": (
        "oldloop",
        "web.Application instance initialized with different loop (an Application made with "
        "loop=, or at import with asyncio.get_event_loop(): make it without loop=",
    ),
    "on-startup-raises": (
        "forms:on_startup_fails",
        "failed to start: RuntimeError: cache server at cache:6379 is not answering",
    ),
}


@pytest.mark.parametrize("case", FAILURES, ids=list(FAILURES))
def test_app_that_cannot_start_stops_the_container_saying_why_once(app_image, case) -> None:
    module, message = FAILURES[case]
    code, elapsed, logs = fail(app_image("forms"), {"APP_MODULE": module})
    assert code == 1, logs
    assert elapsed < FAILS_WITHIN, logs
    assert logs.count(message) == 1, logs
    assert "aiohttp-parent: serving" not in logs
    assert "stopped because program 'gunicorn' gave up" in logs
    # One worker's exit 3 halts gunicorn; a second one, reaped while it
    # halts, would crash it with an unhandled HaltServer.
    assert "HaltServer" not in logs, logs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--workers 2 --no-preload", "gunicorn: error: unrecognized arguments: --no-preload"),
        # Another worker never says the app is ready: it would wait for APP_START_TIMEOUT.
        (
            "--worker-class aiohttp.GunicornWebWorker",
            "it sets the worker class (aiohttp.GunicornWebWorker), and the image's own worker",
        ),
        # nginx's upstream socket would stay empty: a 502 for every request.
        (
            "--bind 0.0.0.0:8000",
            "it sets where gunicorn listens (0.0.0.0:8000), and nginx passes requests",
        ),
    ],
    ids=["unknown-flag", "worker-class", "bind"],
)
def test_gunicorn_flags_gunicorn_refuses_are_named_before_it_starts(
    app_image, args: str, message: str
) -> None:
    env = {"APP_MODULE": "forms:app", "GUNICORN_CMD_ARGS": args}
    code, elapsed, logs = fail(app_image("forms"), env)
    assert code == 78, logs
    assert elapsed < FAILS_WITHIN, logs
    assert f"GUNICORN_CMD_ARGS={args!r} is not valid: {message}" in logs


def test_debugtoolbar_is_refused_in_production_and_warned_of_in_development(
    app_image, cleanup
) -> None:
    """Its host check sees nginx's 127.0.0.1 for every client: its console
    (any Python) would be open to all."""
    env = {"APP_MODULE": "toolbar:create_app"}
    code, elapsed, logs = fail(app_image("toolbar"), env)
    assert code == 1, logs
    assert elapsed < FAILS_WITHIN, logs
    refused = "sets up aiohttp_debugtoolbar, whose console runs any Python a client sends"
    assert logs.count(refused) == 1, logs
    assert "set it up only in development (DEV=1)" in logs
    body, logs = served_text(app_image, "toolbar", env | {"DEV": "1"}, cleanup)
    assert "toolbar" in body
    assert logs.count("publish this port on 127.0.0.1 alone") == 1, logs


def test_quotes_an_env_file_kept_are_named(app_image) -> None:
    # docker run --env-file keeps them; docker compose's .env would not.
    code, elapsed, logs = fail(app_image("forms"), {"APP_MODULE": '"forms:app"'})
    assert code == 78, logs
    assert elapsed < FAILS_WITHIN, logs
    assert (
        "(the quotes are part of the value: docker run --env-file keeps them; "
        "write APP_MODULE=forms:app)"
    ) in logs


def test_procfile_names_the_app_module_to_set(build_child) -> None:
    procfile = "web: gunicorn forms:create_app --bind 0.0.0.0:$PORT -k aiohttp.GunicornWebWorker\n"
    tag, _ = build_child({**read_app("forms"), "Procfile": procfile}, name="app-forms-procfile")
    code, elapsed, logs = fail(tag, {})
    assert code == 78, logs
    assert elapsed < FAILS_WITHIN, logs
    assert (
        "(/app/Procfile's web process serves forms:create_app: here, APP_MODULE=forms:create_app)"
    ) in logs


@pytest.mark.parametrize(
    ("module", "waits_in"), [("never_ready", "never_ready"), ("never_ready_ctx", "database")]
)
def test_app_that_never_becomes_ready_stops_at_the_start_deadline(
    app_image, module, waits_in
) -> None:
    env = {"APP_MODULE": f"forms:{module}", "APP_START_TIMEOUT": "3"}
    code, elapsed, logs = fail(app_image("forms"), env)
    assert code == 1, logs
    assert 3 <= elapsed < 3 + FAILS_WITHIN, logs
    assert logs.count("did not start within 3 s (APP_START_TIMEOUT)") == 1, logs
    # The worker's report, which serve waits for: where the start waits.
    assert "still waiting at /app/forms.py:" in logs, logs
    assert f"in {waits_in}: await asyncio.Event().wait()" in logs, logs


def test_module_that_never_finishes_importing_stops_at_the_start_deadline(app_image) -> None:
    code, elapsed, logs = fail(
        app_image("forms"), {"APP_MODULE": "blocks", "APP_START_TIMEOUT": "3"}
    )
    assert code == 1, logs
    assert elapsed < 3 + FAILS_WITHIN, logs
    assert "gunicorn is still importing it" in logs


def test_dev_mode_reports_a_worker_load_error_once(build_child) -> None:
    tag, _ = build_child(read_app("forms"), build_args={"DEV": "1"}, name="app-forms-dev")
    code, elapsed, logs = fail(tag, {"APP_MODULE": "forms:create_ap"})
    assert code == 1, logs
    assert elapsed < FAILS_WITHIN, logs
    assert logs.count("has no attribute 'create_ap'") == 1, logs


# --- static files, state, old habits -------------------------------------------------------


def test_app_serves_its_own_static_route_where_nginx_has_no_file(app_image, cleanup) -> None:
    env = {"APP_MODULE": "shop.app:create_app"}
    svc, statuses, logs = serve_from_start(app_image("ownstatic"), env)
    cleanup.append(svc.name)
    assert_clean_start(statuses, logs)
    from_app = http.request(svc.http, "/static/style.css")
    assert from_app.text == "body { color: teal; }\n"
    assert "cache-control" not in from_app.headers  # the app's answer, not nginx's
    from_disk = http.request(svc.http, "/static/disk.txt")
    assert from_disk.text == "from disk\n"
    assert from_disk.headers["cache-control"] == "max-age=3600"
    assert http.request(svc.http, "/static/missing.css").status == 404


def test_websocket_broadcast_reaches_every_client_with_one_worker(app_image, cleanup) -> None:
    # Clients kept in a worker's memory: README, "Per-worker state".
    env = {"APP_MODULE": "chat:create_app", "WEB_CONCURRENCY": "1"}
    svc, statuses, logs = serve_from_start(app_image("broadcast"), env)
    cleanup.append(svc.name)
    assert_clean_start(statuses, logs)

    async def broadcast() -> list[str]:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{svc.http}/chat"
            clients = [await session.ws_connect(url) for _ in range(5)]
            await clients[0].send_str("to all")
            got = [(await c.receive(timeout=5)).data for c in clients]
            for c in clients:
                await c.close()
            return got

    assert asyncio.run(broadcast()) == ["to all"] * 5


PROGRAM_CONF = "container/files/etc/supervisor/conf.d/app.conf"


@pytest.mark.parametrize(
    "variant",
    ["own-entrypoint", "parent-entrypoint", "program-named-gunicorn"],
)
def test_seed_style_child_serves_unchanged_with_one_warning(
    app_image, build_child, cleanup, variant: str
) -> None:
    # Its own program runs gunicorn; its entrypoint runs `supervisord -n`, or
    # it uses the parent's `serve` with APP_MODULE set as well, or its program
    # has the parent's program's name (supervisord merges the two sections).
    files = read_app("seed")
    if variant == "own-entrypoint":
        name = start(app_image("seed"), {})
    elif variant == "parent-entrypoint":
        files = {k: v for k, v in files.items() if not k.startswith("bin/")}
        tag, _ = build_child(files, name="app-seed-serve")
        name = start(tag, {"APP_MODULE": "app:app"})
    else:
        files[PROGRAM_CONF] = files[PROGRAM_CONF].replace("[program:app]", "[program:gunicorn]")
        tag, _ = build_child(files, name="app-seed-named")
        name = start(tag, {})
    cleanup.append(name)
    svc, statuses, logs = poll_until_served(name)
    assert_clean_start(statuses, logs)  # nginx waited for their gunicorn's --bind
    assert http.request(svc.http, "/").text == "Hello from a seed-style child\n"
    assert http.request(svc.http, "/static/seed.txt").text == "seed static\n"
    logs = docker.logs(name)
    assert logs.count("warning: seed-style child") == 1
    assert 'Recommended: README.rst, "Migrating a seed-style child"' in logs
    # Its program's user=www-data: supervisord, not root, runs it as the app user.
    assert "has user=www-data, but the container runs as uid 10001, not root" in logs
    masters = [p for p in processes(name) if p["ppid"] == 1 and "gunicorn" in p["cmd"]]
    assert len(masters) == 1
    assert "127.0.0.1:8000" in masters[0]["cmd"]  # theirs, not ours


# --- locked down and read-only ---------------------------------------------------------------


NOTES_APP = """import sqlite3
from aiohttp import web


def create_app():
    db = sqlite3.connect("notes.sqlite3")  # next to the code, as tutorials do
    db.execute("create table if not exists notes (body text)")
    app = web.Application()
    app["db"] = db
    return app
"""


def test_app_writing_next_to_its_code_stops_saying_where_it_may_write(build_child) -> None:
    # The app runs as the app user; /app is root's.
    tag, _ = build_child({"notes.py": NOTES_APP, "requirements.txt": ""}, name="app-notes")
    code, elapsed, logs = fail(tag, {"APP_MODULE": "notes:create_app"})
    assert elapsed < FAILS_WITHIN, logs
    assert code == 1, logs
    assert "failed to start: OperationalError: unable to open database file" in logs
    assert "(the app runs as uid 10001, which may write only in /tmp and in volumes" in logs


def test_forgotten_app_module_is_named_even_with_a_worker_program(build_child) -> None:
    # A background worker program is not an app of its own.
    worker = "[program:worker]\ncommand=/var/www/venv/bin/python -c 'import time; time.sleep(600)'\nuser=app\n"
    files = {**read_app("forms"), "container/files/etc/supervisor/conf.d/worker.conf": worker}
    tag, _ = build_child(files, name="app-forms-worker")
    code, elapsed, logs = fail(tag, {})
    assert elapsed < FAILS_WITHIN, logs
    assert code == 78, logs
    assert "APP_MODULE is not set" in logs
    assert "seed-style" not in logs


def test_restarted_container_waits_for_the_app_again(app_image, cleanup) -> None:
    # docker restart keeps /tmp, and with it the last start's `ready` note.
    svc, statuses, logs = serve_from_start(app_image("forms"), {"APP_MODULE": "forms:create_app"})
    cleanup.append(svc.name)
    assert_clean_start(statuses, logs)
    docker.docker("restart", "-t", "10", svc.name)
    _, statuses, logs = poll_until_served(svc.name)
    assert_clean_start(statuses, logs)
    assert logs.count("aiohttp-parent: serving forms:create_app") == 2


def test_locked_down_start_is_clean(app_image, cleanup) -> None:
    body, _ = served_text(
        app_image, "forms", {"APP_MODULE": "forms:create_app"}, cleanup, opts=LOCKED_DOWN
    )
    assert body == "an async factory\n"


def test_child_images_keep_the_run_dir_any_user_can_fill(app_image) -> None:
    # The build's nginx -t check writes there; it must leave the image's dir as it was.
    out = docker.run(app_image("forms"), "stat", "-c", "%a %U %h", RUN_DIR, check=True).stdout
    assert out.split()[:2] == ["1777", "root"]
    assert docker.run(app_image("forms"), "ls", "-A", RUN_DIR + "/nginx", check=True).stdout == ""


def test_read_only_without_a_writable_tmp_names_the_tmpfs(app_image) -> None:
    code, elapsed, logs = fail(
        app_image("forms"), {"APP_MODULE": "forms:app"}, opts=["--read-only"]
    )
    assert code == 78, logs
    assert elapsed < FAILS_WITHIN, logs
    assert "Read-only file system: with --read-only, give the container a writable /tmp" in logs
    assert "--tmpfs /tmp" in logs
    assert "Traceback" not in logs
