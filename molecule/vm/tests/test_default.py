"""The VM: systemd runs nginx and supervisord; the example app answers through nginx."""

import json

import pytest

GET = "python3 -c \"import urllib.request,sys; r=urllib.request.urlopen('http://127.0.0.1{path}'); print(r.status); sys.stdout.write(r.read().decode())\""


def test_systemd_is_pid_1(host) -> None:
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"


@pytest.mark.parametrize("service", ["nginx", "supervisor"])
def test_service_running(host, service: str) -> None:
    assert host.service(service).is_running


@pytest.mark.parametrize("service", ["nginx", "supervisor"])
def test_service_enabled(host, service: str) -> None:
    assert host.service(service).is_enabled


def test_gunicorn_runs_under_supervisord(host) -> None:
    status = host.check_output("supervisorctl -c /etc/supervisor/supervisord.conf status gunicorn")
    assert "RUNNING" in status


def test_gunicorn_runs_as_app_user(host) -> None:
    pid = host.check_output("supervisorctl -c /etc/supervisor/supervisord.conf pid gunicorn")
    uid = host.check_output(f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status")
    assert uid == host.check_output("id -u app")


def test_app_answers_through_nginx(host) -> None:
    out = host.check_output(GET.format(path="/"))
    assert out.splitlines() == ["200", "Hello from aiohttp-parent"]


def test_static_file_served(host) -> None:
    assert host.check_output(GET.format(path="/static/hello.txt")).splitlines() == [
        "200",
        "static file",
    ]


def test_settings_reach_the_runtime(host) -> None:
    runtime = json.loads(host.file("/run/aiohttp-parent/runtime.json").content_string)
    assert runtime["healthcheck_path"] == "/healthz"
    assert runtime["app_module"] == "hello.app:create_app"


def test_gunicorn_log_goes_to_a_rotated_file(host) -> None:
    assert host.file("/var/log/supervisor/gunicorn.log").contains("Booting worker")


def test_access_log_goes_to_file(host) -> None:
    host.check_output(GET.format(path="/"))
    # nginx buffers access log lines for up to a second.
    host.check_output(
        'timeout 10 sh -c \'until grep -q "GET / HTTP/1.1" /var/log/nginx/access.log; '
        "do sleep 0.2; done'"
    )


def test_gunicorn_master_is_the_herders_child(host) -> None:
    herder = host.check_output("supervisorctl -c /etc/supervisor/supervisord.conf pid gunicorn")
    master = host.file("/run/aiohttp-parent/gunicorn/gunicorn.pid").content_string.strip()
    assert host.check_output(f"awk '/^PPid:/ {{print $2}}' /proc/{master}/status") == herder
