"""Locked, hash-checked venvs, and an image venv that two builds make the same.

The locks (scripts/lock.py's LOCKS) against their top-level pins, without
Docker; the parent image's venv against its lock; and the parent against its
-base variant, which `make image` builds in a second Packer run of the same
commit (they differ only in image metadata): the same files, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile

import pytest
from packaging.markers import Marker

from scripts import lock
from tests import contract, docker

IMAGE_LOCK = next(lk for lk in lock.LOCKS if lk.source == lock.ROLE_DEFAULTS)
VENV = contract.variables(container=True)["aiohttp_parent_venv"]
LIB_DIR = contract.LIB_DIR

# (type, mode, uid, gid, sha256 or link target) and the mtime, per path.
Entry = tuple[bytes, int, int, int, str]
Tree = dict[str, tuple[Entry, int]]


@pytest.mark.parametrize("locked", lock.LOCKS, ids=[lk.path for lk in lock.LOCKS])
def test_each_lock_matches_its_top_level_pins(locked: lock.Lock) -> None:
    assert lock.problems(locked) == []


@pytest.mark.parametrize("locked", lock.LOCKS, ids=[lk.path for lk in lock.LOCKS])
def test_readme_names_each_lock_and_its_pins(locked: lock.Lock) -> None:
    readme = (lock.ROOT / "README.rst").read_text()
    section = readme.split("\nLocked dependencies\n", 1)[1].split("\nReproducible builds\n")[0]
    table = section.split("==\n", 1)[1]
    assert f"``{locked.path}``" in table, f"README.rst's table of locks lacks {locked.path}"
    assert f"``{locked.source}``" in table, f"README.rst's table of locks lacks {locked.source}"


@pytest.mark.parametrize("locked", lock.LOCKS, ids=[lk.path for lk in lock.LOCKS])
def test_every_locked_package_carries_hashes(locked: lock.Lock) -> None:
    lines = (lock.ROOT / locked.path).read_text().splitlines()
    bare = [
        line
        for i, line in enumerate(lines)
        if lock.PIN.match(line) and not lines[i + 1].strip().startswith("--hash=sha256:")
    ]
    assert lock.entries("\n".join(lines)), f"{locked.path} locks nothing"
    assert bare == []


def test_the_image_lock_is_made_from_the_role_defaults() -> None:
    """The image's pins have one source: the role's defaults, rendered."""
    text = (lock.ROOT / IMAGE_LOCK.path).read_text()
    assert lock.header_pins(text) == lock.image_pins()
    assert {"aiohttp", "gunicorn", "uvloop"} <= set(lock.pinned(lock.image_pins()))


@pytest.mark.parametrize(
    ("pins", "named"),
    [
        (["aiohttp==0.0.1", "gunicorn==27.0.1", "uvloop==0.23.0"], "aiohttp: "),
        (["aiohttp==3.14.5", "gunicorn==27.0.1", "uvloop==0.23.0", "six==1.17.0"], "six: "),
        (["aiohttp==3.14.5", "gunicorn==27.0.1"], "uvloop: "),
    ],
    ids=["other-version", "added", "removed"],
)
def test_a_lock_that_disagrees_with_its_pins_fails_naming_the_package(
    pins: list[str], named: str
) -> None:
    stale = lock.Lock(IMAGE_LOCK.path, "pins.txt", lambda: pins)
    found = lock.problems(stale)
    assert len(found) == 1
    assert found[0].startswith(named)
    assert found[0].endswith("(run make lock)")


# The marker environment of the venv's interpreter (packaging's
# default_environment, in the stdlib alone: the venv need not hold packaging).
MARKER_ENV = """
import json, os, platform, sys
v = sys.implementation.version
impl = f"{v.major}.{v.minor}.{v.micro}"
print(json.dumps({
    "implementation_name": sys.implementation.name,
    "implementation_version": impl,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"""


def in_image(image: str, *cmd: str) -> str:
    return docker.run(image, *cmd, opts=["--entrypoint", ""], check=True).stdout


def test_the_image_venv_is_exactly_its_lock(parent_image: str) -> None:
    """`pip freeze` in the image lists what the lock's entries for that
    Python and platform pin, nothing more or less (pip itself, and setuptools
    on 3.11, come from Debian's python3-venv and pip freeze leaves them out)."""
    env = json.loads(in_image(parent_image, f"{VENV}/bin/python", "-c", MARKER_ENV))
    text = (lock.ROOT / IMAGE_LOCK.path).read_text()
    want = {
        f"{name}=={version}"
        for name, version, marker in lock.entries(text)
        if not marker or Marker(marker).evaluate(env)
    }
    frozen = in_image(parent_image, f"{VENV}/bin/pip", "freeze", "--disable-pip-version-check")
    have = {
        f"{lock.canonical(n)}=={v}" for n, _, v in (line.partition("==") for line in frozen.split())
    }
    assert have == want
    assert in_image(parent_image, "cat", f"{VENV}/requirements.lock") == text


def test_the_image_says_its_venv_is_locked(parent_image: str) -> None:
    labels = docker.inspect(parent_image)["Config"]["Labels"]
    assert labels["aiohttp-parent.venv.locked"] == "true"


def tree(image: str) -> Tree:
    """Every path of the image's filesystem (as `docker export` gives it)."""
    cid = docker.docker("create", image).stdout.strip()
    try:
        with subprocess.Popen(["docker", "export", cid], stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            found: Tree = {}
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                for m in archive:
                    f = archive.extractfile(m) if m.isfile() else None
                    what = hashlib.sha256(f.read()).hexdigest() if f else m.linkname
                    path = "/" + m.name.removeprefix("./").rstrip("/")
                    found[path] = ((m.type, m.mode, m.uid, m.gid, what), int(m.mtime))
        assert proc.returncode == 0, f"docker export {image} failed"
        return found
    finally:
        docker.docker("rm", cid, check=False)


@pytest.fixture(scope="module")
def two_builds(parent_image: str) -> tuple[Tree, Tree]:
    """The parent and its -base variant: two Packer runs of one commit."""
    return tree(parent_image), tree(f"{parent_image}-base")


# What `docker create` adds to every container (Docker's init layer), and the
# directories it adds them to, with the time of that call: not the image's.
CONTAINER_INIT = frozenset(
    {
        *("/", "/dev", "/etc", "/.dockerenv", "/dev/console"),
        *("/etc/hostname", "/etc/hosts", "/etc/mtab", "/etc/resolv.conf"),
    }
)


def differing(a: Tree, b: Tree, under: tuple[str, ...] = ("/",), times: bool = False) -> list[str]:
    """Paths under `under` that one build lacks or has with other content,
    type, mode or owner, or with `times` another mtime."""
    paths = {p for p in a.keys() | b.keys() if p.startswith(under)}
    pick = (lambda e: e) if times else (lambda e: e[0])
    return sorted(p for p in paths if pick(a.get(p, (None, None))) != pick(b.get(p, (None, None))))


def test_two_builds_make_the_same_venv_and_lib_dir(two_builds: tuple[Tree, Tree]) -> None:
    a, b = two_builds
    under = (f"{VENV}/", f"{LIB_DIR}/")
    assert sum(p.startswith(under) for p in a) > 500, "the venv and lib dir look empty"
    assert differing(a, b, under) == []


def test_two_builds_differ_in_no_file_of_the_filesystem(two_builds: tuple[Tree, Tree]) -> None:
    """Neither in content nor in time: every file the build made has the time
    of SOURCE_DATE_EPOCH (README.rst, "Reproducible builds")."""
    a, b = two_builds
    assert differing(a, b) == []
    assert [p for p in differing(a, b, times=True) if p not in CONTAINER_INIT] == []
