"""The benchmark harness in its smoke mode (one short round on the suite's
parent image), so `make bench` cannot rot. Its figures are not looked at."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# About 4 minutes, an Ansible converge among them: make test runs it beside the
# molecule scenarios.
pytestmark = pytest.mark.beside_molecule

# What a second converge of playbooks/image.yml over the built image changes,
# and only because the build purged python3-apt (which a web service never
# needs): the first package check finds it missing and says "changed", the apt
# module puts it back with fresh package lists, and the clean-up removes both
# again.
# The playbook's own idempotence is molecule's `image` scenario (which keeps
# python3-apt); anything else changing here is a task that is not idempotent.
PYTHON3_APT_CHANGES = {
    "ca_certificates : Check whether the CA certificates package needs installing",
    "container : Remove the build-only packages",
    "container : Remove what the build left behind",
}


@pytest.mark.slow
def test_bench_smoke_run_writes_report_json_and_chart(parent_image: str, tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--smoke",
            "--project-parent",
            parent_image,
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    results = json.loads((tmp_path / "latest.json").read_text())
    figures = results["figures"]
    for key in (
        "parent_size",
        "child_build",
        "realistic_cold",
        "realistic_rebuild",
        "startup",
        "rps_nginx",
        "rps_static",
        "rps_direct",
        "rss",
        "pss",
        "stop",
    ):
        assert figures[key]["median"]["project"] > 0, key
        assert figures[key]["median"]["peer"] > 0, key
        assert figures[key]["ratio"] is not None, key
    # What explains them: per-process memory, the access log's cost, the machine.
    for side in ("project", "peer"):
        processes = results["processes"][side]
        assert any("nginx" in p["command"] for p in processes), processes
        assert any("gunicorn" in p["command"] for p in processes), processes
        total = sum(p["pss"] for p in processes)
        assert total == pytest.approx(figures["pss"]["samples"][side][-1]), processes
    assert set(results["access_log_off"]) == {"rps_nginx", "rps_static", "rps_direct"}
    assert set(results["machine_state"]) == {"before", "after"}
    assert results["exit_codes"] == {"project": [0], "peer": [0]}
    converge = results["ansible_second_converge"]
    assert set(converge["changed_tasks"]) <= PYTHON3_APT_CHANGES, converge["changed_tasks"]
    assert converge["changed"] == len(converge["changed_tasks"])
    report = (tmp_path / "latest.md").read_text()
    assert "Smoke run" in report
    assert "| Throughput, / through nginx |" in report
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
