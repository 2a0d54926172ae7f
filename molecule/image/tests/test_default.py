"""The provisioned image: runtime installed, the generated nginx config valid."""

import pytest

LIB = "/usr/local/lib/aiohttp-parent"


@pytest.mark.parametrize(
    "command",
    [
        "serve",
        "healthcheck",
        "run-gunicorn",
        "run-nginx",
        "entrypoint",
        "onbuild",
    ],
)
def test_runtime_command_installed(host, command: str) -> None:
    assert host.file(f"{LIB}/{command}").mode == 0o755


def test_runtime_config_renders_valid_nginx(host) -> None:
    configure = host.run(f"APP_MODULE=hello.app:app python3 {LIB}/runtime.py configure")
    assert configure.rc == 0, configure.stderr
    check = host.run("nginx -t")
    assert check.rc == 0, check.stderr


def test_app_user_exists_without_login(host) -> None:
    assert host.user("app").shell == "/usr/sbin/nologin"


def test_image_is_clean(host) -> None:
    assert host.run("find /var/lib/apt/lists /root/.cache -mindepth 1").stdout == ""


def test_app_user_has_the_image_uid(host) -> None:
    # The image's USER is this number (packer.pkr.hcl reads the contract).
    assert (host.user("app").uid, host.group("app").gid) == (10001, 10001)


def test_no_setuid_or_setgid_files(host) -> None:
    assert host.run("find / -xdev -type f -perm /6000").stdout == ""
