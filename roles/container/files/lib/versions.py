"""What the venv really runs, against what the parent pinned.

  versions                     the pinned packages: pinned and installed version
  versions snapshot FILE       record every installed distribution in FILE
  versions changes FILE WHAT   report what WHAT (a build step) replaced or
                               removed since FILE, then update FILE

Run by the venv's interpreter (the entrypoint's `versions`, the onbuild
script). The pins are the python_venv role's pins.txt in the venv, with the
oldest version a child may replace each with (`name>=version`): `changes`
exits 1 when a step installed an older one.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PINS = Path(sys.prefix) / "pins.txt"
PREFIX = "aiohttp-parent onbuild:"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def _lines(op: str) -> dict[str, str]:
    """name -> version for every `name<op>version` line of pins.txt."""
    found: dict[str, str] = {}
    if PINS.is_file():
        pattern = rf"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*{re.escape(op)}\s*(\S+)\s*"
        for line in PINS.read_text().splitlines():
            if m := re.fullmatch(pattern, line):
                found[canonical(m[1])] = m[2]
    return found


def pins() -> dict[str, str]:
    return _lines("==")


def minimums() -> dict[str, str]:
    return _lines(">=")


def release(version: str) -> tuple[int, ...]:
    """The release numbers of a version, without trailing zeros (21.2.0 is 21.2):
    20.1.0 -> (20, 1); 21.2rc1 -> (21, 2)."""
    m = re.match(r"\d+(?:\.\d+)*", version)
    numbers = [int(n) for n in m[0].split(".")] if m else []
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def report() -> int:
    now = installed()
    print(f"python {platform.python_version()}")
    for name, pinned in pins().items():
        version = now.get(name)
        if version is None:
            print(f"{name} not installed (the parent pins {pinned})")
        elif version != pinned:
            print(f"{name} {version} (the parent pins {pinned}: replaced by the child)")
        else:
            print(f"{name} {version}")
    return 0


# Imports each module named on its command line, in a Python of its own (a
# broken C extension may crash it), isolated from the app dir: the failures.
_IMPORT = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def unimportable(names: list[str]) -> dict[str, str]:
    """Of these distributions, those whose top-level modules fail to import
    here, with the first error of each."""
    modules = {
        module: canonical(dist)
        for module, dists in metadata.packages_distributions().items()
        for dist in dists
        if canonical(dist) in names and module.isidentifier() and not module.startswith("_")
    }
    if not modules:
        return {}
    done = subprocess.run(
        [sys.executable, "-I", "-c", _IMPORT, *sorted(modules)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        crash = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return dict.fromkeys(names, f"importing it crashed Python ({crash})")
    failed: dict[str, str] = {}
    for module, error in json.loads(done.stdout).items():
        failed.setdefault(modules[module], error)
    return failed


def changes(snapshot: Path, what: str) -> int:
    before: dict[str, str] = json.loads(snapshot.read_text())
    now, pinned = installed(), pins()
    for name, old in sorted(before.items()):
        new = now.get(name)
        if new == old:
            continue
        if name in pinned:
            level, why = "warning", f" (the parent pins {pinned[name]})"
        else:
            level, why = "note", ""
        change = f"removed {name} {old}" if new is None else f"replaced {name} {old} with {new}"
        print(f"{PREFIX} {level}: {what} {change}{why}", file=sys.stderr)
    snapshot.write_text(json.dumps(now))
    too_old = [
        f"{name} {now[name]}: the image needs {name} {oldest} or later"
        for name, oldest in minimums().items()
        if name in now and release(now[name]) < release(oldest)
    ]
    for why in too_old:
        print(f"{PREFIX} error: {what} installed {why}; pin a newer release", file=sys.stderr)
    # A release older than this Python (aiohttp 3.7 imports cgi, gone in 3.13)
    # installs fine and fails only at the first start: said now, and named.
    replaced = sorted(name for name, old in before.items() if now.get(name, old) != old)
    broken = unimportable(replaced) if replaced else {}
    python = f"Python {platform.python_version()}"
    for name, error in sorted(broken.items()):
        print(
            f"{PREFIX} error: {what} installed {name} {now[name]}, which cannot be imported "
            f"on {python}: {error}; pin a release that supports {python}",
            file=sys.stderr,
        )
    return 1 if too_old or broken else 0


def main(argv: list[str]) -> int:
    match argv:
        case []:
            return report()
        case ["snapshot", path]:
            Path(path).write_text(json.dumps(installed()))
            return 0
        case ["changes", path, what]:
            return changes(Path(path), what)
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
