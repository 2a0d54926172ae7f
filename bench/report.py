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
        "Both images are mostly the same Debian packages and the same venv. The "
        "project adds its runtime (supervisord's Python, a few scripts) and keeps "
        "Debian's dpkg-compiled .pyc files; the peer saves nothing a careful "
        "Dockerfile would not. Closing it needs a smaller stack, not a cleaner "
        "build: e.g. a distroless-style final stage copying only the venv and nginx."
    ),
    "child_size": "The child adds the same few KB on both: the ratio is the parents'.",
    "cold_build": (
        "Packer starts a container, runs Ansible over `docker exec` (one round trip "
        "per task, ~100 tasks) and commits; the Dockerfile runs three RUN steps. "
        "The roles are what the VMs use too: that cost buys one source of truth. "
        "Pipelining or Mitogen would shorten it."
    ),
    "child_build": (
        "The project's ONBUILD runs one script that also checks nginx's "
        "configuration (`nginx -t`) so a broken child fails at build time; the "
        "peer skips that check."
    ),
    "startup": (
        "The project validates its settings and runs `nginx -t` before "
        "supervisord starts anything, and preloads the app in gunicorn's master. "
        "Those checks turn bad settings into a clear exit instead of a 502; "
        "skipping `nginx -t` (already done at build time when nothing changed) "
        "would close part of the gap."
    ),
    "rps_nginx": (
        "The peer proxies with nginx's defaults: HTTP/1.0 to the upstream and a "
        "new TCP connection per request. The project keeps up to 128 idle upstream "
        "connections alive over a unix socket. Both run 2 workers on 2 cores "
        "with wrk on the same cores, so the ratio is bounded by the app's own "
        "cost per request."
    ),
    "rps_static": (
        "Both serve the file with Debian's nginx and sendfile; the project adds "
        "gzip for text and an Expires header. Equal is the expected result."
    ),
    "rss": (
        "The project runs a fatal listener and keeps supervisord in PID 1's "
        "Python; gunicorn preloads the app, so RSS double-counts pages shared "
        "copy-on-write with the workers (see PSS, which does not)."
    ),
    "stop": (
        "The project drains: nginx gets QUIT and finishes in-flight requests, "
        "then gunicorn gets TERM and its workers close on aiohttp's 1 s tick. The "
        "peer's supervisord sends TERM to both at once: nginx drops in-flight "
        "requests (the flaw this time buys back)."
    ),
}

FLAWS = """\
The peer's real flaws, kept on purpose (a typical hand-written setup has them):

- `docker stop` sends TERM to nginx (fast shutdown): requests in flight are cut.
- The upstream is HTTP/1.0 without keep-alive: one TCP connection per request.
- Logs go to nginx's files inside the container as well as supervisord's stdout.
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
            f"{_fmt(f['median']['peer'], f['unit'])} | {_fmt(f['ratio'])}x | "
            f"{f['target'] or '—'} | {met} | {samples} |"
        )
    nvd = results["nginx_vs_direct"]
    converge = results["ansible_second_converge"]
    exits = results["exit_codes"]
    lines += [
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
    missed = [key for key, f in figs.items() if f["met"] is False]
    if missed:
        lines += ["## Missed targets", ""]
        lines += [f"- **{figs[key]['title']}**: {NOTES.get(key, '')}" for key in missed]
        lines.append("")
    informative = [k for k in ("rss", "stop", "rps_static") if k not in missed]
    lines += ["## Notes", ""]
    lines += [f"- {figs[key]['title']}: {NOTES[key]}" for key in informative]
    lines += ["", FLAWS]
    return "\n".join(lines)


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
        ax.text(f["ratio"], i, f" {f['ratio']:.2f}x", va="center", fontsize=8)
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
