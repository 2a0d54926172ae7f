"""Static checks of the shell launchers that are Jinja templates (rendered first)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted(
    (ROOT / "roles/aiohttp_app/templates/usr/local/lib/aiohttp-parent").glob("run-*.j2")
)


def render(template: Path, service_manage: bool) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: f"# {text}"
    env.filters["bool"] = bool
    role = ROOT / "roles/aiohttp_app"
    # What the play gives the role: python_venv's defaults (python_venv_path) first.
    context = yaml.safe_load((ROOT / "roles/python_venv/defaults/main.yml").read_text())
    context |= yaml.safe_load((role / "defaults/main.yml").read_text())
    context |= yaml.safe_load((role / "vars/main.yml").read_text())  # constants: paths
    context |= {"ansible_managed": "Ansible managed", "aiohttp_app_service_manage": service_manage}
    # A value that names other variables, as Ansible resolves it.
    context["__aiohttp_app_venv"] = env.from_string(context["__aiohttp_app_venv"]).render(context)
    return env.from_string(template.read_text()).render(context)


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
