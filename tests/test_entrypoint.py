"""The entrypoint: `python`, arbitrary commands, `versions`, a child's own
bin/entrypoint.sh, and a checkout mounted over /app (DEV=1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests import docker, http
from tests.service import RUN_DIR, served

ROOT = Path(__file__).resolve().parent.parent
PINS = yaml.safe_load((ROOT / "roles/python_venv/defaults/main.yml").read_text())

GETUSER = "import getpass; print(getpass.getuser())"
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


def test_default_command_in_a_child_naming_an_app_says_how_to_serve(child: str) -> None:
    # `docker run IMAGE` without -i: python reads /dev/null and exits 0, silently.
    app = ["--env=APP_MODULE=hello:app"]
    note = (
        "aiohttp-parent: note: the command is python (the image's CMD) with no script: it "
        "serves nothing. To serve APP_MODULE=hello:app, give the command serve"
    )
    assert note in docker.run(child, opts=app, check=True).stderr
    # Not for a script, an interactive session, or a child that names no app.
    assert "note:" not in docker.run(child, "python", "-c", "", opts=app, check=True).stderr
    assert "note:" not in docker.run(child, opts=["-i", *app], check=True).stderr
    assert "note:" not in docker.run(child, check=True).stderr


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


def test_commands_get_a_home_they_can_write(child: str) -> None:
    # The app user's home is /nonexistent: gunicorn (24 and later) run as given
    # logs an error when it cannot create its control socket there.
    out = docker.run(child, "sh", "-c", 'touch "$HOME/written" && echo "$HOME"', check=True)
    assert out.stdout.strip() == f"{RUN_DIR}/home"
    out = docker.run(child, "sh", "-c", 'echo "$HOME"', opts=["--user", "0"], check=True)
    assert out.stdout.strip() == "/root"


@pytest.mark.parametrize(
    ("user", "name"), [("", "app"), ("12345:0", "app"), ("0", "root")], ids=["app", "any", "root"]
)
def test_commands_know_their_user_s_name(child: str, user: str, name: str) -> None:
    # An arbitrary --user has no passwd entry: getpass.getuser() (asyncpg's
    # default database user) would fail.
    opts = [f"--user={user}"] if user else []
    out = docker.run(child, "python", "-c", GETUSER, opts=opts, check=True)
    assert out.stdout.strip() == name


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


def test_child_entrypoint_runs_once_and_its_marker_does_not_reach_the_app(build_child) -> None:
    script = '#!/bin/sh\necho "child entrypoint" >&2\nexec /usr/local/lib/aiohttp-parent/entrypoint "$@"\n'
    tag, _ = build_child({"requirements.txt": "", "bin/entrypoint.sh": script}, name="onceentry")
    result = docker.run(tag, "env")
    assert result.stderr.count("child entrypoint") == 1
    assert "AIOHTTP_PARENT_ENTRYPOINT" not in result.stdout


def test_child_entrypoint_that_never_calls_back_keeps_the_process(build_child) -> None:
    script = '#!/bin/sh\necho "own: $*"\n'
    tag, _ = build_child({"requirements.txt": "", "bin/entrypoint.sh": script}, name="ownonly")
    result = docker.run(tag, "serve", "now")
    assert (result.returncode, result.stdout) == (0, "own: serve now\n")


def test_non_executable_child_entrypoint_is_skipped_with_a_warning(
    build_child, parent_image: str
) -> None:
    # /app is root's: the child's own RUN needs USER root, and hands back after.
    user = docker.inspect(parent_image)["Config"]["User"]
    dockerfile = (
        f"FROM {parent_image}\nUSER root\nRUN chmod a-x /app/bin/entrypoint.sh\nUSER {user}\n"
    )
    files = {"requirements.txt": "", "bin/entrypoint.sh": "#!/bin/sh\necho never\n"}
    tag, _ = build_child({**files, "Dockerfile": dockerfile}, name="noexecentry")
    result = docker.run(tag, "python", "-c", "print('ran')")
    assert result.stdout == "ran\n"
    assert "/app/bin/entrypoint.sh is not executable" in result.stderr


def test_versions_reports_the_pinned_stack(child: str) -> None:
    lines = docker.run(child, "versions").stdout.splitlines()
    for package in ("aiohttp", "gunicorn", "uvloop"):
        assert f"{package} {PINS[f'python_venv_{package}_version']}" in lines


def test_dev_checkout_mounted_over_app_serves_and_reloads(
    build_child, parent_image: str, tmp_path: Path
) -> None:
    """README, "Development": build with DEV=1, mount the checkout (no bin/) over /app."""
    hello = ROOT / "examples/hello"
    checkout = tmp_path / "checkout"
    shutil.copytree(hello, checkout)
    app = {str(p.relative_to(hello)): p.read_text() for p in hello.rglob("*") if p.is_file()}
    app["Dockerfile"] = f"FROM {parent_image}\nENV APP_MODULE=hello.app:create_app\n"
    tag, _ = build_child(app, build_args={"DEV": "1"}, name="devmount")
    for path in [checkout, *checkout.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the `app` user reads the checkout
    assert not (checkout / "bin").exists()
    with served(tag, opts=[f"--volume={checkout}:/app"]) as svc:
        assert http.request(svc.http, "/").text == "Hello from aiohttp-parent\n"
        code = checkout / "hello/app.py"
        code.write_text(code.read_text().replace("Hello from aiohttp-parent", "Reloaded"))
        assert docker.wait_for(
            lambda: http.answers(svc.http) and http.request(svc.http, "/").text == "Reloaded\n",
            timeout=20,
        )
