"""Child images: every ONBUILD step and every way it can fail, built for real,
with BuildKit (what users get) and then with the classic builder."""

from __future__ import annotations

import io
import json
import re
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest
import yaml

from tests import docker, http
from tests.service import served

pytestmark = pytest.mark.both_builders

REQS = {"requirements.txt": ""}
ASYNCIO_DEBUG = "import asyncio; print(asyncio.new_event_loop().get_debug())"


def test_onbuild_steps_are_logged_in_the_build_output(build_child) -> None:
    # BuildKit shows them only with --progress=plain, each line prefixed "#N 0.20 ".
    _, result = build_child({**REQS, "bin/setup.sh": "true\n"}, name="log")
    lines = docker.build_log(result).splitlines()
    for line in (
        "aiohttp-parent onbuild: building with DEV=0",
        "aiohttp-parent onbuild: source bin/setup.sh",
        "aiohttp-parent onbuild: requirements.txt lists nothing to install",
        "aiohttp-parent onbuild: check the nginx configuration (nginx -t)",
        "aiohttp-parent onbuild: done",
    ):
        assert line in lines


def test_child_without_container_files_builds(build_child) -> None:
    tag, _ = build_child(REQS, name="bare")
    assert docker.run(tag, "python", "-c", "print('ok')").stdout.strip() == "ok"


def test_container_files_are_copied_into_root(build_child) -> None:
    tag, _ = build_child(
        {**REQS, "container/files/etc/nginx/conf.d/child.conf": "# from the child\n"},
        name="files",
    )
    out = docker.run(tag, "cat", "/etc/nginx/conf.d/child.conf").stdout
    assert out == "# from the child\n"


def test_build_context_is_copied_to_app(build_child) -> None:
    # With a checkout's .git, which a .dockerignore would leave out: said.
    files = {**REQS, "myapp/__init__.py": "NAME = 'child'\n", ".git/HEAD": "ref: refs/heads/main\n"}
    tag, result = build_child(files, name="context")
    assert (
        docker.run(tag, "python", "-c", "import myapp; print(myapp.NAME)").stdout.strip() == "child"
    )
    warning = (
        r"aiohttp-parent onbuild: warning: /app/\.git \(\S+\) came with COPY \. : list it in a"
    )
    assert re.search(warning, docker.build_log(result)), docker.build_log(result)


@pytest.mark.parametrize("dev", ["0", "1"])
def test_setup_sh_is_sourced_and_sees_dev(build_child, dev: str) -> None:
    setup = 'echo "dev=$DEV" > /etc/child-setup\nexport FROM_SETUP=yes\n'
    # The export reaching cleanup.sh proves setup.sh was sourced, not executed.
    cleanup = 'echo "setup-export=$FROM_SETUP" >> /etc/child-setup\n'
    tag, _ = build_child(
        {**REQS, "bin/setup.sh": setup, "bin/cleanup.sh": cleanup},
        build_args={"DEV": dev},
        name="setup",
    )
    assert docker.run(tag, "cat", "/etc/child-setup").stdout == f"dev={dev}\nsetup-export=yes\n"


def layers(tag: str) -> list[str]:
    return docker.inspect(tag)["RootFS"]["Layers"]


PIP_STEP = "aiohttp-parent onbuild: pip install -r requirements.txt"


def test_code_change_reuses_the_dependencies_layer(build_child) -> None:
    # README, "Two parts": only requirements*.txt, constraints*.txt, bin/ and
    # container/ key the layer of the dependencies; COPY . /app comes after it.
    # A comment no earlier run wrote: BuildKit may hold several cache records
    # for the same steps of an identical (reproducible) parent, and need not
    # pick the same one twice. This test compares layers its own builds made.
    requirements = f"six==1.16.0\n# {uuid.uuid4().hex}\n"
    files = {"requirements.txt": requirements, "app.py": "A = 1\n"}
    first, _ = build_child(files, name="cache", cache=True)
    _, again = build_child(files, name="cache", cache=True)
    assert "aiohttp-parent onbuild:" not in again.output
    code = f"A = {uuid.uuid4().hex!r}\n"  # in no earlier cache
    tag, rebuilt = build_child({**files, "app.py": code}, name="cache", cache=True)
    lines = docker.build_log(rebuilt).splitlines()
    assert PIP_STEP not in lines
    assert "aiohttp-parent onbuild: done" in lines
    # Every layer but the last two (COPY . /app and the second RUN) is the first build's.
    assert layers(tag)[:-2] == layers(first)[:-2]
    assert docker.run(tag, "cat", "/app/app.py").stdout == code
    assert docker.run(tag, "python", "-c", "import six").returncode == 0


