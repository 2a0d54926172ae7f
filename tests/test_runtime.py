"""Unit tests of runtime.py, the settings module every start path shares."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PATH = ROOT / "roles/aiohttp_app/files/lib/runtime.py"
spec = importlib.util.spec_from_file_location("runtime", PATH)
runtime = importlib.util.module_from_spec(spec)
sys.modules["runtime"] = runtime
spec.loader.exec_module(runtime)

APP = {"APP_MODULE": "hello.app:create_app"}


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        (
            {
                "cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            2.0,
        ),
        ({}, None),
    ],
    ids=["v2-unlimited", "v2-1.5", "v1-unlimited", "v1-0.5", "v1-cpuacct-2", "none"],
)
def test_cpu_limit_reads_cgroup_v1_and_v2(tmp_path: Path, files, expected) -> None:
    assert runtime.cpu_limit(cgroup(tmp_path, files)) == expected


def test_quota_is_rounded_up_and_capped_by_affinity(tmp_path: Path) -> None:
    root = cgroup(tmp_path, {"cpu.max": "6400000 100000\n"})  # 64 CPUs of quota
    assert runtime.available_cpus(root) == len(__import__("os").sched_getaffinity(0))
    small = cgroup(tmp_path / "s", {"cpu.max": "50000 100000\n"})
    assert runtime.available_cpus(small) == 1


def test_workers_default_to_cpus_and_dev_uses_one() -> None:
    assert runtime.Settings.from_env(APP, cpus=3).workers == 3
    assert runtime.Settings.from_env({**APP, "DEV": "1"}, cpus=3).workers == 1
    assert runtime.Settings.from_env({**APP, "WEB_CONCURRENCY": "7"}, cpus=3).workers == 7


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY=0 is out of range"),
        ({"PORT": "http"}, "PORT='http' is not a whole number"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is not valid"),
        ({"API_ONLY": "maybe"}, "API_ONLY='maybe' is not valid"),
        ({"NGINX_CLIENT_MAX_BODY_SIZE": "lots"}, "NGINX_CLIENT_MAX_BODY_SIZE='lots' is not valid"),
        (
            {"GUNICORN_TIMEOUT": "120", "NGINX_PROXY_READ_TIMEOUT": "60"},
            "shorter than GUNICORN_TIMEOUT=120",
        ),
        ({"APP_MODULE": "my app"}, "APP_MODULE='my app' is not valid"),
        ({"DEV": "yes"}, "DEV='yes' is not valid: use DEV=0"),
        ({"AIOHTTP_PARENT_CRASH_LIMIT": "0"}, "AIOHTTP_PARENT_CRASH_LIMIT=0 is out of range"),
        ({"AIOHTTP_PARENT_CRASH_WINDOW": "1m"}, "AIOHTTP_PARENT_CRASH_WINDOW='1m' is not a whole"),
        ({"GUNICORN_CMD_ARGS": "--name 'x"}, "GUNICORN_CMD_ARGS=.* is not valid: No closing quot"),
        ({"FORWARDED_ALLOW_IPS": "lb.internal"}, "'lb.internal' does not appear to be an IPv4"),
        ({"FORWARDED_ALLOW_IPS": "10.0.0.1/8"}, "10.0.0.1/8 has host bits set"),
        ({"WEB_CONCURRENCY": '"2"'}, "the quotes are part of the value: .* WEB_CONCURRENCY=2"),
    ],
)
def test_invalid_settings_name_the_variable(env, message) -> None:
    with pytest.raises(runtime.ConfigError, match=message.replace("(", r"\(")):
        runtime.Settings.from_env({**APP, **env}, cpus=2)


def test_proxy_read_timeout_follows_a_long_gunicorn_timeout() -> None:
    assert (
        runtime.Settings.from_env({**APP, "GUNICORN_TIMEOUT": "120"}, cpus=1).proxy_read_timeout
        == 120
    )


def test_generated_site_proxies_with_keepalive_and_forwarded_headers() -> None:
    settings = runtime.Settings.from_env(APP, cpus=1)
    http_conf, site = (
        runtime.render_http(settings),
        runtime.render_site(settings, http2_directive=True),
    )
    assert "keepalive 128;" in http_conf
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Upgrade"):
        assert f"proxy_set_header {header}" in site
    assert "proxy_http_version 1.1;" in site
    assert "alias /app/static/;" in site


def test_a_child_template_replaces_one_part_of_the_site(tmp_path: Path, monkeypatch) -> None:
    """README, "The nginx site": a file of the same name in the child's
    template directory replaces the parent's; the rest of the site stays."""
    monkeypatch.setattr(runtime, "CHILD_TEMPLATES", tmp_path)
    (tmp_path / "nginx-proxy.conf.tmpl").write_text(
        "## the child's comment, left out\n"
        "proxy_pass http://aiohttp_app;\n"
        "proxy_buffering off;\n"
        "proxy_read_timeout ${NGINX_PROXY_READ_TIMEOUT}s;\n"
    )
    site = runtime.render_site(runtime.Settings.from_env(APP, cpus=1), http2_directive=True)
    assert site.count("        proxy_buffering off;\n        proxy_read_timeout 60s;\n") == 2
    assert "child's comment" not in site
    assert "alias /app/static/;" in site
    assert "X-Forwarded-For" not in site


