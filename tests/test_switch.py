"""Container or host is one switch: playbooks/image.yml sets aiohttp_parent_container
and the roles derive the rest; playbooks/vm.yml sets nothing and gets the hosts'
values. Read from Ansible itself: each playbook's roles are loaded on localhost
and one task reports what their variables come to (no role task runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# variable: (host, image). What playbooks/image.yml used to set itself.
EXPECTED = {
    "aiohttp_app_service_manage": (True, False),
    "aiohttp_nginx_service_manage": (True, False),
    "supervisord_service_manage": (True, False),
    "aiohttp_parent_run_dir": ("/run/aiohttp-parent", "/tmp/aiohttp-parent"),
    "aiohttp_app_run_dir_mode": ("0755", "1777"),
    "aiohttp_nginx_pid_file": ("/run/nginx.pid", "/tmp/aiohttp-parent/nginx.pid"),
    "aiohttp_nginx_daemon": (True, False),
    "aiohttp_nginx_error_log": ("/var/log/nginx/error.log", "/proc/1/fd/2"),
    "aiohttp_nginx_temp_path": ("/var/lib/nginx", "/tmp/aiohttp-parent/nginx"),
    "aiohttp_nginx_temp_path_mode": ("0755", "1777"),
    "supervisord_control_socket": (True, False),
    "supervisord_pidfile": ("/run/supervisord.pid", "/tmp/aiohttp-parent/supervisord.pid"),
    "supervisord_nodaemon": (False, True),
    "supervisord_logfile": ("/var/log/supervisor/supervisord.log", "/dev/null"),
    "supervisord_childlogdir": ("/var/log/supervisor", "/tmp"),
    "python_venv_pip_no_cache": (False, True),
    "python_venv_strip": (False, True),
}
# The container role's cleanup in an image ends with the run dir's leftovers.
IMAGE_CLEANUP_TAIL = [
    {"path": "/tmp/aiohttp-parent", "patterns": "*.pid"},
    {"path": "/tmp/aiohttp-parent/nginx", "patterns": "*"},
]


def play_vars(book: str, tmp_path: Path) -> dict:
    """The variables above as the playbook's roles define them, on localhost."""
    play = yaml.safe_load((ROOT / "playbooks" / f"{book}.yml").read_text())[0]
    names = [*EXPECTED, *(["__container_cleanup"] if book == "image" else [])]
    report = tmp_path / "vars.json"
    play |= {
        "hosts": "all",
        "gather_facts": False,
        "vars_files": [str(ROOT / "playbooks" / f) for f in play.get("vars_files", [])],
        "tasks": [
            {
                "name": "Report the variables",
                "ansible.builtin.copy": {
                    "content": "{{ {" + ", ".join(f"'{n}': {n}" for n in names) + "} | to_json }}",
                    "dest": str(report),
                },
                "tags": ["report"],
            }
        ],
    }
    play.pop("post_tasks", None)
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([play]))
    result = subprocess.run(
        [
            "ansible-playbook",
            *("-i", "localhost,", "-c", "local", "--tags", "report"),
            *("-e", f"ansible_python_interpreter={sys.executable}"),
            *("-e", "aiohttp_app_module=a:b"),
            str(playbook),
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return play_vars("image", tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return play_vars("vm", tmp_path_factory.mktemp("vm"))


def test_the_image_play_sets_only_the_switch() -> None:
    play = yaml.safe_load((ROOT / "playbooks/image.yml").read_text())[0]
    assert play["vars"] == {"aiohttp_parent_container": True}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_an_image_gets_the_container_values(image: dict, name: str) -> None:
    assert image[name] == EXPECTED[name][1]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_host_gets_the_defaults(vm: dict, name: str) -> None:
    assert vm[name] == EXPECTED[name][0]


def test_an_image_cleans_up_the_run_dir(image: dict) -> None:
    assert image["__container_cleanup"][-2:] == IMAGE_CLEANUP_TAIL
