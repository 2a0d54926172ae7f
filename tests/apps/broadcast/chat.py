"""Keeps its websocket clients in memory and broadcasts every message to them:
right with one worker, wrong with several (README, "Per-worker state")."""

import weakref

from aiohttp import WSMsgType, web

CLIENTS = web.AppKey("clients", weakref.WeakSet)


async def chat(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    request.app[CLIENTS].add(ws)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            for client in set(request.app[CLIENTS]):
                await client.send_str(msg.data)
    return ws


async def index(request: web.Request) -> web.Response:
    return web.Response(text="chat\n")


async def create_app() -> web.Application:
    app = web.Application()
    app[CLIENTS] = weakref.WeakSet()
    app.router.add_get("/", index)
    app.router.add_get("/chat", chat)
    return app
