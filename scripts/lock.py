"""Every lock file of the project, regenerated from its top-level pins (`make lock`).

    lock.py            regenerate every lock in LOCKS with uv (needs PyPI)
    lock.py --check    exit 1, naming each package, where a lock and its pins disagree

A lock pins every package its top-level pins pull in, with the sha256 of every
wheel and sdist on PyPI, for every platform and Python from 3.11 on
(`uv pip compile --universal --generate-hashes`): the image is built for
bookworm (3.11) and trixie (3.13), amd64 and arm64, and pip installs it with
--require-hashes. Each lock starts with the top-level pins it was made from,
so a test can tell a stale lock without PyPI (tests/test_lock.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLE_DEFAULTS = "roles/python_venv/defaults/main.yml"
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
HEADER = "# top-level pins: "


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def file_pins(path: str) -> Callable[[], list[str]]:
    """The requirement lines of a requirements file (comments and blanks left out)."""

    def read() -> list[str]:
        lines = (line.split("#", 1)[0].strip() for line in (ROOT / path).read_text().splitlines())
        return [line for line in lines if line]

    return read


def image_pins() -> list[str]:
    """python_venv_packages as the role renders it from its own defaults: the
    role's pins are the one source; no second list is kept by hand."""
    defaults = yaml.safe_load((ROOT / ROLE_DEFAULTS).read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return [env.from_string(spec).render(defaults) for spec in defaults["python_venv_packages"]]


@dataclass(frozen=True)
class Lock:
    path: str  # the lock file, relative to the repository
    source: str  # where its top-level pins live (for messages)
    pins: Callable[[], list[str]]
    uv_args: tuple[str, ...] = ("--universal", "--python-version", "3.11")


# One line per lock: `make lock` regenerates each, tests/test_lock.py checks
# each against its pins. Another venv's lock is one more line here (its pins
# in a requirements file, read by file_pins), then `make lock`, then install
# it with `pip install --require-hashes -r LOCK`.
LOCKS = (
    # The image's venv (roles/python_venv installs it with --require-hashes).
    Lock("roles/python_venv/files/requirements.lock", ROLE_DEFAULTS, image_pins),
    # The tool venv (scripts/tool-venv.py).
    Lock("requirements-tools.lock", "requirements-tools.txt", file_pins("requirements-tools.txt")),
    # The sbom role's generators, in a venv of their own in the image; the
    # role installs the lock with --no-deps, so what is not emitted is not
    # installed (roles/sbom/files/requirements.txt says why each).
    Lock(
        "roles/sbom/files/requirements.lock",
        "roles/sbom/files/requirements.txt",
        file_pins("roles/sbom/files/requirements.txt"),
        (
            "--universal",
            "--python-version",
            "3.11",
            *(f"--no-emit-package={p}" for p in ("lxml", "xmlschema", "elementpath", "tzdata")),
        ),
    ),
    # checkov, for tests/test_deploy.py, in a venv of its own (.cache/checkov):
    # its many pins would fight the tool venv's.
    Lock(
        "tests/requirements-checkov.lock",
        "tests/requirements-checkov.txt",
        file_pins("tests/requirements-checkov.txt"),
    ),
    # The ansible wheel scripts/tool-venv.py unpacks collections from: that
    # wheel alone, never installed, so without its dependencies.
    Lock(
        "requirements-collections.lock",
        "requirements-collections.txt",
        file_pins("requirements-collections.txt"),
        ("--no-deps", "--python-version", "3.11"),
    ),
)


def pinned(lines: list[str]) -> dict[str, str]:
    """canonical name -> version of every `name==version` line."""
    found = {}
    for line in lines:
        if m := PIN.match(line):
            found[canonical(m[1])] = m[2]
    return found


def entries(lock_text: str) -> list[tuple[str, str, str]]:
    """(canonical name, version, marker) of every package in a lock."""
    found = []
    for line in lock_text.splitlines():
        if m := PIN.match(line):
            marker = line.partition(";")[2].rstrip(" \\").strip() if ";" in line else ""
            found.append((canonical(m[1]), m[2], marker))
    return found


def header_pins(lock_text: str) -> list[str]:
    return [line[len(HEADER) :] for line in lock_text.splitlines() if line.startswith(HEADER)]


def problems(lock: Lock) -> list[str]:
    """Why LOCK does not match its pins, one line per package; empty if it does."""
    path = ROOT / lock.path
    if not path.is_file():
        return [f"{lock.path} is missing: run make lock"]
    text = path.read_text()
    want, made_from = pinned(lock.pins()), pinned(header_pins(text))
    locked: dict[str, set[str]] = {}
    for name, version, _ in entries(text):
        locked.setdefault(name, set()).add(version)
    found = []
    for name in sorted(set(want) | set(made_from)):
        if name not in made_from:
            found.append(f"{name}: {lock.source} pins {want[name]}, {lock.path} lacks it")
        elif name not in want:
            found.append(
                f"{name}: {lock.path} locks {made_from[name]}, {lock.source} no longer pins it"
            )
        elif want[name] != made_from[name] or want[name] not in locked.get(name, set()):
            have = ", ".join(sorted(locked.get(name, set()))) or "nothing"
            found.append(f"{name}: {lock.source} pins {want[name]}, {lock.path} locks {have}")
    return [f"{p} (run make lock)" for p in found]


def generate(lock: Lock) -> None:
    pins = lock.pins()
    with tempfile.TemporaryDirectory() as tmp:
        src, dest = Path(tmp, "pins.in"), Path(tmp, "lock.txt")
        src.write_text("".join(f"{p}\n" for p in pins))
        command = ["uv", "pip", "compile", str(src), "--generate-hashes", "--quiet", "--no-header"]
        subprocess.run(
            [*command, *lock.uv_args, "--output-file", str(dest)],
            check=True,
            # uv reads no pip.conf: it trusts the system store, which holds a
            # proxy's CA when there is one.
            env={"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", **os.environ},
        )
        out = dest.read_text()
    # uv names the temporary input in its annotations: name the source instead.
    out = out.replace(f"-r {src}", f"-r {lock.source}")
    head = [
        f"# Generated by `make lock` (scripts/lock.py: uv pip compile {' '.join(lock.uv_args)})",
        f"# from the pins in {lock.source}.",
        "# Edit the pins there, never this file; pip reads it with --require-hashes.",
    ]
    (ROOT / lock.path).write_text(
        "\n".join(head + [HEADER + p for p in pins]) + "\n" + out.rstrip("\n") + "\n"
    )
    print(f"lock: {lock.path}: {len(entries(out))} packages from {len(pins)} pins")


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = [p for lock in LOCKS for p in problems(lock)]
        print("\n".join(found) or f"lock: {len(LOCKS)} locks match their pins", file=sys.stderr)
        return 1 if found else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 64
    for lock in LOCKS:
        generate(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
