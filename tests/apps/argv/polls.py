"""Parses its command line at import, like many demo apps, and offers an
init_func(argv) for `python -m aiohttp.web -P 8080 polls:init_func --greeting hi`."""

import argparse

from aiohttp import web

parser = argparse.ArgumentParser(prog="polls")
parser.add_argument("--greeting", default="hello")
ARGS = parser.parse_args()  # at import: gunicorn's own arguments would fail here


async def greet(request: web.Request) -> web.Response:
    return web.Response(text=f"{request.app['greeting']}\n")


def init_func(argv: list[str]) -> web.Application:
    app = web.Application()
    app["greeting"] = parser.parse_args(argv).greeting
    app.router.add_get("/", greet)
    return app
