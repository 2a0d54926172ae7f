"""Whether pip can install requirements files before the rest of the build context.

  requirements.py needs-context FILE...

The onbuild script's first part (`onbuild dependencies`) has only
requirements*.txt, constraints*.txt, bin/ and container/ of the build context
in the app dir. For the FILEs (in the order pip would read them) this prints
one line saying why installing them needs more of the context, or nothing
when they are self-contained: a requirement that is a local path (`-e .`,
`./pkg`, `file:...`, `pkg @ file:...`, a wheel or sdist file), an `-r`/`-c`
include that is not there, a `--find-links`/`--index-url` directory that is
not there, and the same options in pip's environment (PIP_FIND_LINKS,
PIP_CONSTRAINT, ...) and configuration files. The script then installs them
after COPY . instead.

Run by the venv's interpreter, whose pip reads the configuration.
"""

from __future__ import annotations

import codecs
import locale
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

# pip options whose value names another file or a place to find packages.
INCLUDES = {"-r": "-r", "--requirement": "-r", "-c": "-c", "--constraint": "-c"}
EDITABLE = {"-e", "--editable"}
LOCATIONS = {"-f", "--find-links", "-i", "--index-url", "--extra-index-url"}
WITH_VALUE = set(INCLUDES) | EDITABLE | LOCATIONS
# The same settings from pip's environment and configuration.
ENV_LOCATIONS = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT")
CONFIG_KEYS = ("find-links", "index-url", "extra-index-url", "constraint")
ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
NAMED_URL = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:\[[^\]]*\])?\s*@\s*(\S+)")
# pip expands environment variables in requirements files, in braces only
# (a dollar sign, then the upper-case name in braces).
ENV_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")
COMMENT = re.compile(r"(^|\s+)#.*$")
# What pip reads a requirements file as: the encoding its byte order mark
# names (PowerShell's `pip freeze > requirements.txt` writes UTF-16), else
# the locale's (UTF-8 in the image).
BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (codecs.BOM_UTF16_LE, "utf-16"),
)


def is_file_url(location: str) -> bool:
    """file:..., git+file://... and the like."""
    return bool(re.match(r"^(?:[A-Za-z0-9.-]+\+)?file:", location))


def is_local(location: str) -> bool:
    """A path or a file: URL, as opposed to a URL pip downloads."""
    return is_file_url(location) or not SCHEME.match(location)


def local_path(location: str, base: Path) -> Path:
    if location.startswith("file:"):
        location = re.sub(r"^file:(//)?", "", location)
    return Path(location) if os.path.isabs(location) else base / location


def requirement_is_local(text: str) -> bool:
    """A requirement line (options cut) that pip installs from a local path."""
    if m := NAMED_URL.match(text):
        return is_local(m[1])
    spec = text.split(";", 1)[0].strip()
    if SCHEME.match(spec):
        return is_file_url(spec)
    return (
        spec.startswith((".", "/", "file:"))
        or "/" in spec
        or "\\" in spec
        or spec.lower().endswith(ARCHIVES)
    )


def read(path: Path) -> str:
    data = path.read_bytes()
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return data.decode(encoding)
    return data.decode(locale.getpreferredencoding(False), errors="replace")


def logical_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) as pip reads them: continuations joined, comments cut,
    environment variables expanded."""
    lines: list[tuple[int, str]] = []
    start, parts = 0, []
    for number, raw in enumerate(read(path).splitlines(), 1):
        if not parts:
            start = number
        if raw.endswith("\\"):
            parts.append(raw[:-1])
            continue
        parts.append(raw)
        text = COMMENT.sub("", "".join(parts)).strip()
        parts = []
        if text:
            text = ENV_VAR.sub(lambda m: os.environ.get(m[1], m[0]), text)
            lines.append((start, text))
    return lines


def options(text: str) -> list[tuple[str, str]]:
    """(option, value) pairs of a line that starts with options."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, value = word.partition("=")
        if eq and name in WITH_VALUE:
            found.append((name, value))
        elif word in WITH_VALUE and i + 1 < len(words):
            found.append((word, words[i + 1]))
            i += 1
        elif word[:2] in WITH_VALUE and len(word) > 2 and not word.startswith("--"):
            found.append((word[:2], word[2:]))
        i += 1
    return found


def check_file(path: Path, seen: set[Path]) -> str | None:
    """Why PATH (and what it includes) needs more of the build context, or None."""
    seen.add(path.resolve())
    base = path.parent
    for number, text in logical_lines(path):
        where = f"{path} line {number}"
        if not text.startswith("-"):
            requirement = re.split(r"\s--?[a-z]", text, maxsplit=1)[0]
            if requirement_is_local(requirement):
                return f"{where}: '{requirement}' installs from a path in the build context"
            continue
        for option, value in options(text):
            if option in EDITABLE:
                if requirement_is_local(value):
                    return f"{where}: '{option} {value}' installs from a path in the build context"
            elif not is_local(value):
                continue
            elif option in INCLUDES:
                target = local_path(value, base)
                if not target.is_file():
                    return f"{where}: '{option} {value}' is a file this step does not have"
                if target.resolve() not in seen and (why := check_file(target, seen)):
                    return why
            elif not local_path(value, base).exists():
                return f"{where}: '{option} {value}' is a path this step does not have"
    return None


def check_settings() -> str | None:
    """Why pip's environment or configuration needs more of the build context."""
    for name in ENV_LOCATIONS:
        for value in os.environ.get(name, "").split():
            if is_local(value) and not local_path(value, Path.cwd()).exists():
                return f"{name}={value} is a path this step does not have"
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    )
    if listed.returncode != 0:
        # A bad PIP_* value (a CRLF bin/setup.sh exports "1\r"): pip's words.
        raise SystemExit(
            f"aiohttp-parent onbuild: error: pip cannot read its configuration: {listed.stderr.strip()}"
        )
    for line in listed.stdout.splitlines():
        key, _, raw = line.partition("=")
        if key.rpartition(".")[2] not in CONFIG_KEYS:
            continue
        for value in raw.strip("'\"").split():
            if is_local(value) and not local_path(value, Path.cwd()).exists():
                return f"pip's configuration {key}={value} is a path this step does not have"
    return None


def main(argv: list[str]) -> int:
    match argv:
        case ["needs-context", *files] if files:
            seen: set[Path] = set()
            for name in files:
                if why := check_file(Path(name), seen):
                    print(why)
                    return 0
            if why := check_settings():
                print(why)
            return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