@pytest.mark.parametrize(
    "change",
    ["requirements.txt", "bin/setup.sh", "container/files/etc/child.conf"],
)
def test_change_to_what_dependencies_need_reruns_them(build_child, change: str) -> None:
    files = {
        "requirements.txt": "six==1.16.0\n",
        "bin/setup.sh": "true\n",
        "container/files/etc/child.conf": "# child\n",
    }
    build_child(files, name="rerun", cache=True)
    changed = {**files, change: files[change] + f"# {uuid.uuid4().hex}\n"}
    _, rebuilt = build_child(changed, name="rerun", cache=True)
    lines = docker.build_log(rebuilt).splitlines()
    assert lines.index(PIP_STEP) < lines.index("aiohttp-parent onbuild: done")


def app_files(tag: str) -> set[str]:
    out = docker.run(tag, "find", "/app", "-mindepth", "1", "-printf", "%P %m\n").stdout
    return set(out.splitlines())


def test_app_dir_holds_the_build_context_and_nothing_else(build_child) -> None:
    # The first part's COPYs bring Dockerfile and requirements*.txt along with
    # bin/ and container/ (README, "Two parts"); none stays where it landed.
    files = {
        "requirements.txt": "",
        "requirements-dev.txt": "",
        "constraints.txt": "",
        "bin/setup.sh": "true\n",
        "container/files/etc/child.conf": "# child\n",
        "myapp/__init__.py": "",
    }
    tag, _ = build_child(files, name="appdir")
    expected = {
        "Dockerfile 644",
        "requirements.txt 644",
        "requirements-dev.txt 644",
        "constraints.txt 644",
        "bin 755",
        "bin/entrypoint.sh 755",  # the parent's
        "bin/setup.sh 755",
        "container 755",
        "container/files 755",
        "container/files/etc 755",
        "container/files/etc/child.conf 644",
        "myapp 755",
        "myapp/__init__.py 644",
    }
    assert app_files(tag) == expected


def test_child_without_bin_or_container_gets_neither(build_child) -> None:
    tag, _ = build_child(REQS, name="appdir-bare")
    assert app_files(tag) == {
        "Dockerfile 644",
        "requirements.txt 644",
        "bin 755",
        "bin/entrypoint.sh 755",
    }


def test_workdir_is_app(build_child) -> None:
    tag, _ = build_child(REQS, name="workdir")
    assert docker.run(tag, "pwd").stdout.strip() == "/app"


def test_requirements_are_installed_into_the_venv(build_child) -> None:
    tag, _ = build_child({"requirements.txt": "six==1.16.0\n"}, name="reqs")
    out = docker.run(tag, "python", "-c", "import six; print(six.__version__, six.__file__)").stdout
    assert out.startswith("1.16.0 /var/www/venv/")


@pytest.mark.parametrize(("dev", "installed"), [("0", False), ("1", True)])
def test_requirements_dev_only_with_dev_1(build_child, dev: str, installed: bool) -> None:
    tag, _ = build_child(
        {**REQS, "requirements-dev.txt": "six==1.16.0\n"}, build_args={"DEV": dev}, name="devreqs"
    )
    result = docker.run(tag, "python", "-c", "import six")
    assert (result.returncode == 0) is installed


SETUP_PY = (
    "from setuptools import setup\nsetup(name='childpkg', version='1.0', py_modules=['childmod'])\n"
)
PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "childpkg"
version = "1.0"

