"""docs/reliability.rst: each scenario of the hostile suite with the figure it
produced on its last run. Rows are merged by test id, so running part of the
suite updates only its rows."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs/reliability.json"
DOC = ROOT / "docs/reliability.rst"

SECTIONS = {
    "test_load": "Load",
    "test_faults": "Faults",
    "test_bad_input": "Bad input",
    "test_security": "Security",
}

INTRO = """\
Reliability, security and bad input
===================================

What aiohttp-parent survives, as a test suite: ``make test-reliability`` runs
it alone, ``make test`` includes it. Every scenario below is a real container
of ``examples/hello`` (or a small child app that misbehaves on purpose), real
HTTP on 127.0.0.1 and real signals. The assertions are about correctness
(no failed request, the right status, a clear message, the right exit code);
the figures are what the last run measured and are never asserted, since the
machine is shared. They were measured on a 2-core machine with the load
generator (wrk or the suite's asyncio client) on the same cores, so
throughput is the image's floor, not its ceiling.

Proven elsewhere in ``make test``: Ansible's ``--check`` on a converged VM
reports no change and a second converge changes nothing (molecule's ``vm``
and per-role scenarios); a broken nginx change on a VM is refused by
``nginx -t`` while the old configuration keeps serving (``vm`` side effect).

This file is written by the suite (``tests/reliability/report.py``) from
``docs/reliability.json``; do not edit it by hand.

"""


def git_revision() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return result.stdout.strip() or "unknown"


def merge(results: dict[str, dict]) -> dict[str, dict]:
    """Add this run's {test id: row} to the stored rows."""
    rows = json.loads(DATA.read_text()) if DATA.exists() else {}
    stamp = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "revision": git_revision(),
        "machine": machine(),
    }
    for test_id, row in results.items():
        rows[test_id] = {**row, **stamp}
    DATA.write_text(json.dumps(dict(sorted(rows.items())), indent=2) + "\n")
    return rows


def machine() -> str:
    return f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs"


def _cell(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or ["—"]
    return "\n     ".join(lines)


def render(rows: dict[str, dict]) -> str:
    out = [INTRO]
    runs = sorted({(r["date"], r["revision"], r["machine"]) for r in rows.values()})
    latest = runs[-1] if runs else ("never", "", "")
    passed = sum(r["outcome"] == "passed" for r in rows.values())
    current = sum((r["date"], r["revision"], r["machine"]) == latest for r in rows.values())
    older = (
        f" ({len(rows) - current} rows are from earlier, partial runs)"
        if current < len(rows)
        else ""
    )
    out.append(
        f"Last run: {latest[0]}, revision ``{latest[1]}``, {latest[2]}; "
        f"{passed} of {len(rows)} scenarios passed{older}.\n\n"
    )
    for module, title in SECTIONS.items():
        section = [(k, r) for k, r in rows.items() if f"/{module}.py::" in k]
        if not section:
            continue
        out.append(f"{title}\n{'-' * len(title)}\n\n")
        out.append(".. list-table::\n   :header-rows: 1\n   :widths: 30 35 35\n\n")
        out.append("   * - Scenario\n     - What must hold\n     - Last run\n")
        for _, row in section:
            result = row["figure"] or ""
            if row["outcome"] != "passed":
                result = f"**{row['outcome'].upper()}** {result}"
            out.append(
                f"   * - {_cell(row['scenario'])}\n"
                f"     - {_cell(row['claim'])}\n"
                f"     - {_cell(result)}\n"
            )
        out.append("\n")
    return "".join(out).rstrip() + "\n"


def write(results: dict[str, dict]) -> None:
    DOC.write_text(render(merge(results)))
