"""A child written for the original parent: its own gunicorn program runs this."""

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    return web.Response(text="Hello from a seed-style child\n")


app = web.Application()
app.router.add_get("/", index)
