"""The venv holds the pinned web stack on the distribution's Python."""

from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).parents[3] / "roles/python_venv"
PINS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())


@pytest.mark.parametrize("package", ["aiohttp", "gunicorn", "uvloop"])
def test_pinned_package(host, package: str) -> None:
    out = host.check_output(f"/var/www/venv/bin/pip show {package}")
    assert f"Version: {PINS[f'python_venv_{package}_version']}" in out


def test_the_venv_keeps_the_lock_it_was_installed_from(host) -> None:
    lock = (ROLE / "files/requirements.lock").read_text()
    assert host.file("/var/www/venv/requirements.lock").content_string == lock


def test_pip_trusts_the_system_store(host) -> None:
    assert host.file("/var/www/venv/pip.conf").contains("cert = /etc/ssl/certs/ca-certificates.crt")


def test_venv_is_owned_by_root(host) -> None:
    assert host.file("/var/www/venv/bin/python").user == "root"
