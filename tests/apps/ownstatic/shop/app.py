"""Serves its static files itself, from its package, at /static/."""

from pathlib import Path

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    return web.Response(text="shop\n")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static/", Path(__file__).parent / "static")
    return app
