"""The sbom role: its generators in their own venv, hash-checked, and an SBOM
of every Debian package and both venvs at the contract's path."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[3]
CONTRACT = yaml.safe_load((ROOT / "roles/aiohttp_parent/defaults/main.yml").read_text())
SBOM_FILE = CONTRACT["aiohttp_parent_sbom_file"]
SBOM_VENV = CONTRACT["aiohttp_parent_lib_dir"] + "/sbom-venv"


@pytest.fixture(scope="module")
def sbom(host) -> dict:
    return json.loads(host.file(SBOM_FILE).content_string)


def test_the_generators_are_installed_from_the_lock(host) -> None:
    lock = (ROOT / "roles/sbom/files/requirements.lock").read_text()
    assert host.file(f"{SBOM_VENV}/requirements.lock").content_string == lock
    pip = CONTRACT["aiohttp_parent_venv"] + "/bin/pip"
    assert "cyclonedx-bom==" in host.check_output(f"{pip} --python {SBOM_VENV}/bin/python freeze")
    # Installed from outside: no pip of its own.
    assert not host.file(f"{SBOM_VENV}/bin/pip").exists


def test_the_sbom_command_prints_the_written_sbom(host) -> None:
    lib_dir = CONTRACT["aiohttp_parent_lib_dir"]
    assert host.check_output(f"{lib_dir}/sbom") + "\n" == host.file(SBOM_FILE).content_string


def test_every_debian_package_is_listed(host, sbom: dict) -> None:
    installed = set(host.check_output("dpkg-query -W -f '${Package} ${Version}\\n'").splitlines())
    listed = {
        f"{c['name']} {c['version']}"
        for c in sbom["components"]
        if c.get("purl", "").startswith("pkg:deb/")
    }
    assert listed == installed


@pytest.mark.parametrize("venv", [CONTRACT["aiohttp_parent_venv"], SBOM_VENV])
def test_each_venv_is_listed(sbom: dict, venv: str) -> None:
    prop = {"name": "aiohttp-parent:venv", "value": venv}
    assert any(prop in c.get("properties", []) for c in sbom["components"])
