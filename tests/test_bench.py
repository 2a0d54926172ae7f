"""The benchmark harness in its smoke mode (one short round on the suite's
parent image), so `make bench` cannot rot. Its figures are not looked at."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
    for key in ("parent_size", "child_build", "startup", "rps_nginx", "rps_static", "rss", "stop"):
        assert figures[key]["median"]["project"] > 0, key
        assert figures[key]["median"]["peer"] > 0, key
        assert figures[key]["ratio"] is not None, key
    assert figures["rps_direct"]["median"]["project"] > 0
    assert results["exit_codes"] == {"project": [0], "peer": [0]}
    converge = results["ansible_second_converge"]
    assert converge["changed"] == 0, converge["changed_tasks"]
    report = (tmp_path / "latest.md").read_text()
    assert "Smoke run" in report
    assert "| Throughput, / through nginx |" in report
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