[tool.setuptools]
py-modules = ["childmod"]
"""


@pytest.mark.parametrize(
    "project",
    [{"setup.py": SETUP_PY}, {"pyproject.toml": PYPROJECT}],
    ids=["setup.py", "pyproject.toml"],
)
def test_project_is_installed_editable_without_deps(build_child, project: dict) -> None:
    files = {**REQS, **project, "childmod.py": "WHERE = __file__\n"}
    tag, _ = build_child(files, name="project")
    out = docker.run(
        tag,
        "sh",
        "-c",
        "cd / && python -c 'import childmod; print(childmod.WHERE)' && pip show childpkg",
    ).stdout
    assert out.startswith("/app/childmod.py\n")  # editable: the code in /app is what runs
    assert "Name: childpkg" in out


# Poetry before 2.0 keeps the metadata in [tool.poetry]; this one has a src/ layout,
# whose code cannot run from /app without being installed.
POETRY = """\
[tool.poetry]
name = "childpkg"
version = "1.0"
description = ""
authors = ["A Child <child@example.org>"]
packages = [{include = "childmod", from = "src"}]

[build-system]
requires = ["poetry-core>=1.0.8"]
build-backend = "poetry.core.masonry.api"
"""


def test_poetry_project_is_installed_and_poetry_apps_are_not(build_child) -> None:
    files = {**REQS, "pyproject.toml": POETRY, "src/childmod/__init__.py": "WHERE = __file__\n"}
    tag, result = build_child(files, name="poetry")
    assert "pip install --no-deps -e . (pyproject.toml)" in docker.build_log(result)
    out = docker.run(tag, "sh", "-c", "cd / && python -c 'import childmod; print(childmod.WHERE)'")
    assert out.stdout == "/app/src/childmod/__init__.py\n", out.stderr

    # An app that says it is none, and one whose name poetry-core would not
    # find a package for (it would fail the install): both run from /app.
    said = POETRY.replace('version = "1.0"\n', 'version = "1.0"\npackage-mode = false\n')
    unnamed = POETRY.replace('name = "childpkg"', 'name = "my-service"').replace(
        'packages = [{include = "childmod", from = "src"}]\n', ""
    )
    for app, why in [
        (said, "it says package-mode = false"),
        (unnamed, "its Poetry project has no packages, and no my_service/ or src/my_service/"),
    ]:
        tag, result = build_child({**files, "pyproject.toml": app}, name="poetryapp")
        log = docker.build_log(result)
        assert "pip install --no-deps -e ." not in log
        assert f"pyproject.toml is not installed ({why}): the app runs from /app as it is" in log
        assert "childpkg" not in docker.run(tag, "pip", "list").stdout


def test_project_dependency_left_out_of_requirements_is_a_warning(build_child) -> None:
    # A warning, not an error: requirements.txt may hold a stand-in under
    # another name (psycopg2-binary for psycopg2).
    declares = PYPROJECT.replace(
        'version = "1.0"\n', 'version = "1.0"\ndependencies = ["six", "aiohttp<3"]\n'
    )
    tag, result = build_child({**REQS, "pyproject.toml": declares, "childmod.py": ""}, name="out")
    lines = docker.build_log(result).splitlines()
    assert (
        "aiohttp-parent onbuild: warning: childpkg 1.0 requires six, which is not installed."
        in lines
    )
    assert any(
        line.startswith(
            "aiohttp-parent onbuild: warning: childpkg 1.0 has requirement aiohttp<3, but you have"
        )
        for line in lines
    ), lines
    assert any("--no-deps, so that requirements.txt alone says" in line for line in lines), lines
    assert docker.run(tag, "python", "-c", "import childmod").returncode == 0


def test_pyproject_that_is_not_toml_fails_the_build_naming_it(build_child) -> None:
    files = {**REQS, "pyproject.toml": "[project\nname = 'childpkg'\n"}
    tag, result = build_child(files, check=False, name="badtoml")
    assert result.returncode != 0
    log = docker.build_log(result)
    assert "aiohttp-parent onbuild: error: pyproject.toml is not valid TOML: " in log, log
    assert "Traceback" not in log
    assert not docker.image_exists(tag)


def test_tool_only_pyproject_is_not_installed(build_child) -> None:
    tag, result = build_child(
        {**REQS, "pyproject.toml": "[tool.ruff]\nline-length = 90\n"}, name="toolcfg"
    )
    assert "aiohttp-parent onbuild: done" in docker.build_log(result).splitlines()
    assert "pip install --no-deps -e ." not in result.output
    assert "childpkg" not in docker.run(tag, "pip", "list").stdout


def test_cleanup_sh_is_sourced(build_child) -> None:
    tag, _ = build_child(
        {**REQS, "bin/cleanup.sh": "rm -rf /app/docs\n", "docs/a.txt": "x"}, name="cleanup"
    )
    assert docker.run(tag, "test", "-e", "/app/docs").returncode == 1


def wheel(name: str, version: str) -> bytes:
    """A minimal pure-Python wheel of module NAME, for --find-links tests."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{dist}/RECORD"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return buffer.getvalue()


