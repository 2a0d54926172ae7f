"""aiohttp 2's habit: a session made at import, on asyncio.get_event_loop()'s loop."""

import asyncio
import os

import aiohttp
from aiohttp import web

loop = asyncio.get_event_loop()
session = aiohttp.ClientSession(loop=loop)


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong")


async def hello(request: web.Request) -> web.Response:
    async with session.get(f"http://127.0.0.1:{os.environ['PORT']}/ping") as response:
        return web.Response(text=f"the session got {await response.text()}\n")


app = web.Application()
app.router.add_get("/", hello)
app.router.add_get("/ping", ping)
