"""`serve` variants: TLS, locked-down non-root, API-only, DEV=1, child overrides."""

from __future__ import annotations

import ipaddress
import json
import ssl
from pathlib import Path

import pytest
import trustme

from tests import contract, docker, http
from tests.service import LOCKED_DOWN, processes, served

HELLO = Path(__file__).resolve().parent.parent / "examples/hello"


@pytest.fixture(scope="module")
def build_hello(build_child, parent_image: str):
    """Build examples/hello plus `extra` files (e.g. container/files) as a child."""
    app = {str(p.relative_to(HELLO)): p.read_text() for p in HELLO.rglob("*") if p.is_file()}
    app["Dockerfile"] = f"FROM {parent_image}\nENV APP_MODULE=hello.app:create_app\n"

    def build(extra: dict[str, str], name: str, build_args: dict[str, str] | None = None) -> str:
        tag, _ = build_child({**app, **extra}, build_args=build_args, name=name)
        return tag

    return build


def client_context(
    ca: trustme.CA, version: ssl.TLSVersion | None = None, h2: bool = False
) -> ssl.SSLContext:
    """h2=True offers HTTP/2 by ALPN (for handshake checks; http.client speaks HTTP/1.1)."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["h2", "http/1.1"] if h2 else ["http/1.1"])
    if version is not None:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old protocols
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def handshake(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    import socket

    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.fixture(scope="module")
def tls_service(example_image: str, tls_dir: Path):
    with served(example_image, opts=[f"--volume={tls_dir}:/etc/aiohttp-parent/tls:ro"]) as svc:
        yield svc


def test_https_serves_the_app(tls_service, ca) -> None:
    resp = http.request(tls_service.https, "/", context=client_context(ca))
    assert resp.text == "Hello from aiohttp-parent\n"


def test_tls13_handshake_and_http2(tls_service, ca) -> None:
    with handshake(tls_service.https, client_context(ca, h2=True)) as sock:
        assert sock.version() == "TLSv1.3"
        assert sock.selected_alpn_protocol() == "h2"


def test_tls12_is_accepted(tls_service, ca) -> None:
    # The control for the refusals below: this client context can handshake.
    with handshake(tls_service.https, client_context(ca, ssl.TLSVersion.TLSv1_2)) as sock:
        assert sock.version() == "TLSv1.2"


@pytest.mark.filterwarnings(
    "ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"
)  # offering them is the point
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_is_refused(tls_service, ca, version) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(tls_service.https, client_context(ca, version))


def test_app_sees_https_scheme(tls_service, ca) -> None:
    body = http.request(tls_service.https, "/whoami", context=client_context(ca)).body
    assert json.loads(body)["scheme"] == "https"


def test_http_still_served_without_redirect(tls_service) -> None:
    assert http.request(tls_service.http, "/").status == 200


def test_redirect_to_https(example_image: str, tls_dir: Path) -> None:
    opts = [f"--volume={tls_dir}:/etc/aiohttp-parent/tls:ro"]
    with served(example_image, env={"TLS_REDIRECT": "1"}, opts=opts, ready="/nope") as svc:
        resp = http.request(svc.http, "/some/path?q=1")
        assert resp.status == 301
        assert resp.headers["location"] == "https://127.0.0.1/some/path?q=1"


def test_mismatched_key_stops_the_container(
    example_image: str, ca, tls_dir: Path, tmp_path: Path
) -> None:
    other = ca.issue_cert("localhost")
    other.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    tmp_path.chmod(0o755)
    (tmp_path / "tls.crt").write_bytes((tls_dir / "tls.crt").read_bytes())
    with docker.container(
        example_image, "serve", opts=[f"--volume={tmp_path}:/etc/aiohttp-parent/tls:ro"]
    ) as name:
        assert docker.wait_exit(name, timeout=60) not in (None, 0)
        assert "does not match the certificate" in docker.logs(name)


# --- locked down -------------------------------------------------------------------


def test_locked_down_arbitrary_uid_serves(example_image: str) -> None:
    with served(example_image, opts=LOCKED_DOWN) as svc:
        assert http.request(svc.http, "/").text == "Hello from aiohttp-parent\n"
        assert http.request(svc.http, "/static/hello.txt").text == "static file\n"
        assert json.loads(http.request(svc.http, "/whoami").body)["uid"] == 12345


def test_locked_down_with_tls(example_image: str, tls_dir: Path, ca) -> None:
    opts = [*LOCKED_DOWN, f"--volume={tls_dir}:/etc/aiohttp-parent/tls:ro"]
    with served(example_image, opts=opts) as svc:
        assert http.request(svc.https, "/", context=client_context(ca)).status == 200


# --- API-only ------------------------------------------------------------------------


def test_api_only_switch_serves_from_gunicorn(example_image: str) -> None:
    with served(example_image, env={"API_ONLY": "1"}) as svc:
        resp = http.request(svc.http, "/")
        assert resp.text == "Hello from aiohttp-parent\n"
        assert "aiohttp" in resp.headers["server"]  # no nginx in front
        assert svc.runtime()["nginx"] is False


def test_api_only_spoofed_forwarded_for_is_not_trusted(example_image: str) -> None:
    with served(example_image, env={"API_ONLY": "1"}) as svc:
        seen = json.loads(
            http.request(svc.http, "/whoami", headers={"X-Forwarded-For": "203.0.113.9"}).body
        )
        assert seen["remote"] != "203.0.113.9"


LOAD_BALANCER = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example.com",
}


def whoami_behind_a_balancer(svc) -> tuple[str, str, str]:
    seen = json.loads(http.request(svc.http, "/whoami", headers=LOAD_BALANCER).body)
    return seen["remote"], seen["scheme"], seen["host"]


def test_load_balancer_named_in_forwarded_allow_ips_is_believed(example_image: str) -> None:
    """README, "Behind a load balancer": an ingress's X-Forwarded-* reach the
    app from the peers FORWARDED_ALLOW_IPS names (a network here), through
    nginx and without it; from any other peer, nginx's own."""
    with served(example_image) as svc:
        peer = json.loads(http.request(svc.http, "/whoami").body)["remote"]
        assert whoami_behind_a_balancer(svc) == (peer, "http", f"127.0.0.1:{svc.http}")
    network = str(ipaddress.ip_network(f"{peer}/16", strict=False))
    for api_only in ("0", "1"):
        env = {"FORWARDED_ALLOW_IPS": network, "API_ONLY": api_only}
        with served(example_image, env=env) as svc:
            assert whoami_behind_a_balancer(svc) == ("203.0.113.7", "https", "shop.example.com")


