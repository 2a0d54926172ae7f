"""Audit an image's SBOM for known vulnerabilities, failing unless every
component was checked against a vulnerability source that answered.

    audit.py IMAGE [--sbom FILE] [--osv-url URL] [--debsecan-source URL]

The SBOM is FILE (what `make image` wrote) or, without one, what `docker run
--rm IMAGE sbom` prints (a child's includes what its requirements installed).
  * Python (pkg:pypi components): pip-audit against OSV, one requirement
    name==version per component, nothing resolved or installed.
  * Debian (pkg:deb components): debsecan against Debian's security tracker,
    on the image's own dpkg status file (it needs the source package names,
    which the SBOM lacks), after checking that it lists exactly the SBOM's
    packages. Only vulnerabilities with a fixed version count (--only-fixed):
    those a rebuild can remove; how many more are known without a fix is said.
Exit status 0 only when both audited every component and found nothing. A
source that cannot be reached, or a component it skipped, is a failure that
says so; so is a vulnerability. Nothing here ever reports a pass it did not see.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

OSV_URL = "https://api.osv.dev/v1/query"
DEBSECAN_SOURCE = "https://security-tracker.debian.org/tracker/debsecan/release/1/"


class NotAudited(Exception):
    """A scanner could not do its job: the message says which and why."""


def log(message: str) -> None:
    print(f"audit: {message}", file=sys.stderr, flush=True)


def run_in(image: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """argv in a new container of IMAGE, past its entrypoint: a child's own
    bin/entrypoint.sh, which need not hand back, does not run."""
    return subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", argv[0], image, *argv[1:]],
        capture_output=True,
        text=True,
    )


def load_sbom(image: str, path: str | None) -> dict[str, Any]:
    if path:
        return json.loads(Path(path).read_text())
    # The sbom command is the entrypoint's neighbour in the lib dir.
    proc = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{index .Config.Entrypoint 0}}", image],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"audit: error: no image {image}: {proc.stderr.strip()}")
    command = str(PurePosixPath(proc.stdout.strip()).parent / "sbom")
    proc = run_in(image, command)
    if proc.returncode != 0:
        raise SystemExit(f"audit: error: {command} in {image} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def components(sbom: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in sbom.get("components", []) if c.get("purl", "").startswith(f"pkg:{kind}/")]


def last_error(text: str) -> str:
    """The most telling line of a failed run: its last one naming an error."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error", line, re.IGNORECASE)]
    return (errors or lines or ["no output"])[-1]


def audit_python(sbom: dict[str, Any], osv_url: str, workdir: Path) -> list[str]:
    """pip-audit of every pkg:pypi component; returns the vulnerabilities found."""
    pinned = sorted({f"{c['name']}=={c['version']}" for c in components(sbom, "pypi")})
    if not pinned:
        raise NotAudited(
            "the SBOM lists no Python packages (pkg:pypi): it is not an aiohttp-parent SBOM"
        )
    requirements = workdir / "requirements.txt"
    requirements.write_text("".join(f"{p}\n" for p in pinned))
    report = workdir / "pip-audit.json"
    cmd = ["pip-audit", "--vulnerability-service", "osv", "--osv-url", osv_url, "--no-deps"]
    cmd += [
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--format",
        "json",
        "--output",
        str(report),
    ]
    proc = subprocess.run(
        [*cmd, "--requirement", str(requirements)], capture_output=True, text=True
    )
    host = urlsplit(osv_url).netloc
    if proc.returncode != 0 and not report.is_file():
        raise NotAudited(
            f"pip-audit could not reach its vulnerability source, OSV at {host} ({osv_url}):"
            f" {last_error(proc.stderr)}; none of the {len(pinned)} Python packages was audited"
        )
    result = json.loads(report.read_text())
    skipped = [d for d in result["dependencies"] if d.get("skip_reason")]
    if skipped:
        raise NotAudited(
            f"pip-audit skipped {len(skipped)} of {len(pinned)} Python packages, so they were not"
            f" audited (first: {skipped[0]['skip_reason']})"
        )
    return [
        f"{d['name']} {d['version']}: {v['id']} (fixed in {', '.join(v.get('fix_versions', [])) or 'no release'})"
        for d in result["dependencies"]
        for v in d.get("vulns", [])
    ]