SIX = {"requirements.txt": "six==1.16.0\n"}
SETUP_ENV = "export FROM_SETUP=yes PIP_INDEX_URL=https://pypi.org/simple/\n"
CLEANUP_SEES = 'echo "cleanup sees FROM_SETUP=$FROM_SETUP"\n'
DEFERRED = {
    "editable": (
        {"requirements.txt": "six==1.16.0\n-e .\n", "setup.py": SETUP_PY, "childmod.py": ""},
        "requirements.txt line 2: '-e .' installs from a path in the build context",
        "import six, childmod",
    ),
    "local-path": (
        {"requirements.txt": "./pkg\n", "pkg/setup.py": SETUP_PY, "pkg/childmod.py": ""},
        "requirements.txt line 1: './pkg' installs from a path in the build context",
        "import childmod",
    ),
    "include": (
        {
            "requirements.txt": "-r requirements/base.txt\n",
            "requirements/base.txt": "six==1.16.0\n",
        },
        "requirements.txt line 1: '-r requirements/base.txt' is a file this step does not have",
        "import six",
    ),
    "find-links": (
        {"requirements.txt": "--find-links ./wheels\nlocalwheel==1.0\n"},
        "requirements.txt line 1: '--find-links ./wheels' is a path this step does not have",
        "import localwheel",
    ),
    "setup-needs-the-app": (
        {**SIX, "bin/setup.sh": ". myapp/env.sh\n", "myapp/env.sh": SETUP_ENV},
        "it failed (exit status 1) with only requirements*.txt, constraints*.txt, bin/ and container/",
        "import os; assert os.path.exists('/app/myapp/env.sh')",
    ),
    "setup-writes-the-app": (
        {**SIX, "bin/setup.sh": "echo generated > /app/generated.txt\n" + SETUP_ENV},
        "it changed /app/generated.txt, which COPY . /app may then overwrite",
        "assert open('/app/generated.txt').read() == 'generated\\n'",
    ),
}


@pytest.mark.parametrize("case", DEFERRED, ids=list(DEFERRED))
def test_what_needs_the_whole_context_is_deferred_and_installed(build_child, case: str) -> None:
    files, why, check = DEFERRED[case]
    files = {**files, "bin/cleanup.sh": CLEANUP_SEES}
    if case == "find-links":
        files["wheels/localwheel-1.0-py3-none-any.whl"] = wheel("localwheel", "1.0")
    tag, result = build_child(files, name="deferred")
    log = docker.build_log(result)
    deferrals = [line for line in log.splitlines() if "onbuild: deferring" in line]
    assert len(deferrals) == 1, log
    assert why in deferrals[0]
    assert "aiohttp-parent onbuild: done" in log.splitlines()
    assert docker.run(tag, "python", "-c", check).returncode == 0
    if any(SETUP_ENV in str(content) for content in files.values()):
        # What bin/setup.sh exported reaches the second part: pip and cleanup.sh.
        assert "cleanup sees FROM_SETUP=yes" in log.splitlines()
        assert "Looking in indexes: https://pypi.org/simple/" in log


def test_pip_failure_in_the_first_part_fails_the_build_there(build_child) -> None:
    # A self-contained requirements file that pip cannot install is no reason
    # to wait for the rest of the build context: the build stops at once.
    files = {"requirements.txt": "this-package-does-not-exist-aiohttp-parent==0.0.1\n"}
    tag, result = build_child({**files, "app.py": ""}, check=False, name="pipfail")
    log = docker.build_log(result)
    assert result.returncode != 0
    assert "'pip install -r requirements.txt' failed" in log
    assert "onbuild: deferring" not in log
    assert "onbuild dependencies" in result.output  # the first part's RUN failed
    assert not docker.image_exists(tag)


