"""A poller thread started at import: a cache refresher's (or a scheduler's) habit."""

import threading
import time

from aiohttp import web

polls = 0


def poll() -> None:
    global polls
    while True:
        polls += 1
        time.sleep(0.05)


threading.Thread(target=poll, name="refresher", daemon=True).start()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"{polls}\n")


app = web.Application()
app.router.add_get("/", hello)
