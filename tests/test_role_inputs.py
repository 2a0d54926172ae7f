"""Bad role inputs fail before any task touches the host, naming the variable."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests import ansible, docker

ROOT = Path(__file__).resolve().parent.parent


def play(
    tmp_path: Path,
    role: str,
    variables: dict,
    host: str = "no-such-container-aiohttp-parent",
    play_vars: dict | None = None,
) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Bad input",
                    "hosts": "all",
                    "gather_facts": False,
                    "vars": play_vars or {},
                    "roles": [{"role": role, **variables}],
                }
            ]
        )
    )
    return ansible.playbook(host, playbook, timeout=300)


@pytest.mark.parametrize(
    ("role", "variables", "message"),
    [
        (
            "aiohttp_nginx",
            {"aiohttp_nginx_worker_connections": "many"},
            "aiohttp_nginx_worker_connections",
        ),
        (
            "aiohttp_nginx",
            {"aiohttp_nginx_error_log_level": "loud"},
            "aiohttp_nginx_error_log_level",
        ),
        ("supervisord", {"supervisord_programs": "worker"}, "supervisord_programs"),
        (
            "python_venv",
            {"python_venv_python_version": "three"},
            r"python_venv_python_version=three is not valid",
        ),
        (
            "python_venv",
            {"python_venv_aiohttp_version": "3.0.0"},
            r"asks for aiohttp==3\.0\.0, but the lock requirements\.lock does not pin it "
            r"\(aiohttp==[0-9.]+\)\. After changing a pin",
        ),
        (
            "aiohttp_app",
            {"aiohttp_app_module": "hello.app:app", "aiohttp_app_env": {"PORT": 70000}},
            "PORT=70000 is out of range",
        ),
        (
            "aiohttp_app",
            {"aiohttp_app_module": "hello.app:app", "aiohttp_app_env": {"WEB_CONCURRENCY": "many"}},
            r"WEB_CONCURRENCY='+many'+ is not a whole number",
        ),
        ("aiohttp_app", {"aiohttp_app_module": ""}, "aiohttp_app_module is empty"),
    ],
    ids=[
        "worker-connections",
        "log-level",
        "programs",
        "python-format",
        "pin-not-locked",
        "port",
        "workers",
        "no-module",
    ],
)
def test_invalid_value_fails_naming_the_variable(
    tmp_path: Path, role: str, variables: dict, message: str
) -> None:
    result = play(tmp_path, role, variables)
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr)  # the YAML callback may double quotes
    assert "UNREACHABLE" not in result.stdout  # failed before any task reached the host


@pytest.mark.parametrize(
    ("role", "old", "new"),
    [
        ("python_venv", "python_venv_path", "aiohttp_parent_venv"),
        ("aiohttp_app", "aiohttp_app_dir", "aiohttp_parent_app_dir"),
        ("aiohttp_app", "aiohttp_app_venv", "aiohttp_parent_venv"),
    ],
)
def test_replaced_variable_fails_naming_its_successor(
    tmp_path: Path, role: str, old: str, new: str
) -> None:
    """An inventory of the earlier layout (role arguments are refused by the
    spec already): a second venv or app dir must not appear silently."""
    result = play(tmp_path, role, {}, play_vars={old: "/srv/elsewhere"})
    assert result.returncode != 0
    assert f"{old} is no longer read: set {new} instead" in result.stdout
    assert "UNREACHABLE" not in result.stdout


def test_python_version_the_distribution_lacks(tmp_path: Path, parent_image: str) -> None:
    # A real Debian host with Python and no package lists: the check must refresh and ask them.
    with docker.container(parent_image, "sleep", "infinity") as name:
        result = play(tmp_path, "python_venv", {"python_venv_python_version": "3.99"}, host=name)
    assert result.returncode != 0
    assert "python_venv_python_version=3.99: this distribution" in result.stdout
    assert "has no package python3.99-venv" in result.stdout