SELF_CONTAINED = [
    "six==1.16.0 --hash=sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926\n",
    'six; python_version >= "3.8"\n',
    "pkg @ https://example.org/pkg-1.0.tar.gz\n",
    "-e git+https://example.org/pkg.git#egg=pkg\n",
    "-i https://pypi.org/simple\n--extra-index-url=https://example.org/simple\nsix\n",
    "-c constraints.txt\nsix  # the constraints file is in the first part\n",
]
NEEDS_CONTEXT = {
    "pkg @ file:///app/pkg\n": "'pkg @ file:///app/pkg' installs from a path",
    "dist/pkg-1.0-py3-none-any.whl\n": "'dist/pkg-1.0-py3-none-any.whl' installs from a path",
    "-e ./src/lib\n": "'-e ./src/lib' installs from a path",
    "six \\\n  ; python_version > '3'\n-e .\n": "line 3: '-e .'",
    "--find-links=file:///app/wheels\nsix\n": "'--find-links file:///app/wheels' is a path",
    "-c requirements/constraints.txt\n": "'-c requirements/constraints.txt' is a file",
}


def needs_context(image: str, requirements: str, env: tuple[str, ...] = ()) -> str:
    """What the first part's check says of REQUIREMENTS, next to a constraints.txt."""
    script = (
        'cd "$(mktemp -d)" && printf %s "$1" > requirements.txt && : > constraints.txt'
        " && python /usr/local/lib/aiohttp-parent/requirements.py needs-context requirements.txt"
    )
    opts = [f"--env={e}" for e in env]
    result = docker.run(image, "sh", "-c", script, "sh", requirements, opts=opts)
    assert result.returncode == 0, result.output
    return result.stdout.strip()


@pytest.mark.parametrize("requirements", SELF_CONTAINED)
def test_self_contained_requirements_install_in_the_first_part(
    parent_image: str, requirements: str
) -> None:
    assert needs_context(parent_image, requirements) == ""


@pytest.mark.parametrize("requirements", NEEDS_CONTEXT)
def test_requirements_that_need_the_context_are_named(parent_image: str, requirements: str) -> None:
    assert NEEDS_CONTEXT[requirements] in needs_context(parent_image, requirements)


def test_requirements_file_is_read_in_the_encoding_its_mark_names(parent_image: str) -> None:
    # PowerShell's `pip freeze > requirements.txt` writes UTF-16, which pip reads.
    script = (
        "cd \"$(mktemp -d)\" && python -c \"open('requirements.txt', 'w', encoding='utf-16')"
        ".write('six\\n-e .\\n')\" && python /usr/local/lib/aiohttp-parent/requirements.py"
        " needs-context requirements.txt"
    )
    result = docker.run(parent_image, "sh", "-c", script)
    assert result.stdout.strip() == (
        "requirements.txt line 2: '-e .' installs from a path in the build context"
    ), result.output


def test_pip_configuration_it_cannot_read_is_said_in_pips_words(parent_image: str) -> None:
    # A CRLF bin/setup.sh would export "1\r"; the build names such a file first.
    script = (
        'cd "$(mktemp -d)" && echo six > requirements.txt'
        " && python /usr/local/lib/aiohttp-parent/requirements.py needs-context requirements.txt"
    )
    opts = ["--env=PIP_DISABLE_PIP_VERSION_CHECK=maybe"]
    result = docker.run(parent_image, "sh", "-c", script, opts=opts)
    assert result.returncode == 1
    assert "aiohttp-parent onbuild: error: pip cannot read its configuration: " in result.stderr
    assert "maybe" in result.stderr
    assert "Traceback" not in result.stderr


def test_pip_settings_that_need_the_context_are_named(parent_image: str) -> None:
    why = needs_context(parent_image, "six\n", env=("PIP_FIND_LINKS=./wheels",))
    assert why == "PIP_FIND_LINKS=./wheels is a path this step does not have"


