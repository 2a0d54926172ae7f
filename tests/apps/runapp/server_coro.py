"""Like aiohttp's examples: run_app() given a coroutine that builds the app."""

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"Hello from {request.app['name']}\n")


async def init(name: str) -> web.Application:
    app = web.Application()
    app["name"] = name
    app.router.add_get("/", hello)
    return app


web.run_app(init("a coroutine"), port=8080)
