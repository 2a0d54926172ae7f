"""ansible-playbook against a running container, over the docker connection."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def playbook(
    container: str, path: Path, extra_vars: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `path` on `container`. The connection is a host variable, as in a real
    inventory: an extra var would also override delegate_to: localhost tasks."""
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as inventory:
        # As root: the image's default user (the app's) may change nothing.
        inventory.write(
            f"{container} ansible_connection=community.docker.docker ansible_user=root\n"
        )
        inventory.flush()
        return subprocess.run(
            [
                "ansible-playbook",
                "-i",
                inventory.name,
                "-e",
                json.dumps(extra_vars or {}),
                str(path),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1",
            },
            check=False,
            timeout=timeout,
        )