def test_constraints_and_setup_exports_apply_in_the_first_part(build_child) -> None:
    files = {
        "requirements.txt": "-c constraints.txt\nsix\n",
        "constraints.txt": "six==1.15.0\n",
        "bin/setup.sh": SETUP_ENV,
        "bin/cleanup.sh": CLEANUP_SEES,
    }
    tag, result = build_child(files, name="constraints")
    log = docker.build_log(result)
    assert "onbuild: deferring" not in log
    assert "Looking in indexes: https://pypi.org/simple/" in log
    assert "cleanup sees FROM_SETUP=yes" in log.splitlines()
    code = "import six; print(six.__version__)"
    assert docker.run(tag, "python", "-c", code).stdout.strip() == "1.15.0"


# --- environment ------------------------------------------------------------


@pytest.mark.parametrize(
    ("build_args", "run_env", "debug"),
    [
        ({"DEV": "0"}, {}, "False"),
        ({"DEV": "1"}, {}, "True"),
        ({"DEV": "0", "PYTHONASYNCIODEBUG": "1"}, {}, "True"),
        ({"DEV": "1", "PYTHONASYNCIODEBUG": "0"}, {}, "False"),
        ({"DEV": "0"}, {"PYTHONASYNCIODEBUG": "1"}, "True"),
        ({"DEV": "1"}, {"PYTHONASYNCIODEBUG": "0"}, "False"),
        ({"DEV": "0"}, {"PYTHONASYNCIODEBUG": "0"}, "False"),
    ],
    ids=[
        "dev0",
        "dev1",
        "dev0-arg-on",
        "dev1-arg-off",
        "dev0-run-on",
        "dev1-run-off",
        "dev0-run-0",
    ],
)
def test_asyncio_debug_follows_dev_unless_overridden(
    build_child, build_args, run_env, debug
) -> None:
    tag, _ = build_child(REQS, build_args=build_args, name="asynciodebug")
    opts = [f"--env={k}={v}" for k, v in run_env.items()]
    assert docker.run(tag, "python", "-c", ASYNCIO_DEBUG, opts=opts).stdout.strip() == debug


def test_child_env_can_override_asyncio_debug(build_child, parent_image: str) -> None:
    dockerfile = f"FROM {parent_image}\nENV PYTHONASYNCIODEBUG=1\n"
    tag, _ = build_child({**REQS, "Dockerfile": dockerfile}, name="envdebug")
    assert docker.run(tag, "python", "-c", ASYNCIO_DEBUG).stdout.strip() == "True"


DONT_WRITE = "import sys; print(sys.dont_write_bytecode)"


def test_dont_write_bytecode_is_on_by_default(build_child) -> None:
    tag, _ = build_child(REQS, name="bytecode")
    assert docker.run(tag, "python", "-c", DONT_WRITE).stdout.strip() == "True"


def test_child_env_can_turn_bytecode_writing_back_on(build_child, parent_image: str) -> None:
    # Python reads any non-empty value as "on", so the override is an empty value.
    dockerfile = f"FROM {parent_image}\nENV PYTHONDONTWRITEBYTECODE=\n"
    tag, _ = build_child({**REQS, "Dockerfile": dockerfile}, name="bytecode-on")
    assert docker.run(tag, "python", "-c", DONT_WRITE).stdout.strip() == "False"


def test_dev_is_in_the_environment(build_child) -> None:
    tag, _ = build_child(REQS, build_args={"DEV": "1"}, name="devenv")
    assert "DEV=1" in docker.inspect(tag)["Config"]["Env"]


def test_example_child_builds_and_imports_its_app(example_image: str) -> None:
    code = "import asyncio, hello.app as m; print(type(asyncio.run(m.create_app())).__name__)"
    assert docker.run(example_image, "python", "-c", code).stdout.strip() == "Application"


# --- behind a TLS-intercepting proxy: a CA for the build only ----------------------
# These children build on a parent that keeps no extra CA (`make image`'s default).

PROXY_REQS = {"requirements.txt": "six==1.16.0\n"}
IMPORT_SIX = "import six; print(six.__version__)"