def test_a_child_template_with_no_parent_of_its_name_is_refused(
    tmp_path: Path, monkeypatch
) -> None:
    """A misspelt name would otherwise be ignored while serve says it is used."""
    monkeypatch.setattr(runtime, "CHILD_TEMPLATES", tmp_path)
    (tmp_path / "nginx-proxies.conf.tmpl").write_text("proxy_pass http://aiohttp_app;\n")
    with pytest.raises(
        runtime.ConfigError, match=r"nginx-proxies.conf.tmpl replaces none .*nginx-proxy.conf.tmpl"
    ):
        runtime.child_templates()


def test_the_parent_templates_pass_the_build_check(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "CHILD_TEMPLATES", tmp_path)
    runtime.check_tls_templates(runtime.Settings.from_env(APP, cpus=1, check_tls=False))


def test_a_wrong_placeholder_in_a_tls_template_fails_the_build_check(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(runtime, "CHILD_TEMPLATES", tmp_path)
    (tmp_path / "nginx-server-tls.conf.tmpl").write_text("server { listen ${HTTPS_PROT}; }\n")
    settings = runtime.Settings.from_env(APP, cpus=1, check_tls=False)
    runtime.render_site(settings, http2_directive=True)  # unused without TLS
    with pytest.raises(runtime.ConfigError, match=r"\$\{HTTPS_PROT\} is not a value"):
        runtime.check_tls_templates(settings)


def test_the_role_installs_every_nginx_template() -> None:
    listed = yaml.safe_load((ROOT / "roles/aiohttp_app/vars/main.yml").read_text())
    assert sorted(listed["__aiohttp_app_nginx_templates"]) == runtime.parent_templates()


def test_a_template_naming_an_unknown_value_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "CHILD_TEMPLATES", tmp_path)
    (tmp_path / "nginx-locations.conf.tmpl").write_text("location ${STATIC_PATH} {}\n")
    with pytest.raises(runtime.ConfigError, match=r"nginx-locations.conf.tmpl: \$\{STATIC_PATH\}"):
        runtime.render_site(runtime.Settings.from_env(APP, cpus=1), http2_directive=True)


