"""Digest of everything an image build depends on, to skip builds that are up to date.

    image_inputs.py [SETTING ...]                 print the digest
    image_inputs.py --up-to-date TAG [TAG ...] -- [SETTING ...]
                                                  exit 0 if every TAG carries it
    image_inputs.py --source-date-epoch           the time of the last commit that
                                                  changed an input (empty outside git)

The digest covers the tracked and untracked (not ignored) files under the
build's inputs, as they are in the working tree, plus the settings given
(make variables such as the base image, and the CA files' contents).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ("packer.pkr.hcl", "ansible.cfg", "playbooks", "roles", "scripts/host-setup.sh")
LABEL = "aiohttp-parent.build.inputs"


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=check)


def digest(settings: list[str]) -> str:
    listed = git("ls-files", "-co", "--exclude-standard", "--", *INPUTS).stdout.split()
    h = hashlib.sha256()
    for name in sorted(listed):
        path = ROOT / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for setting in settings:
        h.update(setting.encode() + b"\0")
        path = Path(setting)
        if path.is_absolute() and path.is_file():  # a CA file: its content counts
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def label(tag: str) -> str | None:
    proc = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return None
    return (json.loads(proc.stdout)[0]["Config"]["Labels"] or {}).get(LABEL)


def source_date_epoch() -> str:
    """The build's SOURCE_DATE_EPOCH: it moves only when the inputs do, so an
    image stays up to date across commits that leave them alone."""
    proc = git("log", "-1", "--format=%ct", "--", *INPUTS, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def main(argv: list[str]) -> int:
    if argv == ["--source-date-epoch"]:
        print(source_date_epoch())
        return 0
    if argv[:1] == ["--up-to-date"]:
        tags, _, settings = " ".join(argv[1:]).partition(" -- ")
        wanted = digest(settings.split())
        return 0 if all(label(tag) == wanted for tag in tags.split()) else 1
    print(digest(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