def dpkg_status(image: str) -> str:
    proc = run_in(image, "cat", "/var/lib/dpkg/status")
    if proc.returncode != 0:
        raise NotAudited(f"cannot read {image}'s dpkg status file: {last_error(proc.stderr)}")
    return proc.stdout


def installed(status: str) -> set[tuple[str, str]]:
    packages = set()
    for stanza in status.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.MULTILINE))
        if fields.get("Status", "").endswith(" installed"):
            packages.add((fields["Package"], fields["Version"]))
    return packages


def debsecan(cmd: list[str], source: str, suite: str, count: int) -> list[str]:
    """The vulnerabilities (CVE-... lines) a debsecan run lists."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise NotAudited(
            "debsecan is not installed (Debian: apt-get install debsecan; make host does)"
        ) from None
    if proc.returncode != 0:
        raise NotAudited(
            f"debsecan could not reach its vulnerability source, Debian's security tracker at"
            f" {urlsplit(source).netloc} ({source}{suite}): {last_error(proc.stderr)};"
            f" none of the {count} Debian packages was audited"
        )
    return [line for line in proc.stdout.splitlines() if re.match(r"^(CVE|TEMP|DSA|DLA)-", line)]


def audit_debian(sbom: dict[str, Any], image: str, source: str, workdir: Path) -> list[str]:
    """debsecan of the image's Debian packages; returns the fixable vulnerabilities
    and says how many more are known with no fix in Debian yet."""
    debs = components(sbom, "deb")
    if not debs:
        raise NotAudited("the SBOM lists no Debian packages (pkg:deb)")
    suites = {q for c in debs for q in parse_qs(urlsplit(c["purl"]).query).get("distro", [])}
    if len(suites) != 1:
        raise NotAudited(
            f"the SBOM's Debian packages name no single release (distro=): {sorted(suites)}"
        )
    status = dpkg_status(image)
    listed = {(c["name"], c["version"]) for c in debs}
    if installed(status) != listed:
        diff = sorted(installed(status) ^ listed)[:5]
        raise NotAudited(
            f"{image}'s dpkg packages differ from its SBOM's (e.g. {diff}): audit the SBOM of this image"
        )
    (workdir / "status").write_text(status)
    suite = suites.pop()
    cmd = ["debsecan", "--suite", suite, "--status", str(workdir / "status"), "--source", source]
    cmd += ["--format", "detail", "--history", str(workdir / "history")]
    fixable = debsecan([*cmd, "--only-fixed"], source, suite, len(debs))
    unfixed = len(debsecan(cmd, source, suite, len(debs))) - len(fixable)
    # Not counted (a rebuild cannot remove them), never hidden.
    log(f"Debian packages: {unfixed} known vulnerabilities with no fix in Debian yet (not counted)")
    return fixable


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--sbom", help="the image's SBOM (default: docker run --rm IMAGE sbom)")
    parser.add_argument("--osv-url", default=OSV_URL, help=f"OSV's query API (default: {OSV_URL})")
    parser.add_argument(
        "--debsecan-source",
        default=DEBSECAN_SOURCE,
        help=f"debsecan's data (default: {DEBSECAN_SOURCE})",
    )
    args = parser.parse_args(argv)
    sbom = load_sbom(args.image, args.sbom)
    failures: list[str] = []
    found: list[str] = []
    with tempfile.TemporaryDirectory(prefix="audit.") as tmp:
        for name, run in (
            ("Python packages", lambda: audit_python(sbom, args.osv_url, Path(tmp))),
            (
                "Debian packages",
                lambda: audit_debian(sbom, args.image, args.debsecan_source, Path(tmp)),
            ),
        ):
            try:
                vulns = run()
            except NotAudited as e:
                log(f"error: {name}: {e}")
                failures.append(name)
                continue
            log(f"{name}: every one audited; {len(vulns)} known vulnerabilities")
            found += vulns
    for vuln in found:
        log(f"vulnerable: {vuln}")
    if failures:
        log(
            f"FAILED: {' and '.join(failures)} of {args.image} were NOT audited (see above): this is no pass"
        )
        return 2
    if found:
        log(f"FAILED: {len(found)} known vulnerabilities in {args.image}")
        return 1
    log(
        f"passed: every component of {args.image} audited, no known vulnerabilities"
        " that have a fix (those without one are counted above)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
