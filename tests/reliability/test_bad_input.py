"""Bad input: broken child builds, a broken environment, hostile HTTP. Each gets
a clear answer, and nothing is lost or half-built."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests import docker, http
from tests.service import LOCKED_DOWN, Service, served

REQS = {"requirements.txt": ""}

# --- child builds -------------------------------------------------------------------

BUILDS = {
    "no-requirements": (
        {"app.py": ""},
        {},
        ["no requirements.txt in the build context", "add a requirements.txt"],
    ),
    "no-requirements-but-a-pipfile": (
        {"Pipfile": '[packages]\naiohttp = "*"\n', "app.py": ""},
        {},
        ["no requirements.txt in the build context", "pipenv requirements > requirements.txt"],
    ),
    "no-requirements-but-a-poetry-lock": (
        {"pyproject.toml": '[tool.poetry]\nname = "shop"\n', "poetry.lock": "", "app.py": ""},
        {},
        [
            "no requirements.txt in the build context",
            "poetry export -f requirements.txt",
            "the parent does not read Poetry's",
        ],
    ),
    "setup-with-windows-line-endings": (
        {
            **REQS,
            "bin/setup.sh": "export PIP_DISABLE_PIP_VERSION_CHECK=1\r\necho after-the-failure\r\n",
        },
        {},
        ["bin/setup.sh has Windows line endings (CRLF)", "dos2unix bin/setup.sh"],
    ),
    "gunicorn-too-old": (
        {"requirements.txt": "gunicorn==20.1.0\n"},
        {},
        ["requirements.txt installed gunicorn 20.1.0: the image needs gunicorn 21.2 or later"],
    ),
    # Installs (its C build falls back to pure Python) and imports cgi, which
    # Python 3.13 removed: refused at build time, not at each start.
    "aiohttp-older-than-python": (
        {"requirements.txt": "aiohttp==3.7.4\n"},
        {},
        [
            "requirements.txt installed aiohttp 3.7.4, which cannot be imported on Python 3.",
            "ModuleNotFoundError: No module named 'cgi'",
            "pin a release that supports Python 3.",
        ],
    ),
    "cleanup-removes-a-library": (
        {
            **REQS,
            # A compiled module linked to libsqlite3, as psycopg2 is to libpq.
            "bin/setup.sh": "cp /usr/lib/python3*/lib-dynload/_sqlite3.*.so /var/www/venv/lib/python3*/site-packages/\n",
            "bin/cleanup.sh": "dpkg --purge --force-depends libsqlite3-0\n",
        },
        {},
        [
            "after bin/cleanup.sh, compiled modules in /var/www/venv miss libraries",
            "needs libsqlite3.so.0",
        ],
    ),
    "no-wheel-and-no-compiler": (
        {
            "requirements.txt": "./cext\n",
            "cext/setup.py": "from setuptools import Extension, setup\n"
            "setup(name='cext', version='1', ext_modules=[Extension('cext', ['cext.c'])])\n",
            "cext/cext.c": "int cext;\n",
        },
        {},
        ["'pip install -r requirements.txt' failed", "hint: pip tried to compile a package"],
    ),
    "compiler-but-no-header": (
        {
            "requirements.txt": "./cext\n",
            "bin/setup.sh": "apt-get update -qq && apt-get install -qq -y --no-install-recommends"
            " gcc libc6-dev python3-dev >/dev/null\n",
            "cext/setup.py": "from setuptools import Extension, setup\n"
            "setup(name='cext', version='1', ext_modules=[Extension('cext', ['cext.c'])])\n",
            "cext/cext.c": "#include <libpq-fe.h>\nint cext;\n",
        },
        {},
        ["'pip install -r requirements.txt' failed", "hint: the compiler found no libpq-fe.h"],
    ),
    # C that an old Cython wrote, which a newer Python's headers refuse.
    "c-sources-older-than-python": (
        {
            "requirements.txt": "./cext\n",
            "bin/setup.sh": "apt-get update -qq && apt-get install -qq -y --no-install-recommends"
            " gcc libc6-dev python3-dev >/dev/null\n",
            "cext/setup.py": "from setuptools import Extension, setup\n"
            "setup(name='cext', version='1', ext_modules=[Extension('cext', ['cext.c'])])\n",
            "cext/cext.c": "#include <Python.h>\n"
            "long first(PyLongObject *n) { return n->ob_digit[0]; }\n",
        },
        {},
        [
            "'pip install -r requirements.txt' failed",
            "hint: the compiler failed on a package's C sources",
        ],
    ),
    "database-client-library": (
        {"requirements.txt": "psycopg2==2.9.10\n"},
        {},
        [
            "'pip install -r requirements.txt' failed",
            "hint: the package builds against a database client library, and pg_config is its -dev",
        ],
    ),
    "conda-freeze": (
        {
            "requirements.txt": "six @ file:///home/conda/feedstock_root/build_artifacts/six_1/work\n"
        },
        {},
        ["'pip install -r requirements.txt' failed", "(conda's pip freeze writes them)"],
    ),
    "project-setuptools-cannot-lay-out": (
        {
            **REQS,
            "pyproject.toml": '[project]\nname = "shop"\nversion = "1"\n'
            '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n',
            "shop/views.py": "",
            "migrations/0001.py": "",
        },
        {},
        ["Multiple top-level packages discovered", "[tool.setuptools] packages = "],
    ),
    "unknown-package": (
        {"requirements.txt": "this-package-does-not-exist-aiohttp-parent==0.0.1\n"},
        {},
        ["'pip install -r requirements.txt' failed"],
    ),
    "failing-setup": (
        {**REQS, "bin/setup.sh": "echo before\nfalse\necho after-the-failure\n"},
        {},
        ["'source bin/setup.sh' failed with exit status 1"],
    ),
    "failing-cleanup": (
        {**REQS, "bin/cleanup.sh": "echo before\nfalse\necho after-the-failure\n"},
        {},
        ["'source bin/cleanup.sh' failed with exit status 1"],
    ),
    "dev-yes": (REQS, {"DEV": "yes"}, ["DEV='yes' is not valid", "DEV=0", "DEV=1"]),
    "dev-true": (REQS, {"DEV": "true"}, ["DEV='true' is not valid"]),
    "dev-empty": (REQS, {"DEV": ""}, ["DEV='' is not valid"]),
    "garbage-nginx-conf": (
        {**REQS, "container/files/etc/nginx/nginx.conf": "this is not nginx\n"},
        {},
        [
            "'check the nginx configuration (nginx -t)' failed",
            "the nginx configuration is invalid",
            "/etc/nginx/nginx.conf",
        ],
    ),
    "broken-nginx-snippet": (
        {**REQS, "container/files/etc/nginx/server.d/broken.conf": "locaton / {}\n"},
        {},
        ['unknown directive "locaton"', "the nginx configuration is invalid"],
    ),
}


@pytest.mark.both_builders
@pytest.mark.parametrize("case", BUILDS, ids=list(BUILDS))
def test_broken_child_build_fails_clearly_and_tags_nothing(build_child, case: str, figure) -> None:
    """Child build with bad input
    The build fails with a message naming the cause and the step, the rest of the
    script does not run, and no image is tagged; with BuildKit and the classic builder."""
    files, build_args, messages = BUILDS[case]
    tag, result = build_child(files, build_args=build_args, check=False, name="bad")
    log = docker.build_log(result)
    # The step's own error line, not the builder's ("executor failed running ...").
    errors = [line for line in log.splitlines() if line.startswith("aiohttp-parent onbuild: error")]
    figure(errors[-1].strip() if errors else log.strip().splitlines()[-1])
    assert result.returncode != 0
    for message in messages:
        assert message in log
    assert "after-the-failure" not in result.output
    assert not docker.image_exists(tag)


# --- run-time environment --------------------------------------------------------------


# (env, exit code, message). 78 (EX_CONFIG): `serve` refused it before starting
# anything; 1: gunicorn could not load the app, and supervisord gave up on it.
ENVIRONMENTS = {
    "workers-word": (
        {"WEB_CONCURRENCY": "many"},
        78,
        "WEB_CONCURRENCY='many' is not a whole number",
    ),
    "workers-zero": ({"WEB_CONCURRENCY": "0"}, 78, "WEB_CONCURRENCY=0 is out of range"),
    "port-range": ({"PORT": "70000"}, 78, "PORT=70000 is out of range"),
    "port-word": ({"PORT": "http"}, 78, "PORT='http' is not a whole number"),
    "client-timeout": (
        {"NGINX_CLIENT_TIMEOUT": "soon"},
        78,
        "NGINX_CLIENT_TIMEOUT='soon' is not a whole number",
    ),
    "tls-key-missing": (
        {"TLS_CERT": "/etc/ssl/certs/ca-certificates.crt", "TLS_KEY": "/nonexistent.key"},
        78,
        "TLS_KEY: /nonexistent.key does not exist",
    ),
    "app-unset": ({"APP_MODULE": ""}, 78, "APP_MODULE is not set"),
    "app-syntax": (
        {"APP_MODULE": "hello.app:create-app"},
        78,
        "APP_MODULE='hello.app:create-app' is not valid",
    ),
    "app-typo": (
        {"APP_MODULE": "hello.ap:create_app"},
        1,
        "APP_MODULE='hello.ap:create_app' cannot be loaded: ModuleNotFoundError",
    ),
    "app-wrong-type": (
        {"APP_MODULE": "hello.app:SEEN"},
        1,
        "APP_MODULE='hello.app:SEEN' is a AppKey, not one of: module:app (an aiohttp.web.Application)",
    ),
}


@pytest.mark.parametrize("case", ENVIRONMENTS, ids=list(ENVIRONMENTS))
def test_bad_environment_stops_the_container_naming_it(
    example_image: str, case: str, figure
) -> None:
    """Run-time setting with a bad value
    The container exits non-zero (78, EX_CONFIG, for what `serve` checks before
    starting anything; 1 when gunicorn cannot load the app) with a line naming
    the variable; never a fallback."""
    env, expected, message = ENVIRONMENTS[case]
    opts = [f"--env={k}={v}" for k, v in env.items()]
    with docker.container(example_image, "serve", opts=opts) as name:
        code = docker.wait_exit(name, timeout=60)
        logs = docker.logs(name)
    lines = [line for line in logs.splitlines() if message in line]
    figure(f"exit {code}: {lines[0].strip() if lines else '?'}")
    assert code == expected, logs
    assert message in logs
    if expected == 78:
        assert "Traceback" not in logs


def test_unreadable_tls_key_stops_the_container(
    example_image: str, tls_dir: Path, tmp_path: Path, figure
) -> None:
    """TLS key the server cannot read (mode 0600, another owner)
    The container exits 78 naming the file and the error, not a traceback."""
    key = tmp_path / "tls.key"
    key.write_bytes((tls_dir / "tls.key").read_bytes())
    key.chmod(0o600)  # root's; the container runs as 12345
    tmp_path.chmod(0o755)
    opts = [
        *LOCKED_DOWN,
        f"--volume={tls_dir}/tls.crt:/certs/tls.crt:ro",
        f"--volume={key}:/certs/tls.key:ro",
        "--env=TLS_CERT=/certs/tls.crt",
        "--env=TLS_KEY=/certs/tls.key",
    ]
    with docker.container(example_image, "serve", opts=opts) as name:
        code = docker.wait_exit(name, timeout=60)
        logs = docker.logs(name)
    message = "TLS_KEY: cannot read /certs/tls.key: Permission denied"
    figure(f"exit {code}: {message}")
    assert code == 78
    assert message in logs
    assert "Traceback" not in logs


# --- hostile HTTP --------------------------------------------------------------------


@pytest.fixture(scope="module", params=["default", "locked-down"])
def service(request: pytest.FixtureRequest, faulty_image: str):
    """One worker (so the app's request counter is global), 1 MiB body limit; as
    root-started, and as the locked-down arbitrary user."""
    opts = LOCKED_DOWN if request.param == "locked-down" else []
    env = {"WEB_CONCURRENCY": "1", "NGINX_CLIENT_MAX_BODY_SIZE": "1m"}
    with served(faulty_image, env=env, opts=opts) as svc:
        yield svc


def seen(svc: Service) -> int:
    return json.loads(http.request(svc.http, "/seen").body)["count"]


def raw(port: int, data: bytes) -> bytes:
    """Send bytes as they are; the start of the server's reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while len(reply) < 4096 and (chunk := sock.recv(4096)):
            reply += chunk
            if b"\r\n\r\n" in reply:
                break
    return reply


def status_of(reply: bytes) -> str:
    """The status code, also of an HTTP/0.9 reply (a bare body, no status line)."""
    found = re.match(rb"HTTP/1\.[01] (\d{3})", reply) or re.search(rb"<title>(\d{3}) ", reply)
    return found.group(1).decode() if found else "closed"


def test_body_within_the_limit_reaches_the_app(service: Service) -> None:
    """Body just under NGINX_CLIENT_MAX_BODY_SIZE (1 MiB)
    Reaches the app intact (the control for the 413 case)."""
    body = b"x" * (1024 * 1024 - 1)
    response = http.request(service.http, "/echo", method="POST", body=body)
    assert response.status == 200
    assert response.body == body


def test_oversized_body_gets_413_from_nginx(service: Service, figure) -> None:
    """Body over NGINX_CLIENT_MAX_BODY_SIZE (2 MiB against 1 MiB)
    nginx answers 413; the app never sees the request."""
    before = seen(service)
    response = http.request(service.http, "/echo", method="POST", body=b"x" * 2 * 1024 * 1024)
    after = seen(service)
    figure(f"{response.status}; requests reaching the app: {after - before}")
    assert response.status == 413
    assert after == before


def test_oversized_headers_get_400_or_431(service: Service, figure) -> None:
    """A 64 KiB header, and 200 headers of 1 KiB
    nginx refuses both (400 "Request Header Or Cookie Too Large", or 431); the app
    never sees them."""
    before = seen(service)
    big = http.request(service.http, "/", headers={"X-Big": "a" * 64 * 1024})
    many = http.request(service.http, "/", headers={f"X-H{i}": "a" * 1024 for i in range(200)})
    after = seen(service)
    figure(f"{big.status} and {many.status}; requests reaching the app: {after - before}")
    assert big.status in (400, 431)
    assert many.status in (400, 431)
    assert after == before


MALFORMED = {
    "garbage": b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
    "no-version": b"GET /\r\n\r\n",  # HTTP/0.9 is not served
    "bad-method": b"G(ET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "space-in-uri": b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "bad-header": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "both-lengths": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
}


def test_malformed_requests_get_400_from_nginx(service: Service, figure) -> None:
    """Malformed request lines and headers (8 kinds, raw bytes)
    nginx answers 400 (505 for an unknown HTTP version) to each; none reaches the app."""
    before = seen(service)
    statuses = {name: status_of(raw(service.http, data)) for name, data in MALFORMED.items()}
    after = seen(service)
    figure(
        ", ".join(f"{name} {status}" for name, status in statuses.items())
        + f"; reaching the app: {after - before}"
    )
    for name, status in statuses.items():
        assert status == ("505" if name == "bad-version" else "400"), (name, status)
    assert after == before


TRAVERSAL = [
    "/static/../faulty.py",
    "/static/..%2ffaulty.py",
    "/static/%2e%2e/faulty.py",
    "/static/%2e%2e%2ffaulty.py",
    "/static/..%5cfaulty.py",
    "/static/....//faulty.py",
    "/static../faulty.py",
    "/static/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static//etc/passwd",
]


def test_static_path_traversal_serves_nothing_outside(service: Service, figure) -> None:
    """Path traversal on /static/ (10 encodings of ../)
    No file outside /app/static is served: not the app's source, not /etc/passwd."""
    assert http.request(service.http, "/static/ok.txt").text == "static ok\n"  # the control
    statuses = []
    for path in TRAVERSAL:  # http.client sends the path as it is, unnormalised
        response = http.request(service.http, path)
        statuses.append(response.status)
        assert b"create_app" not in response.body, path
        assert b"root:x:0:0" not in response.body, path
    figure(f"statuses {sorted(set(statuses))}; no file from outside /app/static")
