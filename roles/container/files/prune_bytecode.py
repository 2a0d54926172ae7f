"""Keep the bytecode of Debian's Python only for the modules the image runs.

    prune_bytecode.py KEEP [KEEP ...]

Debian compiles every module of a Python package when it installs it
(py3compile): the standard library's and /usr/lib/python3/dist-packages'
.pyc files, which no package lists. A web service imports a quarter of
them. This removes the .pyc of every other module (Python compiles one
from its source, in memory, if something imports it) and keeps what each
KEEP names: a dotted module name (`encodings.utf_8`), `PKG.*` for a
package and everything in it, or a pattern (`_sysconfigdata_*`, `*` for
every module). Run by the Python it prunes. Prints
{"changed": bool, "removed": N, "bytes": N} as JSON: a second run finds
nothing to remove.
"""

from __future__ import annotations

import json
import sys
import sysconfig
from fnmatch import fnmatchcase
from pathlib import Path

# Debian's own modules for its Python: the standard library, and what
# python3-* packages install.
DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")


def module_name(pyc: Path, root: Path) -> str:
    """`root/a/b/__pycache__/c.cpython-313.pyc` is module a.b.c."""
    parts = list(pyc.parent.parent.relative_to(root).parts)
    stem = pyc.name.split(".", 1)[0]
    if stem != "__init__":
        parts.append(stem)
    return ".".join(parts)


def kept(name: str, keep: list[str]) -> bool:
    return any(
        name == k or (k.endswith(".*") and name == k[:-2]) or fnmatchcase(name, k) for k in keep
    )


def main(keep: list[str]) -> int:
    removed = size = 0
    for root in (Path(sysconfig.get_path("stdlib")), DIST_PACKAGES):
        for pyc in sorted(root.rglob("__pycache__/*.pyc")):
            if not kept(module_name(pyc, root), keep):
                size += pyc.stat().st_size
                pyc.unlink()
                removed += 1
        for cache in sorted(root.rglob("__pycache__"), reverse=True):
            if not any(cache.iterdir()):
                cache.rmdir()
    print(json.dumps({"changed": removed > 0, "removed": removed, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
