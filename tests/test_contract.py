"""The contract (paths, user, ports) is written once, in the aiohttp_parent
role's defaults: Packer, the roles, shell and Python all read it from there."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import contract

ROOT = contract.ROOT
VALUES = contract.variables(container=False)
# What may name the contract's values itself: the contract, the documentation
# (README.rst, the generated role READMEs, docs/, CHANGELOG, the examples a
# user copies), the tests and molecule scenarios that check what was built,
# and bench/'s classic Dockerfile, the peer the image is compared with.
EXEMPT = (
    "roles/aiohttp_parent/defaults/main.yml",
    "README.rst",
    "CHANGELOG.rst",
    "docs/",
    "examples/",
    "tests/",
    "molecule/",
    "bench/",
)
# Each path-like value, as a pattern that does not match inside a longer name.
LITERALS = {
    name: re.compile(rf"(?<![\w.]){re.escape(VALUES[name])}(?![\w-])")
    for name in (
        "aiohttp_parent_lib_dir",
        "aiohttp_parent_conf_dir",
        "aiohttp_parent_venv",
        "aiohttp_parent_app_dir",
        "aiohttp_parent_host_run_dir",
        "aiohttp_parent_container_run_dir",
        "aiohttp_parent_sbom_file",
    )
}


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    return [
        ROOT / name
        for name in filter(None, listed)
        if not name.startswith(EXEMPT)
        and not name.endswith("/README.md")
        and (ROOT / name).is_file()
    ]


@pytest.mark.parametrize("name", list(LITERALS))
def test_no_file_repeats_a_path_of_the_contract(name: str) -> None:
    found = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [
            f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if LITERALS[name].search(line)
        ]
    assert not found, f"use {name} (or what is rendered from it) instead of:\n" + "\n".join(found)


def load(path: Path, name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("container", [False, True], ids=["host", "image"])
def test_python_reads_the_contract_as_rendered(container: bool, tmp_path: Path) -> None:
    template = ROOT / "roles/aiohttp_app/templates/usr/local/lib/aiohttp-parent/site_paths.py.j2"
    (tmp_path / "site_paths.py").write_text(contract.render(template, container))
    site_paths = load(tmp_path / "site_paths.py", f"site_paths_{container}")
    values = contract.variables(container)
    assert values["aiohttp_parent_run_dir"] == site_paths.RUN_DIR
    assert values["aiohttp_parent_conf_dir"] == site_paths.CONF_DIR
    assert values["aiohttp_parent_app_dir"] == site_paths.APP_DIR
    assert (
        values["aiohttp_parent_http_port"],
        values["aiohttp_parent_https_port"],
    ) == (site_paths.HTTP_PORT, site_paths.HTTPS_PORT)


def test_runtime_from_the_source_tree_reads_the_contract_file() -> None:
    """runtime.py outside an installation (tests, the controller's check) parses
    the defaults file itself: it must agree with a YAML parser."""
    runtime = load(ROOT / "roles/aiohttp_app/files/lib/runtime.py", "runtime")
    source = runtime.source_contract()
    assert VALUES["aiohttp_parent_host_run_dir"] == source.RUN_DIR
    assert VALUES["aiohttp_parent_conf_dir"] == source.CONF_DIR
    assert VALUES["aiohttp_parent_app_dir"] == source.APP_DIR
    assert (
        VALUES["aiohttp_parent_http_port"],
        VALUES["aiohttp_parent_https_port"],
    ) == (source.HTTP_PORT, source.HTTPS_PORT)


def test_shell_reads_the_contract_as_rendered(tmp_path: Path) -> None:
    template = ROOT / "roles/container/templates/usr/local/lib/aiohttp-parent/paths.sh.j2"
    (tmp_path / "paths.sh").write_text(contract.render(template, container=True))
    out = subprocess.run(
        [
            "sh",
            "-c",
            ". ./paths.sh && "
            'echo "$aiohttp_parent_lib_dir $aiohttp_parent_app_dir $aiohttp_parent_venv"',
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    values = contract.variables(container=True)
    assert out == [
        values["aiohttp_parent_lib_dir"],
        values["aiohttp_parent_app_dir"],
        values["aiohttp_parent_venv"],
    ]


def test_packer_reads_plain_values_of_the_contract_file() -> None:
    """Packer's yamldecode takes a Jinja expression literally: every value it
    uses must be plain, and it must not use the switch (false in the file)."""
    template = (ROOT / "packer.pkr.hcl").read_text()
    assert "roles/aiohttp_parent/defaults/main.yml" in template
    raw = yaml.safe_load(contract.DEFAULTS.read_text())
    used = set(re.findall(r"local\.contract\.(\w+)", template))
    assert used, "packer.pkr.hcl no longer reads local.contract"
    assert "aiohttp_parent_container" not in used
    expressions = {name: raw[name] for name in used if "{{" in str(raw[name])}
    assert not expressions, f"Packer would read these literally: {expressions}"


def test_the_images_user_is_not_root() -> None:
    # Packer makes it the image's USER: 0 would run everything as root again.
    uid = VALUES["aiohttp_parent_container_uid"]
    assert isinstance(uid, int), uid
    assert uid > 0, uid
