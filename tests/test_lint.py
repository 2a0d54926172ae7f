"""`make lint` as a contributor runs it: no root, no Docker, no apt.

Each test lints a copy of the working tree (tracked and untracked files, as
`git ls-files -co` lists them) as an unprivileged user (`nobody` when the
suite runs as root), with a HOME of its own and a PATH holding only
SYSTEM_COMMANDS and packer: no docker, apt-get, dpkg or sudo to fall back on.
The copies link to this checkout's tool venv and tell make not to rebuild it
(`-o`, and see link_venv): creating one is pip's work alone (scripts/tool-venv.py), which `make
test` has just done, and doing it again as `nobody` would add about a minute
and 500 MB of downloads to each run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
# What make lint takes from the system besides packer: python3 makes the venv
# (and make's $(shell) runs scripts/image_inputs.py with it), touch marks it made,
# sed and tr read galaxy.yml's version and Packer's.
SYSTEM_COMMANDS = ("make", "sh", "bash", "git", "grep", "touch", "python3", "sed", "tr")


@dataclass
class Checkout:
    """A contributor's copy of the repository and the environment they lint in."""

    repo: Path
    home: Path
    bin: Path
    user: pwd.struct_passwd | None  # None: the suite already runs unprivileged

    def lint(self) -> subprocess.CompletedProcess[str]:
        if self.user is not None:
            for path in (self.repo, self.home):
                chown_tree(path, self.user)
        return subprocess.run(
            ["make", "--no-print-directory", "lint", "-o", f"{self.repo}/.venv/.installed"],
            cwd=self.repo,
            env={"HOME": str(self.home), "PATH": str(self.bin), "LANG": "C.UTF-8"},
            user=self.user.pw_uid if self.user else None,
            group=self.user.pw_gid if self.user else None,
            extra_groups=[] if self.user else None,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for p in (path, *path.rglob("*")):  # not into the .venv symlink
        os.lchown(p, user.pw_uid, user.pw_gid)


def copy_work_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() or source.is_symlink():  # not a tracked file deleted since
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    # image_inputs.py (the digest packer validate is given) lists files with git.
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def link_venv(dest: Path) -> None:
    """This checkout's venv, as a directory of links to its entries: should make
    rebuild it after all (the -o failing), tool-venv.py would clear the links
    only, never the venv itself."""
    dest.unlink(missing_ok=True)  # copied if this checkout's .venv is a link
    dest.mkdir()
    for entry in VENV.iterdir():
        (dest / entry.name).symlink_to(entry)


def new_checkout(top: Path, commands: tuple[str, ...]) -> Checkout:
    """A copy of the work tree in a new directory under `top`, whose PATH has
    SYSTEM_COMMANDS plus `commands`."""
    base = Path(tempfile.mkdtemp(dir=top))
    base.chmod(0o755)
    repo, home, bin_dir = base / "repo", base / "home", base / "bin"
    for d in (repo, home, bin_dir):
        d.mkdir()
    for command in (*SYSTEM_COMMANDS, *commands):
        found = shutil.which(command)
        assert found, f"{command} is not installed (packer: make host, or apt-get install packer)"
        (bin_dir / command).symlink_to(found)
    copy_work_tree(repo)
    link_venv(repo / ".venv")
    user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
    return Checkout(repo, home, bin_dir, user)


@pytest.fixture
def checkout() -> Iterator[Callable[..., Checkout]]:
    """Make a Checkout whose PATH has packer, or the commands given."""
    if not (VENV / ".installed").exists():
        pytest.skip(f"no tool venv at {VENV}: run make tools")
    # Not under pytest's tmp_path: its base directory is closed to other users.
    top = Path(os.path.realpath(tempfile.mkdtemp(prefix="aiohttp-parent-lint-")))
    top.chmod(0o755)
    yield lambda commands=("packer",): new_checkout(top, commands)
    shutil.rmtree(top)


def test_lint_passes_without_root_docker_or_apt(checkout: Callable[..., Checkout]) -> None:
    lint = checkout().lint()
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "packer validate" in lint.stdout  # the last step ran


@pytest.mark.parametrize(
    ("name", "content", "linter"),
    [
        ("playbooks/broken.yml", "- name: Broken\n  hosts: [all\n", "yamllint"),
        ("scripts/broken.sh", "#!/bin/sh\nrm -rf $1/\n", "shellcheck"),
    ],
    ids=["yaml", "shell"],
)
def test_lint_fails_on_what_a_linter_rejects(
    checkout: Callable[..., Checkout], name: str, content: str, linter: str
) -> None:
    copy = checkout()
    (copy.repo / name).write_text(content)
    lint = copy.lint()
    output = lint.stdout + lint.stderr
    assert lint.returncode != 0, output
    assert "lint] Error" in lint.stderr, output
    assert f"{linter} " in lint.stdout, output
    assert name in output, output  # the linter names the file
    assert "packer validate" not in lint.stdout, output  # and lint stops there


def test_lint_without_packer_says_what_is_missing(checkout: Callable[..., Checkout]) -> None:
    lint = checkout(commands=()).lint()
    assert lint.returncode != 0
    assert "packer is not on PATH" in lint.stderr, lint.stderr
    assert "Install Packer 1.6.6 or newer" in lint.stderr
    assert "shellcheck " in lint.stdout  # everything else was linted first
