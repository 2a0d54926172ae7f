"""The example service: a page, a health route, a WebSocket echo and a slow route."""

import asyncio
import os
import socket

from aiohttp import WSMsgType, web

# Requests the app itself saw, by path: lets tests prove nginx served /static/.
SEEN = web.AppKey("seen", dict)


@web.middleware
async def count_requests(request: web.Request, handler):
    seen = request.app[SEEN]
    seen[request.path] = seen.get(request.path, 0) + 1
    return await handler(request)


async def index(request: web.Request) -> web.Response:
    return web.Response(text="Hello from aiohttp-parent\n")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "3")))
    return web.Response(text="slow done\n")


async def whoami(request: web.Request) -> web.Response:
    loop = asyncio.get_running_loop()
    return web.json_response(
        {
            "pid": os.getpid(),
            "uid": os.getuid(),
            "loop": type(loop).__module__,
            "debug": loop.get_debug(),
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "remote": request.remote,
            # The connection's peer, as aiohttp's docs read it: nginx, when it is in front.
            "peername": request.transport.get_extra_info("peername"),
            "scheme": request.scheme,
            "host": request.host,
            "seen": request.app[SEEN],
            # Which replica and which release answered (a container's
            # hostname is its id; HELLO_VERSION is set by an image or a run).
            "hostname": socket.gethostname(),
            "version": os.environ.get("HELLO_VERSION", ""),
        }
    )


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def create_app() -> web.Application:
    app = web.Application(middlewares=[count_requests])
    app[SEEN] = {}
    app.add_routes(
        [
            web.get("/", index),
            web.get("/healthz", health),
            web.get("/slow", slow),
            web.get("/whoami", whoami),
            web.get("/ws", echo),
        ]
    )
    return app
