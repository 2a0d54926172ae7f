"""The entrypoint: `python`, arbitrary commands, and replaced entrypoints."""

from __future__ import annotations

import json

import pytest

from tests import docker

AWKWARD = ["two words", "it's", 'say "hi"', "$HOME", "*", "", "new\nline", "--flag=a b", "ünï"]
PRINT_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"


@pytest.fixture(scope="module")
def child(build_child) -> str:
    tag, _ = build_child({"requirements.txt": ""}, name="entrypoint")
    return tag


def test_python_runs_the_venv_interpreter(child: str) -> None:
    out = docker.run(child, "python", "-c", "import sys; print(sys.prefix)").stdout
    assert out.strip() == "/var/www/venv"


def test_default_command_is_python(child: str) -> None:
    result = docker.run(child, opts=["-i"], check=True)
    assert result.returncode == 0  # the interactive interpreter read EOF and exited


def test_python_arguments_survive_intact(child: str) -> None:
    out = docker.run(child, "python", "-c", PRINT_ARGV, *AWKWARD).stdout
    assert json.loads(out) == AWKWARD


def test_arbitrary_command_arguments_survive_intact(child: str) -> None:
    out = docker.run(child, "/var/www/venv/bin/python", "-c", PRINT_ARGV, *AWKWARD).stdout
    assert json.loads(out) == AWKWARD


@pytest.mark.parametrize(
    "cmd",
    [
        ["python", "-c", "import os; print(os.getpid())"],
        ["sh", "-c", "echo $$"],
    ],
    ids=["python", "command"],
)
def test_command_is_execed_as_pid_1(child: str, cmd: list[str]) -> None:
    assert docker.run(child, *cmd).stdout.strip() == "1"


def test_exit_status_is_passed_through(child: str) -> None:
    assert docker.run(child, "python", "-c", "raise SystemExit(7)").returncode == 7


def test_invalid_dev_at_run_time_is_refused(child: str) -> None:
    result = docker.run(child, "true", opts=["--env=DEV=yes"])
    assert result.returncode == 64
    assert "DEV='yes' is not valid" in result.stderr


def test_child_entrypoint_replaces_the_default(build_child) -> None:
    script = '#!/bin/sh\necho "child entrypoint" >&2\nexec /usr/local/lib/aiohttp-parent/entrypoint "$@"\n'
    tag, _ = build_child({"requirements.txt": "", "bin/entrypoint.sh": script}, name="ownentry")
    result = docker.run(tag, "python", "-c", PRINT_ARGV, "a b")
    assert result.stderr.strip() == "child entrypoint"
    assert json.loads(result.stdout) == ["a b"]


def test_child_entrypoint_instruction_can_call_the_default(build_child, parent_image: str) -> None:
    wrapper = '#!/bin/sh\necho "wrapped" >&2\nexec /app/bin/entrypoint.sh "$@"\n'
    dockerfile = f'FROM {parent_image}\nENTRYPOINT ["/app/bin/wrapper.sh"]\nCMD ["python"]\n'
    files = {"requirements.txt": "", "bin/wrapper.sh": wrapper, "Dockerfile": dockerfile}
    tag, _ = build_child(files, name="ownentryinstr")
    result = docker.run(tag, "python", "-c", "import sys; print(sys.prefix)")
    assert result.stderr.strip() == "wrapped"
    assert result.stdout.strip() == "/var/www/venv"