def ca_fingerprints(pem: str) -> list[str]:
    """One base64 line from the middle of each certificate: found only where a copy is."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END", pem, re.S)
    return [block.split()[len(block.split()) // 2] for block in blocks]


def test_proxied_child_fails_clearly_without_the_build_ca(build_child_without_ca, proxy_ca) -> None:
    _, result = build_child_without_ca(PROXY_REQS, check=False, name="noca")
    log = docker.build_log(result)
    assert result.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert "'pip install -r requirements.txt' failed" in log
    assert "--build-arg BUILD_CA_CERTIFICATES=" in log


@pytest.fixture(scope="module")
def proxied_child(build_child_without_ca, proxy_ca: str) -> str:
    files = {
        **PROXY_REQS,
        "bin/setup.sh": "python -c 'import os; print(os.environ[\"PIP_CERT\"])' > /etc/setup-cert\n",
    }
    tag, _ = build_child_without_ca(
        files, build_args={"BUILD_CA_CERTIFICATES": proxy_ca}, name="withca"
    )
    return tag


def test_proxied_child_builds_with_the_build_ca_arg(proxied_child: str) -> None:
    assert docker.run(proxied_child, "python", "-c", IMPORT_SIX).stdout.strip() == "1.16.0"
    # bin/setup.sh ran with the temporary bundle too.
    assert docker.run(proxied_child, "cat", "/etc/setup-cert").stdout.startswith("/tmp/")


def test_build_ca_is_in_no_file_of_the_child(proxied_child: str, proxy_ca: str) -> None:
    needles = ca_fingerprints(proxy_ca)
    grep = [
        "grep",
        "-rlF",
        *[f"-e{n}" for n in needles],
        "/etc",
        "/usr/local/share",
        "/tmp",
        "/app",
        "/var/www",
        "/root",
    ]
    # As root: the image's own user may not read /root or /etc/ssl/private.
    result = docker.run(proxied_child, *grep, opts=["--user", "0"])
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")


def test_build_ca_is_in_no_layer_of_the_child(
    proxied_child: str, proxy_ca: str, tmp_path: Path
) -> None:
    needles = [n.encode() for n in ca_fingerprints(proxy_ca)]
    archive = tmp_path / "child.tar"
    docker.docker("save", "-o", str(archive), proxied_child)
    with tarfile.open(archive) as image:
        layers = [m for m in image.getmembers() if m.name.endswith("layer.tar")]
        assert layers
        for member in layers:
            with tarfile.open(fileobj=image.extractfile(member)) as layer:
                for entry in layer:
                    if entry.isfile():
                        data = layer.extractfile(entry).read()
                        assert not any(n in data for n in needles), f"{member.name}: {entry.name}"


def test_build_ca_arg_is_recorded_in_history_as_readme_says(
    proxied_child: str, proxy_ca: str
) -> None:
    history = docker.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", proxied_child)
    assert ca_fingerprints(proxy_ca)[0] in history.stdout


def test_invalid_build_ca_fails_the_build_naming_the_arg(build_child) -> None:
    _, result = build_child(
        REQS, build_args={"BUILD_CA_CERTIFICATES": "not a certificate"}, check=False, name="badca"
    )
    assert result.returncode != 0
    assert "the build arg BUILD_CA_CERTIFICATES is not valid PEM" in docker.build_log(result)


def test_base_child_trusts_a_build_secret_with_buildkit(
    parent_image_without_ca: str, proxy_ca: str, tmp_path: Path
) -> None:
    """README, "Extra CA certificates": a -base child, the CA as a BuildKit secret."""
    (tmp_path / "requirements.txt").write_text(PROXY_REQS["requirements.txt"])
    (tmp_path / "proxy-ca.pem").write_text(proxy_ca)
    (tmp_path / ".dockerignore").write_text("proxy-ca.pem\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {parent_image_without_ca}-base\n"
        "USER root\n"
        "COPY requirements.txt /app/requirements.txt\n"
        "RUN --mount=type=secret,id=build_ca_certificates \\\n"
        "    /usr/local/lib/aiohttp-parent/with-build-ca pip install --no-input -r /app/requirements.txt\n"
        "USER 10001:10001\n"
    )
    tag = f"{docker.unique('aiohttp-parent-test/secretca')}:latest"
    try:
        secret = {"build_ca_certificates": tmp_path / "proxy-ca.pem"}
        docker.build(tmp_path, tag, builder="buildkit", secrets=secret)
        assert docker.run(tag, "python", "-c", IMPORT_SIX).stdout.strip() == "1.16.0"
        grep = [
            "grep",
            "-rlF",
            f"-e{ca_fingerprints(proxy_ca)[0]}",
            "/etc",
            "/usr/local/share",
            "/tmp",
            "/app",
        ]
        # As root, as above: every file readable, no error taken for a miss.
        result = docker.run(tag, *grep, opts=["--user", "0"])
        assert (result.returncode, result.stdout, result.stderr) == (1, "", "")
        history = docker.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag).stdout
        assert ca_fingerprints(proxy_ca)[0] not in history
    finally:
        docker.docker("rmi", "-f", tag, check=False)


# --- a child that replaces the parent's pinned stack -------------------------------

PINS = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "roles/python_venv/defaults/main.yml").read_text()
)
HELLO_APP = """
import aiohttp
from aiohttp import web