def access_lines(name: str, marker: str) -> list[str]:
    return [line for line in docker.logs(name).splitlines() if f"GET {marker}" in line]


def test_api_only_access_log_line_reaches_docker_logs_while_idle(example_image: str) -> None:
    """Lines are written in batches; an idle worker still writes its last one
    within about a second (the wait here is generous, not a speed bound)."""
    with served(example_image, env={"API_ONLY": "1"}) as svc:
        http.request(svc.http, "/idle-line", headers={"User-Agent": "idle-probe"})
        assert docker.wait_for(lambda: access_lines(svc.name, "/idle-line"), timeout=10)
        (line,) = access_lines(svc.name, "/idle-line")
        # aiohttp's default format, as gunicorn's access log had it.
        assert '"GET /idle-line HTTP/1.1" 404' in line
        assert line.endswith('"-" "idle-probe"')


def test_api_only_access_log_keeps_every_line_through_docker_stop(example_image: str) -> None:
    with served(example_image, env={"API_ONLY": "1"}) as svc:
        for n in range(200):
            http.request(svc.http, f"/line-{n}")
        docker.docker("stop", svc.name)
        assert docker.state(svc.name)["ExitCode"] == 0
        seen = {line.split('"GET ', 1)[1].split()[0] for line in access_lines(svc.name, "/line-")}
        assert seen == {f"/line-{n}" for n in range(200)}


