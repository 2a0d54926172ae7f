"""Packer 1.10 and later: the plugins file, and what Packer 1.6.6 makes of it.

Packer 1.10 no longer bundles the docker builder and the ansible provisioner;
packer/plugins.pkr.hcl declares them for `packer init`. Packer 1.6.6 rejects a
`required_plugins` block, so the file must stay out of the top level, the
only directory 1.6.6 reads for `packer build .`. These checks need the packer
binary and files only: no Docker, no network, no plugin download.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_DIR = ROOT / "packer"
PLUGINS_FILE = PLUGINS_DIR / "plugins.pkr.hcl"
# What packer.pkr.hcl uses: the "docker" source and "docker-tag" post-processor
# come from the plugin named docker, the "ansible" provisioner from ansible.
# A plugin's components are named after its local name in required_plugins.
PLUGINS = {"docker": "github.com/hashicorp/docker", "ansible": "github.com/hashicorp/ansible"}
# Plugin releases the constraints must admit (1.1.0: the first whose docs the
# template's options were checked against; the newest published when this was
# written, a later 1.x) and must not (before 1.1; a next major may drop options).
ADMITTED = ["1.1.0", "1.1.2", "1.1.4", "1.5.0"]
REFUSED = ["1.0.11", "0.0.7", "2.0.0"]


def packer(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # packer validate runs `ansible-playbook --version` for the provisioner.
    env = os.environ | {
        "PATH": f"{ROOT / '.venv/bin'}{os.pathsep}{os.environ['PATH']}",
        "CHECKPOINT_DISABLE": "1",
    }
    return subprocess.run(
        ["packer", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def packer_version() -> tuple[int, ...]:
    if not shutil.which("packer"):
        pytest.skip("packer is not on PATH (make host installs Debian's)")
    line = packer("version").stdout.splitlines()[0]
    match = re.match(r"Packer v(\d+)\.(\d+)\.(\d+)", line)
    assert match, line
    return tuple(int(n) for n in match.groups())


@pytest.fixture(scope="module")
def old_packer(packer_version: tuple[int, ...]) -> None:
    """Packer before required_plugins (1.7): Debian's 1.6.6, with docker and ansible built in."""
    if packer_version >= (1, 7, 0):
        pytest.skip(f"these checks are about Packer 1.6, not {packer_version}")


def required_plugins() -> dict[str, dict[str, str]]:
    """The required_plugins entries: local name -> {attribute: value}.

    A small reader for this file's shape (packer fmt keeps it that way); Packer
    1.6.6 cannot read the block, which is the point of the file's location.
    """
    text = re.sub(r"#.*", "", PLUGINS_FILE.read_text())
    block = re.search(r"required_plugins\s*\{(.*)\}\s*\}", text, re.S)
    assert block, "packer/plugins.pkr.hcl has no required_plugins block"
    return {
        name: dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', body))
        for name, body in re.findall(r"(\w+)\s*=\s*\{([^}]*)\}", block.group(1))
    }


def admits(constraint: str, version: str) -> bool:
    """Packer's version constraint semantics (hashicorp/go-version) for releases:
    comma-separated conditions, all of which must hold."""

    def parse(v: str) -> tuple[int, ...]:
        return tuple(int(n) for n in v.lstrip("v").split("."))

    have = parse(version)
    for condition in constraint.split(","):
        match = re.fullmatch(r"\s*(~>|>=|<=|!=|=|>|<)?\s*(\S+)\s*", condition)
        assert match, f"not a version condition: {condition!r}"
        op, want = match.group(1), parse(match.group(2))
        full = want + (0,) * (len(have) - len(want))
        if op == "~>":
            # Only the last given segment may grow: ~> 1.1 is >= 1.1, < 2.0
            # and ~> 1.1.2 is >= 1.1.2, < 1.2.0.
            ok = have >= full and have[: len(want) - 1] == want[:-1]
        else:
            ok = {
                None: have == full,
                "=": have == full,
                "!=": have != full,
                ">": have > full,
                ">=": have >= full,
                "<": have < full,
                "<=": have <= full,
            }[op]
        if not ok:
            return False
    return True


def test_plugins_file_is_formatted(packer_version: tuple[int, ...]) -> None:
    result = packer("fmt", "-check", "-diff", str(PLUGINS_DIR))
    assert result.returncode == 0, result.stdout + result.stderr


def test_plugins_file_requires_the_docker_and_ansible_plugins() -> None:
    plugins = required_plugins()
    assert {name: p.get("source") for name, p in plugins.items()} == PLUGINS
    for name, attrs in plugins.items():
        # Packer accepts only these two attributes in a requirement.
        assert set(attrs) == {"source", "version"}, name


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_constraint_admits_the_checked_releases(name: str) -> None:
    constraint = required_plugins()[name]["version"]
    assert [v for v in ADMITTED if not admits(constraint, v)] == []
    assert [v for v in REFUSED if admits(constraint, v)] == []


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_constraint_parses_with_packers_own_parser(
    name: str, packer_version: tuple[int, ...], tmp_path: Path
) -> None:
    """required_version and required_plugins' version are both parsed by
    hashicorp/go-version's NewConstraint, so Packer 1.6.6 can judge the syntax
    through required_version: a bad string says "Invalid version constraint"."""
    constraint = required_plugins()[name]["version"]
    probe = tmp_path / "probe.pkr.hcl"
    probe.write_text(f'packer {{\n  required_version = "{constraint}"\n}}\n')
    result = packer("validate", str(probe))
    assert "Invalid version constraint" not in result.stdout + result.stderr


def test_packer_1_6_builds_the_top_level_with_the_plugins_file_present(old_packer: None) -> None:
    assert PLUGINS_FILE.is_file()
    result = packer("validate", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", [PLUGINS_DIR, PLUGINS_FILE], ids=["directory", "file"])
def test_packer_1_6_rejects_the_plugins_file(old_packer: None, target: Path) -> None:
    """Why the file is not at the top level: there 1.6.6 would refuse to build."""
    result = packer("validate", str(target))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'Blocks of type "required_plugins" are not expected here.' in output
    assert output.count("Error:") == 1, output


@pytest.fixture
def fake_packer(tmp_path: Path) -> Path:
    """A packer that reports $FAKE_PACKER_VERSION and logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "packer"
    script.write_text(
        "#!/bin/sh\n"
        'echo "$*" >> "$FAKE_PACKER_LOG"\n'
        'if [ "$1" = version ]; then echo "Packer v$FAKE_PACKER_VERSION"; fi\n'
    )
    script.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(
    ("version", "inits"),
    [("1.6.6", False), ("1.9.4", False), ("1.10.0", True), ("1.11.2", True), ("2.0.0", True)],
)
def test_make_image_runs_packer_init_from_1_10_on(
    fake_packer: Path, tmp_path: Path, version: str, inits: bool
) -> None:
    """The step `make image` runs before `packer build`, alone (no Docker)."""
    log = tmp_path / "packer.log"
    log.touch()
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-s",
            "--eval",
            "plugins: ; @$(PACKER_PLUGINS)",
            "plugins",
        ],
        cwd=ROOT,
        env=os.environ
        | {
            "PATH": f"{fake_packer}{os.pathsep}{os.environ['PATH']}",
            "FAKE_PACKER_VERSION": version,
            "FAKE_PACKER_LOG": str(log),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert calls == (["version", "init packer/"] if inits else ["version"])
    if inits:
        assert f"Packer {version} has no built-in docker and ansible plugins" in result.stdout