async def hello(request):
    return web.Response(text=f"hello from {aiohttp.__version__}\\n")


app = web.Application()
app.router.add_get("/", hello)
"""
# Older than 3.13.4, whose worker made its loop in a way uvloop 0.22 and
# later refuse; with wheels for Python 3.11 and 3.13 (bookworm, trixie).
OLDER_AIOHTTP = "3.10.11"


def test_replacing_the_pinned_aiohttp_is_reported_and_it_serves(
    build_child_without_ca, proxy_ca: str
) -> None:
    pinned = PINS["python_venv_aiohttp_version"]
    tag, result = build_child_without_ca(
        {"requirements.txt": f"aiohttp=={OLDER_AIOHTTP}\n", "hello.py": HELLO_APP},
        build_args={"BUILD_CA_CERTIFICATES": proxy_ca},
        name="oldaiohttp",
    )
    assert (
        f"aiohttp-parent onbuild: warning: requirements.txt replaced aiohttp {pinned} "
        f"with {OLDER_AIOHTTP} (the parent pins {pinned})"
    ) in docker.build_log(result).splitlines()
    lines = docker.run(tag, "versions").stdout.splitlines()
    assert f"aiohttp {OLDER_AIOHTTP} (the parent pins {pinned}: replaced by the child)" in lines
    assert f"gunicorn {PINS['python_venv_gunicorn_version']}" in lines
    # The label is the parent's and cannot follow; `versions` is what runs.
    assert docker.inspect(tag)["Config"]["Labels"]["aiohttp-parent.aiohttp.version"] == pinned
    code = "import aiohttp, json; print(json.dumps(aiohttp.__version__))"
    assert json.loads(docker.run(tag, "python", "-c", code).stdout) == OLDER_AIOHTTP
    with served(tag, env={"APP_MODULE": "hello:app"}) as service:
        assert http.request(service.http, "/").text == f"hello from {OLDER_AIOHTTP}\n"


# --- the child runs unprivileged ---------------------------------------------------


def test_onbuild_steps_run_as_root_and_the_child_as_the_app_user(
    build_child, parent_image: str
) -> None:
    # bin/setup.sh may install system packages (root); the image then runs as app.
    setup = "id -un > /etc/child-setup-user\n"
    tag, _ = build_child({**REQS, "bin/setup.sh": setup}, name="user")
    assert docker.run(tag, "cat", "/etc/child-setup-user").stdout == "root\n"
    assert docker.run(tag, "id", "-un").stdout == "app\n"
    parent_user = docker.inspect(parent_image)["Config"]["User"]
    assert docker.inspect(tag)["Config"]["User"] == parent_user


def test_child_run_apt_get_needs_user_root(build_child, parent_image: str) -> None:
    # The child's own instructions run as the app user: apt says why it fails,
    # and the documented recipe (README, "Non-root and locked down") works.
    apt = "RUN apt-get install --no-install-recommends --yes nginx\n"  # no lists needed
    _, failed = build_child({**REQS, "Dockerfile": f"FROM {parent_image}\n{apt}"}, check=False)
    assert failed.returncode != 0
    assert "are you root?" in docker.build_log(failed)
    user = docker.inspect(parent_image)["Config"]["User"]
    recipe = f"FROM {parent_image}\nUSER root\n{apt}USER {user}\n"
    tag, _ = build_child({**REQS, "Dockerfile": recipe}, name="apt")
    assert docker.run(tag, "id", "-u").stdout == f"{user.split(':')[0]}\n"
