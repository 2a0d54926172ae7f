"""Record a CPU architecture in a local image's config.

    image_arch.py IMAGE ARCH

Docker 20.10 ignores `docker import --platform` and records its own
architecture. This saves IMAGE, sets the config's `architecture` (and arm64's
`variant`, v8, as Docker's own arm64 images have it), loads it back under the
same tag and removes the mislabelled image, unless another tag still names it
(a copy tagged from an image that is kept, as the registry test makes). The
layers are untouched; an image that already has ARCH is left alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VARIANTS = {"arm64": "v8"}


def inspect(image: str, field: str) -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "-f", "{{." + field + "}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def relabel(saved: Path, fixed: Path, arch: str) -> None:
    """Copy the `docker save` archive `saved` to `fixed` with the config changed."""
    with tarfile.open(saved) as src:
        manifest = json.load(src.extractfile("manifest.json"))  # type: ignore[arg-type]
        if len(manifest) != 1:
            raise SystemExit(
                f"image_arch: expected one image in the archive, found {len(manifest)}"
            )
        old = manifest[0]["Config"]
        config = json.load(src.extractfile(old))  # type: ignore[arg-type]
        config["architecture"] = arch
        config.pop("variant", None)
        if arch in VARIANTS:
            config["variant"] = VARIANTS[arch]
        data = json.dumps(config, separators=(",", ":")).encode()
        # The loaded image's ID is this digest; the file name says it too, as docker save's do.
        manifest[0]["Config"] = hashlib.sha256(data).hexdigest() + ".json"
        with tarfile.open(fixed, "w") as dst:
            for member in src:
                if member.name in (old, "manifest.json"):
                    continue
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
            add_bytes(dst, manifest[0]["Config"], data)
            add_bytes(dst, "manifest.json", json.dumps(manifest).encode())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    image, arch = argv
    if inspect(image, "Architecture") == arch:
        return 0
    old_id = inspect(image, "Id")
    with tempfile.TemporaryDirectory(prefix="image-arch.") as tmp:
        saved, fixed = Path(tmp, "saved.tar"), Path(tmp, "fixed.tar")
        subprocess.run(["docker", "save", "-o", str(saved), image], check=True)
        relabel(saved, fixed, arch)
        subprocess.run(["docker", "load", "-q", "-i", str(fixed)], check=True, stdout=sys.stderr)
    if inspect(image, "Architecture") != arch:
        print(f"image_arch: error: {image} still does not say {arch}", file=sys.stderr)
        return 1
    if inspect(old_id, "RepoTags") == "[]":
        subprocess.run(["docker", "image", "rm", old_id], check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
