"""What is inside, and where it came from: the image's CycloneDX SBOM (shipped
and made again by `docker run IMAGE sbom`, a child's included), its
provenance labels and layer comments, and `make audit`, which must never
pass without a vulnerability source that answered."""

from __future__ import annotations

import datetime
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from scripts.lock import canonical
from tests import docker
from tests.conftest import ChildBuilder

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = yaml.safe_load((ROOT / "roles/aiohttp_parent/defaults/main.yml").read_text())
SBOM_VENV = CONTRACT["aiohttp_parent_lib_dir"] + "/sbom-venv"
VENVS = (CONTRACT["aiohttp_parent_venv"], SBOM_VENV)
# A child that adds a package and overrides the parent's aiohttp pin.
OLDER_AIOHTTP = "3.13.5"
CHILD_REQUIREMENTS = f"six==1.16.0\naiohttp=={OLDER_AIOHTTP}\n"


def python_packages(sbom: dict[str, Any], venv: str) -> set[tuple[str, str]]:
    return {
        (canonical(c["name"]), c["version"])
        for c in sbom["components"]
        if c.get("purl", "").startswith("pkg:pypi/")
        and {"name": "aiohttp-parent:venv", "value": venv} in c.get("properties", [])
    }


def pip_list(image: str, venv: str) -> set[tuple[str, str]]:
    # The app venv's pip, from outside (the generators' venv has none); pip
    # list (not freeze) includes pip itself where the venv holds it.
    pip = CONTRACT["aiohttp_parent_venv"] + "/bin/pip"
    cmd = [pip, "--python", f"{venv}/bin/python", "list", "--format", "json"]
    out = docker.run(image, *cmd, check=True)
    return {(canonical(p["name"]), p["version"]) for p in json.loads(out.stdout)}


@pytest.fixture(scope="module")
def labels(parent_image: str) -> dict[str, str]:
    return docker.inspect(parent_image)["Config"]["Labels"]


@pytest.fixture(scope="module")
def shipped_text(parent_image: str, labels: dict[str, str]) -> str:
    """The SBOM file the label points to, as the image ships it."""
    return docker.run(parent_image, "cat", labels["aiohttp-parent.sbom"], check=True).stdout


@pytest.fixture(scope="module")
def shipped(shipped_text: str) -> dict[str, Any]:
    return json.loads(shipped_text)


@pytest.fixture(scope="module")
def child(build_child: ChildBuilder) -> str:
    tag, _ = build_child({"requirements.txt": CHILD_REQUIREMENTS}, name="sbom")
    return tag


@pytest.fixture(scope="module")
def child_sbom(child: str) -> dict[str, Any]:
    return json.loads(docker.run(child, "sbom", check=True).stdout)


def test_the_label_names_the_contracts_sbom_path(labels: dict[str, str]) -> None:
    assert labels["aiohttp-parent.sbom"] == CONTRACT["aiohttp_parent_sbom_file"]


def test_the_shipped_sbom_is_valid_cyclonedx(shipped_text: str, shipped: dict[str, Any]) -> None:
    assert shipped["bomFormat"] == "CycloneDX"
    version = SchemaVersion.from_version(shipped["specVersion"])
    assert JsonStrictValidator(version).validate_str(shipped_text) is None


def test_sbom_prints_the_shipped_sbom_again(parent_image: str, shipped_text: str) -> None:
    """Reproducible: no timestamp or serial, so the same packages, the same bytes."""
    assert docker.run(parent_image, "sbom", check=True).stdout == shipped_text


def test_the_sbom_lists_every_debian_package(parent_image: str, shipped: dict[str, Any]) -> None:
    query = docker.run(
        parent_image, "dpkg-query", "-W", "-f", "${Package} ${Version}\\n", check=True
    )
    installed = set(tuple(line.split()) for line in query.stdout.splitlines())
    listed = {
        (c["name"], c["version"])
        for c in shipped["components"]
        if c.get("purl", "").startswith("pkg:deb/")
    }
    assert listed == installed


def test_debian_purls_name_the_release_and_architecture(
    parent_image: str, shipped: dict[str, Any]
) -> None:
    codename = docker.run(
        parent_image, "sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME", check=True
    )
    purls = [c["purl"] for c in shipped["components"] if c.get("purl", "").startswith("pkg:deb/")]
    pattern = re.compile(
        rf"^pkg:deb/debian/[^@]+@[^?]+\?arch=(amd64|arm64|all)&distro={codename.stdout.strip()}$"
    )
    assert [p for p in purls if not pattern.match(p)] == []


@pytest.mark.parametrize("venv", VENVS)
def test_the_sbom_lists_every_venv_package(
    parent_image: str, shipped: dict[str, Any], venv: str
) -> None:
    assert python_packages(shipped, venv) == pip_list(parent_image, venv)


def test_the_generators_venv_is_lean(parent_image: str) -> None:
    """No pip of its own, no tzdata, none of the files no run reads, its
    pure-Python packages zipped: 42 MB became 7.5; the budget leaves room for
    a lock bump, not for a regression."""
    sizes = docker.run(parent_image, "du", "-sk", "--apparent-size", SBOM_VENV, check=True)
    assert int(sizes.stdout.split()[0]) <= 9 * 1024
    site = docker.run(
        parent_image,
        f"{SBOM_VENV}/bin/python",
        "-c",
        "import sysconfig; print(sysconfig.get_path('purelib'))",
        check=True,
    ).stdout.strip()
    present = docker.run(
        parent_image,
        "sh",
        "-c",
        # cyclonedx: the control, which must be there.
        f"cd {site} && ls -d cyclonedx pip tzdata lib4sbom/license_data/text"
        " cyclonedx/schema/_res/*.xsd yaml/_yaml.*.so",
    )
    assert present.stdout == "cyclonedx\n"


