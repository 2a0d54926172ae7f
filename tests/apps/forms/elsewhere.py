"""Changes directory at import, the common cure for paths relative to the code."""

import os
from pathlib import Path

from aiohttp import web

os.chdir(Path(__file__).parent / "data")


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=Path("greeting.txt").read_text())


app = web.Application()
app.router.add_get("/", hello)
