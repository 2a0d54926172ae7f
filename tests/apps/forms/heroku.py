"""The Heroku habit: the port to serve on comes from PORT, read at import."""

import os

from aiohttp import web

PORT = int(os.environ["PORT"])


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"told port {PORT}\n")


app = web.Application()
app.router.add_get("/", hello)

if __name__ == "__main__":
    web.run_app(app, port=PORT)
