"""Create the tool venv from its lock and unpack the Ansible collections it needs.

Every package comes from the lock, hash-checked (`make lock` writes it).
Galaxy cannot be reached, so the collections come from the `ansible` wheel on
PyPI, itself locked with its hash: only the collections named below are
extracted (a few MB instead of ~500 MB).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import venv
import zipfile
from pathlib import Path

COLLECTIONS = ("community/docker", "ansible/posix")


def run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True)


def extract_collections(pip: Path, lock: Path, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run(pip, "download", "--quiet", "--no-deps", "--require-hashes", "--dest", tmp, "-r", lock)
        (wheel,) = Path(tmp).glob("ansible-*.whl")
        prefixes = tuple(f"ansible_collections/{c}/" for c in COLLECTIONS)
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(prefixes)]
            archive.extractall(dest, members)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("venv", type=Path)
    parser.add_argument("lock", type=Path, help="the tool venv's lock")
    parser.add_argument("collections_lock", type=Path, help="the lock of the ansible wheel")
    args = parser.parse_args()

    # clear=True empties a symlink's target, then fails on the link itself:
    # a venv shared that way would be lost for every user of it.
    if args.venv.is_symlink():
        sys.exit(f"tool-venv: {args.venv} is a symlink; refusing to empty what it points to")
    venv.EnvBuilder(with_pip=True, clear=True).create(args.venv)
    pip = args.venv / "bin" / "pip"
    run(
        pip,
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--require-hashes",
        "-r",
        args.lock,
    )
    extract_collections(pip, args.collections_lock, args.venv / "collections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
