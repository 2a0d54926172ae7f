"""Runtime settings are declared once (SETTINGS in runtime.py): every variable
the image reads is declared there, README.rst's table is generated from the
declarations, and every reader of DEV agrees on what it accepts."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import contract

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("role_docs", ROOT / "scripts/role_docs.py")
role_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(role_docs)
runtime = role_docs.load_runtime()
DECLARED = {s.name: s for s in runtime.SETTINGS}
ENTRYPOINT = ROOT / "roles/container/files/lib/entrypoint"
PATHS_SH = ROOT / "roles/container/templates/usr/local/lib/aiohttp-parent/paths.sh.j2"

# How the image's files read a variable: Python, shell, supervisord's %(ENV_X)s.
READS = re.compile(
    r"""environ(?:\.get)?[(\[]\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|env\.get\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"|\$\{?([A-Z][A-Z0-9_]*)"
    r"|%\(ENV_([A-Z][A-Z0-9_]*)\)s"
)
# Read by the image but set by itself, or documented elsewhere in README.rst.
NOT_SETTINGS = {
    "AIOHTTP_PARENT_APP_ARGS",  # serve -> the app's argv
    "AIOHTTP_PARENT_ENTRYPOINT",  # the entrypoint -> a child's bin/entrypoint.sh -> it again
    "AIOHTTP_PARENT_VARIANT",  # the image's ENV (Packer): onbuild or base, for `serve`
    "BUILD_CA_CERTIFICATES",  # a build arg ("Build arguments and environment")
    "HOME",  # the user's; serve replaces one it cannot write ("Non-root and locked down")
    "LOGNAME",  # the user's; the entrypoint sets USER and it for a user with no name (same)
    "USER",
    "VIRTUAL_ENV",  # the image's ENV
    # The uvicorn-gunicorn images' settings, read only to say what to set instead.
    "GUNICORN_CONF",
    "MODULE_NAME",
    "PRE_START_PATH",
    "VARIABLE_NAME",
}


# The roles whose files the image runs read environment variables.
ROLES = ("aiohttp_app", "container", "supervisord", "aiohttp_nginx")


def test_the_roles_read_exist() -> None:
    assert [role for role in ROLES if not (ROOT / "roles" / role).is_dir()] == []


def variables_read() -> set[str]:
    files = [
        p
        for role in ROLES
        for p in (ROOT / "roles" / role).glob("**/*")
        if p.is_file()
        and p.parent.name not in ("meta", "defaults", "tasks", "vars", "handlers")
        and p.name != "README.md"
        and p.suffix != ".tmpl"  # nginx templates: their ${NAME}s are runtime.py's values
    ]
    return {
        name
        for path in files
        for match in READS.finditer(path.read_text())
        for name in match.groups()
        if name
    }


def test_readme_settings_table_is_generated() -> None:
    readme = (ROOT / "README.rst").read_text()
    assert readme == role_docs.render_readme(readme), "run: python3 scripts/role_docs.py"


def test_every_variable_the_image_reads_is_declared() -> None:
    settings = runtime.Settings.from_env({"APP_MODULE": "a:b"}, cpus=1, check_tls=False)
    internal = set(runtime.supervisor_env(settings)) | NOT_SETTINGS
    undeclared = variables_read() - internal - set(DECLARED)
    assert not undeclared, f"declare them in runtime.SETTINGS: {sorted(undeclared)}"


@pytest.mark.parametrize("setting", runtime.SETTINGS, ids=list(DECLARED))
def test_declaration_is_documented_and_its_default_valid(setting) -> None:
    assert setting.doc.endswith(".")
    assert setting.parse.describe()
    if isinstance(setting.default, str) and setting.default:
        assert setting.parse(setting.name, setting.default) == setting.default


def test_settings_fill_every_field_once() -> None:
    fields = [s.field for s in runtime.SETTINGS if s.field]
    assert len(fields) == len(set(fields))
    assert set(fields) <= {f.name for f in dataclasses.fields(runtime.Settings)}


@pytest.mark.parametrize("value", ["0", "1", "", "yes", "true", "on", "off", "2", "01"])
def test_dev_means_the_same_to_the_entrypoint_and_the_runtime(value: str, tmp_path: Path) -> None:
    """Both accept 0 and 1 (unset or empty: 0) and refuse the rest with one message."""
    # The entrypoint as installed: next to the contract it sources.
    entrypoint = tmp_path / "entrypoint"
    shutil.copy(ENTRYPOINT, entrypoint)
    (tmp_path / "paths.sh").write_text(contract.render(PATHS_SH, container=True))
    shell = subprocess.run(
        ["sh", str(entrypoint), "true"],
        env={**os.environ, "DEV": value},
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        runtime.Settings.from_env({"APP_MODULE": "a:b", "DEV": value}, cpus=1, check_tls=False)
        message = ""
    except runtime.ConfigError as exc:
        message = str(exc)
    assert (shell.returncode == 0) == (message == "")
    assert message in shell.stderr
