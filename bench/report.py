"""latest.json, latest.md and latest.png from one run of bench/run.py."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a build host
import matplotlib.pyplot as plt

# Why a target is missed and what would close it; the report shows the note of
# every missed target (see bench/README.md for the measurements' caveats).
NOTES = {
    "parent_size": (
        "Both images are the same Debian packages and the same pins. The project "
        "strips the debug symbols from the venv's C extensions (uvloop alone "
        "carries 14 MB) and keeps .pyc files only for the packages that serve "
        "(3 MB), not for pip (5 MB), which runs only in child builds; the peer "
        "keeps both. The project also ships what the peer has not: its SBOM and "
        "the venv of the generators that rebuild it (about 8 MB, zipped), its "
        "runtime scripts and a lock of the venv. Without the generators it "
        "would be about 0.85x."
    ),
    "child_size": "The child adds the same few KB on both: the ratio is the parents'.",
    "cold_build": (
        "The peer's three RUN steps finish in seconds on a fast local mirror. "
        "Packer starts a container, runs the Ansible tasks the report counts "
        "over `docker exec` (pipelined: one exec each; apt keeps its binary "
        "cache between them), writes the SBOM, strips the venv and commits; the "
        "slowest tasks are listed above. That price "
        "buys one set of roles for images and VMs, idempotent and check-mode "
        "clean; it is paid once per release, while the child build is paid by "
        "every team on every commit."
    ),
    "child_build": (
        "The project's ONBUILD runs in two parts, so that a code change keeps "
        "the dependencies' layer (the realistic child's rebuild): three more "
        "COPY layers, a second RUN and the switches to root and back, which "
        "cost the classic builder under a second here even when, as for this "
        "child, there is nothing to install. It also checks "
        "nginx's configuration (`nginx -t`), so a broken child fails at build time."
    ),
    "realistic_rebuild": (
        "The project copies only requirements*.txt, constraints*.txt, bin/ and "
        "container/ before installing the requirements, so a change to the "
        "app's code reuses that layer; the peer's ONBUILD copies the whole "
        "context first, and every code change reinstalls every wheel."
    ),
    "realistic_cold": (
        "Both install the same 44 wheels with pip from PyPI, through this "
        "site's proxy, and both compile .pyc files (pip's default; the project "
        'keeps it: README.rst, "Installer and bytecode"). The network\'s noise '
        "is larger than the difference; the project's two parts add under a "
        "second, as for the small child."
    ),
    "startup": (
        "Both run supervisord, which polls with a 1 s timeout: the peer's programs "
        "start only after the first tick. The project wakes supervisord's poll on "
        "every signal (and once at start), validates its settings and runs "
        "`nginx -t` before starting anything, and imports the app once in "
        "gunicorn's master (from the venv's hash-checked .pyc files). What "
        "remains is docker run itself."
    ),
    "rps_nginx": (
        "The peer proxies with nginx's defaults: HTTP/1.0 to the upstream and a "
        "new TCP connection per request. The project keeps idle upstream "
        "connections alive over a unix socket, and logs every request to the "
        "container's output (nginx's own buffered writes, `buffer=4k "
        "flush=1s`), which Docker's log driver then carries on the same 2 "
        "cores; the peer writes a file inside the container that nobody reads. "
        "The figure with the log off, above, is what the log costs."
    ),
    "rps_static": (
        "Both serve the file with Debian's nginx and sendfile; the project keeps "
        "the file's descriptor open (`open_file_cache`). The project writes every "
        "request to the container's log: buffered by nginx, then carried by "
        'Docker\'s log driver on the same 2 cores (README.rst, "Logs": the '
        "`local` driver is cheaper than `json-file`); the peer writes nginx's "
        "default access.log inside the container, where nobody reads it and it "
        "is lost with the container. The figure with the log off is above."
    ),
    "rps_direct": (
        "The project's API-only mode logs every request (aiohttp's access log "
        "lines, written in batches of up to 4 KiB within a second); the peer's "
        "gunicorn logs none, which is what it gives up for this figure. The "
        "project with its access log off (GUNICORN_ACCESS_LOG=0) is above."
    ),
    "rss": (
        "gunicorn's master imports the app before forking (preload_app), so an "
        "import error fails once, clearly, before any worker starts, and a "
        "replaced worker serves at once; that copy costs memory in the master. "
        "The project's PID 1 (serve, with supervisord in its process) stands "
        "where the peer's supervisord does; the table above lists each process."
    ),
    "pss": (
        "PSS splits the pages that gunicorn's workers share with its master, so "
        "it is the fairer memory figure; the table above shows, process by "
        "process, where the two sides differ."
    ),
    "stop": (
        "The project drains: nginx gets QUIT and finishes in-flight requests, "
        "then gunicorn gets TERM. The peer's supervisord sends TERM to both at "
        "once: nginx's fast shutdown cuts in-flight requests."
    ),
}

FLAWS = """\
The peer's real flaws, kept on purpose (a typical hand-written setup has them):

- `docker stop` sends TERM to nginx (fast shutdown): requests in flight are cut.
- The upstream is HTTP/1.0 without keep-alive: one TCP connection per request.
- nginx's access and error logs go to files inside the container, not to
  `docker logs`; they grow until the container is replaced.
- A program that cannot start leaves supervisord running: the container stays
  up answering 502 instead of exiting for the orchestrator to restart it.
- It runs only as root (supervisord's socket and nginx's pid in /run), and the
  build's CA bundle stays in the image.