def test_every_python_package_has_a_licence(shipped: dict[str, Any]) -> None:
    python = [c for c in shipped["components"] if c.get("purl", "").startswith("pkg:pypi/")]
    assert [c["name"] for c in python if not c.get("licenses")] == []


def test_most_debian_packages_have_a_licence(shipped: dict[str, Any]) -> None:
    """distro2sbom reads the first License: of each copyright file; packages
    whose file is not machine-readable or names no SPDX licence have none.
    Multi-arch ones (libc6, under its dpkg name libc6:amd64) must have theirs."""
    debs = {c["name"]: c for c in shipped["components"] if c.get("purl", "").startswith("pkg:deb/")}
    without = sorted(name for name, c in debs.items() if not c.get("licenses"))
    assert debs["libc6"].get("licenses"), "multi-arch packages lost their licence"
    assert len(without) <= len(debs) // 4, (
        f"{len(without)} of {len(debs)} without a licence: {without}"
    )


def test_a_childs_sbom_lists_what_its_requirements_installed(
    child: str, child_sbom: dict[str, Any]
) -> None:
    app_venv = CONTRACT["aiohttp_parent_venv"]
    listed = python_packages(child_sbom, app_venv)
    assert ("six", "1.16.0") in listed
    assert ("aiohttp", OLDER_AIOHTTP) in listed, (
        "the child's aiohttp pin is not what the SBOM shows"
    )
    assert listed == pip_list(child, app_venv)


def test_a_childs_sbom_is_valid_cyclonedx(child: str) -> None:
    text = docker.run(child, "sbom", check=True).stdout
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None


def test_created_is_the_source_date_epoch(labels: dict[str, str]) -> None:
    """The date of the last commit that changed the build's inputs (the files'
    SOURCE_DATE_EPOCH too), not the build's: two builds of it agree."""
    epoch = subprocess.run(
        [sys.executable, "scripts/image_inputs.py", "--source-date-epoch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert epoch, "no SOURCE_DATE_EPOCH: is this a git checkout?"
    date = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    assert labels["org.opencontainers.image.created"] == date.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_base_image_digest_is_the_bases(labels: dict[str, str]) -> None:
    base = docker.inspect(labels["org.opencontainers.image.base.name"])
    expected = {d.split("@", 1)[1] for d in base.get("RepoDigests") or []} or {base["Id"]}
    assert labels["org.opencontainers.image.base.digest"] in expected


def test_docker_history_says_how_each_layer_was_made(parent_image: str) -> None:
    history = docker.docker(
        "history", "--no-trunc", "--format", "{{.Comment}}", parent_image
    ).stdout.splitlines()
    assert history[0].startswith("packer build of aiohttp-parent"), history
    assert all(comment.strip() for comment in history), history


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def make_audit(
    image: str, sbom_text: str, tmp_path: Path, osv_url: str, debsecan: str
) -> tuple[int, str]:
    (tmp_path / "sbom.cdx.json").write_text(sbom_text)
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "audit",
            f"AUDIT_IMAGE={image}",
            f"SBOM={tmp_path / 'sbom.cdx.json'}",
            f"AUDIT_OSV_URL={osv_url}",
            f"AUDIT_DEBSECAN_SOURCE={debsecan}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_make_audit_fails_when_no_vulnerability_source_answers(
    parent_image: str, shipped_text: str, closed_port: int, tmp_path: Path
) -> None:
    source = f"http://127.0.0.1:{closed_port}"
    returncode, output = make_audit(
        parent_image, shipped_text, tmp_path, f"{source}/v1/query", f"{source}/"
    )
    assert returncode != 0, output
    assert (
        f"pip-audit could not reach its vulnerability source, OSV at 127.0.0.1:{closed_port}"
        in output
    )
    assert (
        f"debsecan could not reach its vulnerability source, Debian's security tracker at 127.0.0.1:{closed_port}"
        in output
    )
    assert "were NOT audited" in output
    assert not re.search(r"no known vulnerabilities|passed", output, re.IGNORECASE), output


class FakeOSV(BaseHTTPRequestHandler):
    """OSV's query API on 127.0.0.1: one advisory, for aiohttp, whatever version."""

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = query["package"]["name"]
        vulns = [
            {
                "id": "TEST-0001",
                "summary": "a test advisory",
                "affected": [
                    {
                        "package": {"name": name, "ecosystem": "PyPI"},
                        "ranges": [
                            {
                                "type": "ECOSYSTEM",
                                "events": [{"introduced": "0"}, {"fixed": "99.0"}],
                            }
                        ],
                    }
                ],
            }
        ]
        body = json.dumps({"vulns": vulns} if name == "aiohttp" else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_osv() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOSV)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    thread.join(timeout=10)


def test_make_audit_reports_what_an_answering_source_knows(
    parent_image: str, shipped_text: str, fake_osv: str, closed_port: int, tmp_path: Path
) -> None:
    """With OSV answering (here a stand-in with one advisory), every Python
    package is audited and the advisory reported; Debian's source still
    unreachable keeps it a failure."""
    returncode, output = make_audit(
        parent_image, shipped_text, tmp_path, fake_osv, f"http://127.0.0.1:{closed_port}/"
    )
    assert returncode != 0, output
    assert "Python packages: every one audited; 1 known vulnerabilities" in output
    assert re.search(r"vulnerable: aiohttp \S+: TEST-0001 \(fixed in 99\.0\)", output), output
    assert f"FAILED: Debian packages of {parent_image} were NOT audited" in output
