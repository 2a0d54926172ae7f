"""Role READMEs are generated from the argument specs and must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
spec = importlib.util.spec_from_file_location("role_docs", ROOT / "scripts/role_docs.py")
role_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(role_docs)


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_readme_matches_argument_specs(role: Path) -> None:
    assert (role / "README.md").read_text() == role_docs.render(role), (
        "run: python3 scripts/role_docs.py"
    )


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_default_is_specified(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    specified = {name for entry in specs.values() for name in (entry.get("options") or {})}
    assert set(defaults) <= specified
