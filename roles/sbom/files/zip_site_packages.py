"""Make the generators' venv small: remove what no run of the sbom command
reads, then move every pure-Python package of its site-packages into one zip
archive that a .pth file puts on sys.path (Python imports from it through
zipimport). The .dist-info directories stay on disk, so pip and
importlib.metadata (cyclonedx-py) see the same packages, metadata and
licences as before.

    zip_site_packages.py [--remove GLOB ...]

Run by the venv's own Python (its purelib is the site-packages it works on).
A package stays on disk when it holds an extension module (never importable
from a zip) or when its code names __file__ (it reads its own data files by
path, which a zip has not). Prints {"changed": bool, ...} as JSON: a second
run finds nothing left to do, and the archive is byte for byte the same for
the same packages (sorted entries, fixed times).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import sysconfig
import zipfile
from pathlib import Path

ARCHIVE = "aiohttp-parent-site-packages.zip"
PTH = "aiohttp-parent-site-packages.pth"
# Zip's earliest time: the archive does not depend on when the build ran.
EPOCH = (1980, 1, 1, 0, 0, 0)
EXTENSIONS = (".so", ".pyd")


def remove(site: Path, globs: list[str]) -> list[str]:
    """Delete what each glob (relative to site-packages) matches."""
    removed = []
    for pattern in globs:
        for path in sorted(site.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(str(path.relative_to(site)))
    return removed


def remove_shadowed_sources(site: Path) -> list[str]:
    """Delete each X.py beside an extension module X.*.so: the import system
    tries extension modules first, so that source is never imported (mypyc
    and Cython wheels ship both)."""
    removed = []
    for extension in sorted(p for p in site.rglob("*") if p.suffix in EXTENSIONS):
        source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
        if source.is_file():
            source.unlink()
            removed.append(str(source.relative_to(site)))
    return removed


def files_of(entry: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [entry]


def zippable(entry: Path) -> bool:
    """A top-level package or module that works from a zip archive."""
    if entry.name.endswith((".dist-info", ".pth")) or entry.name in (ARCHIVE, "__pycache__"):
        return False
    if not (entry.is_dir() or entry.suffix == ".py"):
        return False
    files = files_of(entry)
    if any(f.suffix in EXTENSIONS for f in files):
        return False
    return not any(
        "__file__" in f.read_text(encoding="utf-8", errors="replace")
        for f in files
        if f.suffix == ".py"
    )


def zip_packages(site: Path) -> list[str]:
    """Move the zippable top-level entries into ARCHIVE (rewritten whole,
    with what it held before) and name it in PTH."""
    entries = sorted(e for e in site.iterdir() if zippable(e))
    archive = site / ARCHIVE
    if entries:
        members: dict[str, bytes] = {}
        if archive.exists():
            with zipfile.ZipFile(archive) as old:
                members = {name: old.read(name) for name in old.namelist()}
        for entry in entries:
            for f in files_of(entry):
                members[f.relative_to(site).as_posix()] = f.read_bytes()
        tmp = archive.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as new:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                new.writestr(info, members[name])
        tmp.chmod(0o644)
        tmp.replace(archive)
        for entry in entries:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    pth = site / PTH
    if archive.exists() and not pth.exists():
        # A relative line: site.py joins it to the site-packages directory.
        pth.write_text(ARCHIVE + "\n")
        pth.chmod(0o644)
        entries = entries or [archive]
    return [e.name for e in entries]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--remove", action="append", default=[], help="a glob, relative to site-packages"
    )
    args = parser.parse_args(argv)
    site = Path(sysconfig.get_path("purelib"))
    removed = remove(site, args.remove) + remove_shadowed_sources(site)
    zipped = zip_packages(site)
    result = {"changed": bool(removed or zipped), "removed": removed, "zipped": zipped}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
