"""The entrypoint, the ONBUILD step runner, and a clean image."""

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "/usr/local/lib/aiohttp-parent/entrypoint",
        "/usr/local/lib/aiohttp-parent/onbuild",
        "/usr/local/lib/aiohttp-parent/with-build-ca",
        "/app/bin/entrypoint.sh",
    ],
)
def test_executable(host, path: str) -> None:
    assert host.file(path).mode == 0o755


def test_services_cannot_start_on_install(host) -> None:
    assert host.run("/usr/sbin/policy-rc.d").rc == 101


def test_apt_lists_removed(host) -> None:
    assert host.run("find /var/lib/apt/lists -mindepth 1").stdout == ""