def test_a_reload_takes_the_settings_file_as_it_is_now(tmp_path: Path) -> None:
    """The VM's settings file, rendered from the role's template, read back by
    the new master of a reload: values survive quoting; names the file no
    longer sets go, the rest of the environment stays."""
    import jinja2

    template = (ROOT / "roles/aiohttp_app/templates/etc/default/aiohttp-app.j2").read_text()
    settings = {"APP_MODULE": "hello.app:create_app", "ODD": 'a "quoted" \\ value', "WORKERS": "3"}
    env = jinja2.Environment(keep_trailing_newline=True)
    env.filters["comment"] = lambda text: f"# {text}"  # Ansible's, for the header
    text = env.from_string(template).render(
        ansible_managed="managed", __aiohttp_app_environment=settings
    )
    (tmp_path / "env").write_text(text)
    before = {
        "PATH": "/usr/bin",
        "GONE": "1",
        "WORKERS": "2",
        runtime.ENV_FILE_KEYS: "GONE WORKERS",
    }
    after = runtime.reloaded_environ(before, str(tmp_path / "env"))
    assert {k: after[k] for k in settings} == settings
    assert "GONE" not in after
    assert after["PATH"] == "/usr/bin"
    assert after[runtime.ENV_FILE_KEYS].split() == sorted([*settings, runtime.ENV_FILE_KEYS])


def test_a_reload_without_the_settings_file_keeps_the_environment(tmp_path: Path) -> None:
    env = {"WORKERS": "2", runtime.ENV_FILE_KEYS: "WORKERS"}
    assert runtime.reloaded_environ(env, str(tmp_path / "missing")) == env


def programs(tmp_path: Path, user: str) -> Path:
    (tmp_path / "worker.conf").write_text(f"[program:worker]\ncommand=sleep 600\nuser={user}\n")
    return tmp_path


@pytest.mark.parametrize("user", ["root", "0"])
def test_program_of_another_user_is_named_when_not_root(tmp_path: Path, user: str) -> None:
    (warning,) = runtime.foreign_program_users(programs(tmp_path, user), uid=10001)
    assert re.match(rf"supervisord \[program:worker\] in .* has user={user},", warning)
    assert "it runs as uid 10001" in warning


@pytest.mark.parametrize(("user", "uid"), [("root", 0), ("10001", 10001), ("nobody-here", 10001)])
def test_program_user_is_fine_when_supervisord_can_honour_it(
    tmp_path: Path, user: str, uid: int
) -> None:
    # As root it may switch; as that uid it need not; an unknown name is supervisord's to name.
    assert runtime.foreign_program_users(programs(tmp_path, user), uid=uid) == []


@pytest.mark.parametrize(
    ("command", "spec"),
    [
        (
            "gunicorn main:create_app --bind 0.0.0.0:$PORT -k aiohttp.GunicornWebWorker",
            "main:create_app",
        ),
        ("gunicorn --bind=0.0.0.0:$PORT 'server:make_app()'", "server:make_app"),
        ("python -m aiohttp.web -H 0.0.0.0 -P $PORT app.main:init_func", "app.main:init_func"),
        ("python app.py", ""),
    ],
)
def test_procfile_web_process_names_the_app(tmp_path: Path, command: str, spec: str) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(f"release: python migrate.py db:upgrade\nweb: {command}\n")
    assert runtime.procfile_app(procfile) == spec


def test_missing_procfile_names_nothing(tmp_path: Path) -> None:
    assert runtime.procfile_app(tmp_path / "Procfile") == ""


@pytest.mark.parametrize(
    ("addresses", "networks"),
    [
        ("127.0.0.1,::1", ["127.0.0.1/32", "::1/128"]),
        ("10.0.0.0/8, 192.0.2.7", ["10.0.0.0/8", "192.0.2.7/32"]),
        ("*", ["0.0.0.0/0", "::/0"]),
    ],
)
def test_nginx_trusts_the_peers_forwarded_allow_ips_names(addresses: str, networks) -> None:
    settings = runtime.Settings.from_env({**APP, "FORWARDED_ALLOW_IPS": addresses}, cpus=1)
    http_conf = runtime.render_http(settings)
    for network in networks:
        assert f"set_real_ip_from {network};" in http_conf
        assert f"    {network} 1;" in http_conf