# aiohttp's own AccessLogger and the image's (made for the batched log) write the same
# line for every format atom, in the same second: aiohttp's line is the contract.
SAME_LINE = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
from aiohttp import web, web_log
from aiohttp.test_utils import make_mocked_request
import aiohttp_parent_log

class Lines(aiohttp_parent_log.BufferedLines):
    def info(self, msg, *args, **kwargs):
        self.seen.append(msg)

fmt = sys.argv[1]
request = make_mocked_request("GET", "/p?q=1", headers={"User-Agent": "ua", "X-In": "in"})
response = web.Response(text="hi", headers={"X-Out": "out"})
for _ in range(3):  # the same second for both, or try again
    second = int(time.time())
    lines = []
    for cls in (web_log.AccessLogger, aiohttp_parent_log.AccessLogger):
        logger = Lines(os.open(os.devnull, os.O_WRONLY), [])
        logger.seen = []
        cls(logger, fmt).log(request, response, 3.5)  # started 3.5 s ago
        lines += logger.seen
    if int(time.time()) == second:
        break
print(repr(lines[0]))
print(repr(lines[1]))
"""


@pytest.mark.parametrize(
    "fmt",
    [
        '%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"',
        "%t %t %P %T %Tf %D %{X-In}i %{X-Out}o %r %s %b %a",
    ],
)
def test_api_only_access_lines_are_aiohttps_own(example_image: str, fmt: str) -> None:
    # A zone off UTC by a fraction of an hour: %t's offset is the local one.
    opts = ["--env=TZ=Asia/Kolkata"]
    result = docker.run(example_image, "python", "-c", SAME_LINE, fmt, contract.LIB_DIR, opts=opts)
    theirs, ours = result.stdout.splitlines()
    assert ours == theirs
    assert "+0530]" in theirs
    assert "/p?q=1" in theirs


def test_api_only_access_log_off_logs_no_request_but_still_errors(example_image: str) -> None:
    with served(example_image, env={"API_ONLY": "1", "GUNICORN_ACCESS_LOG": "0"}) as svc:
        for n in range(20):
            http.request(svc.http, f"/quiet-{n}")
        docker.docker("stop", svc.name)
        assert docker.state(svc.name)["ExitCode"] == 0
        assert access_lines(svc.name, "/quiet-") == []
        assert "Booting worker" in docker.logs(svc.name)  # gunicorn's error log still flows


def test_child_that_removes_nginx_serves_api_only(build_hello) -> None:
    tag = build_hello(
        {"bin/setup.sh": "apt-get purge -y -qq nginx nginx-common >/dev/null\n"}, "nonginx"
    )
    with served(tag) as svc:
        assert http.request(svc.http, "/").text == "Hello from aiohttp-parent\n"
        assert svc.runtime()["nginx"] is False


# --- DEV=1 -------------------------------------------------------------------------------


def test_dev_serve_reloads_on_code_change_with_asyncio_debug(build_hello) -> None:
    tag = build_hello({}, "devserve", build_args={"DEV": "1"})
    with served(tag) as svc:
        assert json.loads(http.request(svc.http, "/whoami").body)["debug"] is True
        # The developer edits (as root here; a mounted checkout is theirs), the app reloads.
        edit = ["sed", "-i", "s/Hello from aiohttp-parent/Reloaded/", "/app/hello/app.py"]
        docker.docker("exec", "--user=0", svc.name, *edit)
        assert docker.wait_for(
            lambda: http.answers(svc.http) and http.request(svc.http, "/").text == "Reloaded\n",
            timeout=20,
        )


# --- child overrides --------------------------------------------------------------------


def test_child_nginx_snippets_and_supervisord_program(build_hello) -> None:
    files = {
        "container/files/etc/nginx/server.d/headers.conf": 'add_header X-Child "server-level" always;\n',
        "container/files/etc/nginx/conf.d/child.conf": "server_names_hash_bucket_size 128;\n",
        "container/files/etc/supervisor/conf.d/worker.conf": (
            "[program:worker]\ncommand=/var/www/venv/bin/python -c 'import time; time.sleep(3600)'\n"
            "user=app\nstdout_logfile=/dev/stdout\nstdout_logfile_maxbytes=0\nredirect_stderr=true\n"
        ),
    }
    tag = build_hello(files, "override")
    with served(tag) as svc:
        assert http.request(svc.http, "/").headers["x-child"] == "server-level"
        assert any("time.sleep(3600)" in p["cmd"] for p in processes(svc.name))


def test_child_program_of_another_user_runs_as_the_app_user_naming_it(build_hello) -> None:
    # A seed habit: user=www-data. supervisord runs as the app user and cannot
    # switch; the program runs as the app user, with a warning, not FATAL.
    worker = "[program:worker]\ncommand=/usr/bin/sleep 600\nuser=www-data\n"
    tag = build_hello({"container/files/etc/supervisor/conf.d/worker.conf": worker}, "otheruser")
    with served(tag) as svc:
        assert http.request(svc.http, "/").status == 200
        sleeps = [p for p in processes(svc.name) if p["cmd"] == "/usr/bin/sleep 600"]
        logs = docker.logs(svc.name)
    assert [p["uid"] for p in sleeps] == [10001], sleeps
    assert "warning: supervisord [program:worker] in /etc/supervisor/conf.d/worker.conf" in logs
    assert "has user=www-data, but the container runs as uid 10001, not root" in logs
    assert "FATAL" not in logs


def test_privileged_port_closed_to_the_app_user_names_the_fix(example_image: str) -> None:
    # Docker opens ports below 1024 to every user of the container; this host
    # setting (--network host, Kubernetes) closes them again.
    opts = ["--sysctl=net.ipv4.ip_unprivileged_port_start=1024"]
    with docker.container(example_image, "serve", opts=opts) as name:
        assert docker.wait_exit(name, timeout=30) == 78
        logs = docker.logs(name)
    assert "error: nginx may not bind its ports as uid 10001 here" in logs
    assert "set PORT=8080 and HTTPS_PORT=8443, or open them to every user" in logs
    assert "bind() to 0.0.0.0:80 failed (13: Permission denied)" in logs


def test_child_site_replaces_the_generated_one(build_hello) -> None:
    site = "server {\n    listen 80 default_server;\n    location / { proxy_pass http://aiohttp_app; }\n    location = /own { return 200 'own site\\n'; }\n}\n"
    tag = build_hello({"container/files/etc/nginx/sites-enabled/own.conf": site}, "ownsite")
    with served(tag) as svc:
        assert http.request(svc.http, "/own").text == "own site\n"
        assert http.request(svc.http, "/").text == "Hello from aiohttp-parent\n"


def test_broken_nginx_config_mounted_at_run_time_fails_fast(
    example_image: str, tmp_path: Path
) -> None:
    # A broken child build fails at build time (tests/reliability); a config
    # mounted at run time (a ConfigMap, say) is caught by serve's nginx -t.
    broken = tmp_path / "broken.conf"
    broken.write_text("this is not nginx;\n")
    broken.chmod(0o644)
    opts = [f"--volume={broken}:/etc/nginx/conf.d/broken.conf:ro"]
    with docker.container(example_image, "serve", opts=opts) as name:
        assert docker.wait_exit(name, timeout=60) not in (None, 0)
        logs = docker.logs(name)
        assert "the nginx configuration is invalid" in logs
        assert 'unknown directive "this"' in logs


def test_tls_directory_the_server_cannot_enter_stops_the_container(
    example_image: str, tls_dir: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "tls"
    locked.mkdir(mode=0o700)
    for name in ("tls.crt", "tls.key"):
        (locked / name).write_bytes((tls_dir / name).read_bytes())
    opts = [*LOCKED_DOWN, f"--volume={locked}:/etc/aiohttp-parent/tls:ro"]
    with docker.container(example_image, "serve", opts=opts) as name:
        assert docker.wait_exit(name, timeout=60) not in (None, 0)
        logs = docker.logs(name)
        assert "TLS_CERT: cannot read /etc/aiohttp-parent/tls/tls.crt: Permission denied" in logs
        assert "Traceback" not in logs
