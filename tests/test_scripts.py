"""Static checks of the shell launchers that are Jinja templates (rendered first)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests import contract

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = [
    *sorted((ROOT / "roles/aiohttp_app/templates/usr/local/lib/aiohttp-parent").glob("run-*.j2")),
    # The container role's: the contract for its scripts, and the default bin/entrypoint.sh.
    ROOT / "roles/container/templates/usr/local/lib/aiohttp-parent/paths.sh.j2",
    ROOT / "roles/container/templates/app/bin/entrypoint.sh.j2",
    # The sbom role's `sbom` command.
    ROOT / "roles/sbom/templates/usr/local/lib/aiohttp-parent/sbom.j2",
]


def render(template: Path, service_manage: bool) -> str:
    """As a play renders it: a host's (service_manage) or an image's."""
    roles = ("aiohttp_nginx", "supervisord", "python_venv", "aiohttp_app", "container", "sbom")
    return contract.render(template, container=not service_manage, roles=roles)


@pytest.mark.parametrize("service_manage", [True, False], ids=["vm", "image"])
@pytest.mark.parametrize("template", TEMPLATES, ids=[t.stem for t in TEMPLATES])
def test_launcher_passes_shellcheck(template: Path, service_manage: bool, tmp_path: Path) -> None:
    assert shutil.which("shellcheck"), "shellcheck comes with the tool venv (make tools)"
    script = tmp_path / template.stem
    script.write_text(render(template, service_manage))
    result = subprocess.run(
        ["shellcheck", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
