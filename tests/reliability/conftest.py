"""The hostile suite's fixtures: a child app that misbehaves on request, and the
recorder behind docs/reliability.rst (each test's docstring names its scenario
and what must hold; `figure` records what it measured)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability import report

HERE = Path(__file__).parent

# Requests that fail on purpose: raise, kill the worker, block the event loop,
# wait forever, leak memory; /seen counts what reached the app.
FAULTY_APP = """\
import asyncio
import os
import time

from aiohttp import web

LEAK = []
SEEN = {"count": 0}


@web.middleware
async def count(request, handler):
    if request.path != "/seen":
        SEEN["count"] += 1
    return await handler(request)


async def index(request):
    return web.Response(text="ok\\n")


async def seen(request):
    return web.json_response({"pid": os.getpid(), **SEEN})


async def fail(request):
    raise RuntimeError("this handler always fails")


async def die(request):
    os._exit(1)


async def block(request):
    time.sleep(3600)  # blocks the event loop: only gunicorn's timeout ends it


async def hang(request):
    await asyncio.sleep(3600)  # the loop stays free: nginx's read timeout ends it


async def leak(request):
    LEAK.append(bytearray(4 * 1024 * 1024))
    with open("/proc/self/status") as status:
        rss = next(line for line in status if line.startswith("VmRSS"))
    return web.json_response({"pid": os.getpid(), "rss_kib": int(rss.split()[1])})


async def echo(request):
    return web.Response(body=await request.read())


async def create_app():
    app = web.Application(middlewares=[count], client_max_size=64 * 1024**2)
    app.add_routes([
        web.get("/", index), web.get("/seen", seen), web.get("/fail", fail),
        web.get("/die", die), web.get("/block", block), web.get("/hang", hang),
        web.get("/leak", leak), web.post("/echo", echo),
    ])
    return app
"""

BROKEN_AT_IMPORT = 'raise RuntimeError("cannot reach the database at db:5432")\n'


@pytest.fixture(scope="session")
def faulty_image(build_child, parent_image: str) -> str:
    tag, _ = build_child(
        {
            "requirements.txt": "",
            "faulty.py": FAULTY_APP,
            "broken.py": BROKEN_AT_IMPORT,
            "static/ok.txt": "static ok\n",
            "Dockerfile": f"FROM {parent_image}\nENV APP_MODULE=faulty:create_app\n",
        },
        name="faulty",
    )
    return tag


# --- docs/reliability.rst -------------------------------------------------------------

_FIGURES: dict[str, str] = {}
_OUTCOMES: dict[str, str] = {}
_SCENARIOS: dict[str, tuple[str, str]] = {}


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record what this scenario measured, for docs/reliability.rst."""

    def record(text: str) -> None:
        _FIGURES[request.node.nodeid] = re.sub(r"\x1b\[[0-9;]*m", "", text)  # pip's colours

    return record


def _scenario(item: pytest.Item) -> tuple[str, str]:
    doc = (getattr(item, "function", None).__doc__ or item.name).strip()  # type: ignore[union-attr]
    title, _, claim = doc.partition("\n")
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        title = f"{title} [{callspec.id}]"
    return title.strip(), " ".join(claim.split())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)
            _SCENARIOS[item.nodeid] = _scenario(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    result = yield
    if item.nodeid in _SCENARIOS and (result.when == "call" or result.outcome != "passed"):
        _OUTCOMES.setdefault(item.nodeid, result.outcome)
        if result.when == "call":
            _OUTCOMES[item.nodeid] = result.outcome
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    results = {
        test_id: {
            "scenario": _SCENARIOS[test_id][0],
            "claim": _SCENARIOS[test_id][1],
            "outcome": outcome,
            "figure": _FIGURES.get(test_id, ""),
        }
        for test_id, outcome in _OUTCOMES.items()
        if outcome != "skipped"
    }
    if results:
        report.write(results)
