"""The manual is valid reStructuredText and names only make targets that exist."""

from __future__ import annotations

import re
from pathlib import Path

import docutils.core
import docutils.utils
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst"))]


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_parses_without_warnings(doc: Path) -> None:
    try:
        docutils.core.publish_doctree(
            doc.read_text(), settings_overrides={"report_level": 2, "halt_level": 2}
        )
    except docutils.utils.SystemMessage as exc:
        pytest.fail(f"{doc.name}: {exc}")


def test_make_targets_in_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    named = set(re.findall(r"``make ([a-z][\w-]*)", (ROOT / "README.rst").read_text()))
    named |= set(re.findall(r"^\s+make ([a-z][\w-]*)", (ROOT / "README.rst").read_text(), re.M))
    assert named
    assert named <= targets
