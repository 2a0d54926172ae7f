"""aiohttp_debugtoolbar set up unconditionally, as many tutorials leave it."""

import aiohttp_debugtoolbar
from aiohttp import web


async def index(request: web.Request) -> web.Response:
    return web.Response(text="<html><body>toolbar</body></html>", content_type="text/html")


def create_app() -> web.Application:
    app = web.Application()
    aiohttp_debugtoolbar.setup(app, intercept_redirects=False)
    app.router.add_get("/", index)
    return app
