"""Print the CycloneDX SBOM of this system: every Debian package (distro2sbom)
and every package of each venv given (cyclonedx-py), merged into one document
and validated against the CycloneDX schema before it is printed.

    sbom.py --venv DIR [--venv DIR ...] [--name NAME]

Runs with the Python of the generators' own venv (the sbom role's), which
keeps them out of the app's venv. Output is reproducible: no timestamp and no
serial number, so two runs over the same packages print the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from jsonschema import Draft7Validator
from rfc3986_validator import validate_rfc3986

SPEC = "1.6"
ROOT_REF = "image"
VENV_PROPERTY = "aiohttp-parent:venv"


@Draft7Validator.FORMAT_CHECKER.checks("iri-reference")
def is_iri_reference(value: object) -> bool:
    """The schema's iri-reference format, as RFC 3987 section 3.1 defines it:
    an IRI reference is one whose URI mapping (each non-ASCII character
    percent-encoded as UTF-8) is a URI reference, checked by rfc3986's regex.
    It replaces jsonschema's default, rfc3987-syntax's Earley parser, which
    took two thirds of a run (some 50 ms for each of the ~400 URLs)."""
    if not isinstance(value, str):
        return True
    uri = "".join(c if c.isascii() else quote(c, safe="") for c in value)
    return bool(validate_rfc3986(uri, rule="URI_reference"))


def debian_sbom(out: Path, name: str) -> dict[str, Any]:
    """distro2sbom's CycloneDX document of the installed dpkg packages."""
    from distro2sbom import cli
    from distro2sbom.distrobuilder.dpkgbuilder import DpkgBuilder

    # distro2sbom 0.6.0 looks for multi-arch packages' copyright files under
    # their dpkg names (/usr/share/doc/libc6:amd64/copyright), which do not
    # exist, so half the packages would lose their licence: look under the
    # package name, as Debian installs them.
    by_dpkg_name = DpkgBuilder.get_metadata_from_file

    def get_metadata_from_file(self: DpkgBuilder, package: str) -> tuple[str, str]:
        return by_dpkg_name(self, package.split(":", 1)[0])

    DpkgBuilder.get_metadata_from_file = get_metadata_from_file  # type: ignore[method-assign]
    os.environ["LIB4SBOM_CYCLONEDX_VERSION"] = SPEC
    argv = ["distro2sbom", "--distro", "deb", "--system", "--sbom", "cyclonedx"]
    argv += ["--format", "json", "--product-type", "container", "--product-name", name]
    # It prints progress to stdout, which carries the SBOM.
    with contextlib.redirect_stdout(sys.stderr):
        status = cli.main([*argv, "--output-file", str(out)])
    if status not in (None, 0) or not out.is_file():
        sys.exit(f"sbom: error: distro2sbom failed (exit status {status})")
    return json.loads(out.read_text())


def venv_sbom(venv: str, out: Path) -> dict[str, Any]:
    """cyclonedx-py's CycloneDX document of one venv's packages."""
    python = Path(venv) / "bin/python"
    if not python.exists():
        sys.exit(f"sbom: error: {venv} is not a venv (no {python})")
    tool = Path(sys.executable).parent / "cyclonedx-py"
    # --no-validate: main() validates the merged document, these parts too.
    cmd = [str(tool), "environment", "--sv", SPEC, "--output-reproducible", "--no-validate"]
    proc = subprocess.run(
        [*cmd, "-o", str(out), str(python)], stdout=sys.stderr, stderr=subprocess.PIPE, text=True
    )
    # Its warning that it skipped validation: the merged document is validated.
    sys.stderr.writelines(
        line for line in proc.stderr.splitlines(keepends=True) if "Validation skipped" not in line
    )
    proc.check_returncode()
    return json.loads(out.read_text())


def rename(refs: dict[str, str], dependencies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dependency graph with every ref renamed (unknown refs: to the root)."""
    return [
        {
            "ref": refs.get(d["ref"], ROOT_REF),
            **(
                {"dependsOn": [refs[r] for r in d["dependsOn"] if r in refs]}
                if d.get("dependsOn")
                else {}
            ),
        }
        for d in dependencies
        if d["ref"] in refs
    ]


def merge(
    name: str, debian: dict[str, Any], venvs: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """One document: the image as root, the Debian packages, each venv's packages.

    The same Python package may sit in two venvs, so every bom-ref is made
    unique by its source; a venv property says where a Python package lives.
    """
    components: list[dict[str, Any]] = []
    dependencies: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    top: list[str] = []
    for source, doc, venv in [("deb", debian, None), *[(f"pypi:{v}", d, v) for v, d in venvs]]:
        refs = {c["bom-ref"]: f"{source}:{c['bom-ref']}" for c in doc.get("components", [])}
        for component in doc.get("components", []):
            component = {**component, "bom-ref": refs[component["bom-ref"]]}
            if venv is not None:
                component["properties"] = [
                    *component.get("properties", []),
                    {"name": VENV_PROPERTY, "value": venv},
                ]
            components.append(component)
        dependencies += rename(refs, doc.get("dependencies", []))
        # What nothing else in its document depends on hangs off the root.
        needed = {r for d in doc.get("dependencies", []) for r in d.get("dependsOn", [])}
        top += [new for old, new in refs.items() if old not in needed]
        for tool in doc.get("metadata", {}).get("tools", {}).get("components", []):
            if tool not in tools:
                tools.append(tool)
    return {
        "$schema": f"http://cyclonedx.org/schema/bom-{SPEC}.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC,
        "version": 1,
        "metadata": {
            "tools": {"components": tools},
            "component": {
                "type": "container",
                "bom-ref": ROOT_REF,
                "name": name,
                "description": "Debian packages and Python venvs of an aiohttp-parent image (or one built FROM it)",
            },
        },
        "components": components,
        "dependencies": [{"ref": ROOT_REF, "dependsOn": top}, *dependencies],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--venv", action="append", required=True, help="a venv whose packages to list"
    )
    parser.add_argument("--name", default="aiohttp-parent", help="the root component's name")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sbom.") as tmp:
        debian = debian_sbom(Path(tmp, "deb.json"), args.name)
        venvs = [
            (venv, venv_sbom(venv, Path(tmp, f"venv{i}.json"))) for i, venv in enumerate(args.venv)
        ]
    text = json.dumps(merge(args.name, debian, venvs), indent=2) + "\n"
    error = JsonStrictValidator(SchemaVersion.from_version(SPEC)).validate_str(text)
    if error is not None:
        sys.exit(f"sbom: error: the merged SBOM is not valid CycloneDX {SPEC}: {error}")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