"""


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    digits = 0 if abs(value) >= 100 else 2
    return f"{value:,.{digits}f}{' ' + unit if unit else ''}"


def markdown(results: dict, smoke: bool) -> str:
    figs = results["figures"]
    lines = [
        "# aiohttp-parent vs the classic Dockerfile",
        "",
        f"Run {results['date']}, revision `{results['revision']}`, {results['machine']}, "
        f"{results['duration_s']} s. Medians of the samples; ratio = project ÷ peer. "
        "Targets are goals, recorded and never asserted.",
        "",
    ]
    if smoke:
        lines += ["**Smoke run (one short round): these figures mean nothing.**", ""]
    lines += [
        "| Figure | Project | Peer | Ratio | Target | Met | Samples (project / peer) |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figs.values():
        met = {True: "yes", False: "**no**", None: "—"}[f["met"]]
        samples = " / ".join(
            ", ".join(_fmt(v) for v in f["samples"][side]) or "—" for side in ("project", "peer")
        )
        lines.append(
            f"| {f['title']} | {_fmt(f['median']['project'], f['unit'])} | "
            f"{_fmt(f['median']['peer'], f['unit'])} | {_fmt(f['ratio'])}{'x' if f['ratio'] is not None else ''} | "
            f"{f['target'] or '—'} | {met} | {samples} |"
        )
    nvd = results["nginx_vs_direct"]
    converge = results["ansible_second_converge"]
    exits = results["exit_codes"]
    lines += [
        "",
        *_machine_lines(results),
        "",
        f"- Project: `/` through nginx ÷ gunicorn direct (API-only) = {_fmt(nvd['ratio'])}x "
        f"(target {nvd['target']}: {'met' if nvd['met'] else '**missed**'}).",
        f"- `docker stop` exit codes: project {exits['project']}, peer {exits['peer']} "
        "(target: 0).",
        f"- Ansible, second converge of `playbooks/image.yml` over the built image: "
        f"{converge['seconds']:.1f} s, changed={converge['changed']} (target 0). "
        "The peer has no equivalent.",
        "",
    ]
    lines += _explain_lines(results)
    missed = [key for key, f in figs.items() if f["met"] is False]
    if missed:
        lines += ["## Missed targets", ""]
        lines += [f"- **{figs[key]['title']}**: {NOTES.get(key, '')}" for key in missed]
        lines.append("")
    informative = [key for key in NOTES if key in figs and key not in missed]
    lines += ["## Notes", ""]
    lines += [f"- {figs[key]['title']}: {NOTES[key]}" for key in informative]
    lines += ["", FLAWS]
    return "\n".join(lines)


def _machine_lines(results: dict) -> list[str]:
    """The machine's state at the start and the end: a busy one is called out."""
    state = results.get("machine_state", {})
    lines = []
    for when in ("before", "after"):
        if when not in state:
            continue
        s = state[when]
        others = ", ".join(s["other_containers"]) or "none"
        lines.append(
            f"- Machine {when} the run: load {s['load']:.2f}, CPU {s['busy_percent']:.0f} % busy, "
            f"other containers: {others}."
        )
        if s["other_containers"] or s["busy_percent"] > 25:
            lines.append("  **Warning: the machine was not quiet; these figures may mislead.**")
    return lines


def _explain_lines(results: dict) -> list[str]:
    """What explains the figures: the access log's cost, memory per process,
    the cold build's slowest Ansible tasks."""
    lines = ["## What explains the figures", ""]
    off = results.get("access_log_off", {})
    figs = results["figures"]
    for key, entry in off.items():
        with_log = figs[key]["median"]["project"]
        peer = figs[key]["median"]["peer"]
        lines.append(
            f"- {figs[key]['title']}, project with its access log off: {_fmt(entry['median'])} "
            f"req/s ({_fmt(entry['median'] / peer if peer else None)}x the peer; "
            f"{_fmt(with_log)} with it on)."
        )
    for side, processes in results.get("processes", {}).items():
        lines += ["", f"Idle memory per process, {side} (MiB, last round):", ""]
        lines += ["| Process | RSS | PSS |", "|---|---|---|"]
        lines += [
            f"| `{p['command']}` | {p['rss']:.1f} | {p['pss']:.1f} |"
            for p in sorted(processes, key=lambda p: -p["pss"])
        ]
    tasks = results.get("ansible_tasks")
    if tasks:
        lines += [
            "",
            f"Cold build: {tasks['tasks']:.0f} Ansible tasks, {tasks['seconds']:.1f} s of the "
            "build (medians over the rounds); the slowest:",
            "",
        ]
        lines += [f"- {t['task']}: {t['seconds']:.1f} s" for t in tasks["slowest"]]
    return [*lines, ""]


def chart(results: dict, path: Path) -> None:
    figs = [
        (key, f) for key, f in results["figures"].items() if f["ratio"] is not None and f["target"]
    ]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(figs) + 1.5))
    names = [f["title"] for _, f in figs]
    ratios = [f["ratio"] for _, f in figs]
    colors = [
        "#2e7d32" if f["met"] else "#c62828" if f["met"] is False else "#757575" for _, f in figs
    ]
    ax.barh(names, ratios, color=colors)
    for i, (_, f) in enumerate(figs):
        bound = float(f["target"].split()[1])
        ax.plot([bound, bound], [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.text(max(f["ratio"], bound), i, f"  {f['ratio']:.2f}x", va="center", fontsize=8)
    ax.axvline(1.0, color="#9e9e9e", linestyle=":", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel("project ÷ peer (black tick: target; green met, red missed)")
    ax.set_title(f"aiohttp-parent vs classic Dockerfile, {results['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, out: Path, smoke: bool = False) -> None:
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(results, smoke))
    chart(results, out / "latest.png")
