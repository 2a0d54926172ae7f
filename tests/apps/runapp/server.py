"""Like aiohttp's examples: build the app, then run it when the module runs."""

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello from run_app\n")


app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="localhost", port=8080)
