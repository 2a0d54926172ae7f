"""Every form an APP_MODULE can take, right and wrong."""

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator

from aiohttp import web

VERSION = "1.0"


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"{request.app['form']}\n")


def _app(form: str) -> web.Application:
    app = web.Application()
    app["form"] = form
    app.router.add_get("/", hello)
    return app


app = _app("an application")


async def create_app() -> web.Application:
    return _app("an async factory")


def make_app() -> web.Application:
    return _app("a sync factory")


async def configured(name: str, loud: bool = False) -> web.Application:
    return _app(name.upper() if loud else name)


def uploads() -> web.Application:
    # Takes uploads of up to 32 MB: more than nginx's default.
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app["form"] = "uploads"
    app.router.add_get("/", hello)
    return app


def streaming() -> web.Application:
    """Uploads read as they arrive; /seen tells which reached the handler, and
    whether an Expect header came with them."""
    seen: list[dict[str, object]] = []

    async def upload(request: web.Request) -> web.Response:
        seen.append({"expect": request.headers.get("Expect")})
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.Response(text=f"{size}\n")

    async def seen_so_far(request: web.Request) -> web.Response:
        return web.json_response(seen)

    app = _app("streaming")
    app.router.add_post("/upload", upload)
    app.router.add_get("/seen", seen_so_far)
    return app


def big_headers() -> web.Application:
    """Large cookies (SSO tokens): aiohttp's header limits raised to 64 KiB."""

    async def cookie(request: web.Request) -> web.Response:
        return web.Response(text=f"{len(request.headers.get('Cookie', ''))}\n")

    app = web.Application(handler_args={"max_field_size": 65536, "max_line_size": 65536})
    app.router.add_get("/", hello)
    app.router.add_get("/cookie", cookie)
    app["form"] = "big headers"
    return app


async def with_address() -> tuple[web.Application, str, int]:
    return _app("a tuple"), "0.0.0.0", 8080


def forgot_return() -> None:
    _app("never returned")


async def database() -> web.Application:
    # A database that is not there yet: the connection is refused.
    await asyncio.open_connection("127.0.0.1", 5432)
    return _app("unreachable")


async def from_environment() -> web.Application:
    # A required setting read from the environment, which nobody set.
    return _app(os.environ["DATABASE_URL"])


def exits() -> web.Application:
    # A factory that gives up the way scripts do.
    sys.exit("settings.toml not found")


def exits_on_startup() -> web.Application:
    # A start-up check that gives up the way scripts do.
    async def check_cache(app: web.Application) -> None:
        sys.exit("cache not configured")

    app = _app("exits on startup")
    app.on_startup.append(check_cache)
    return app


def notes() -> web.Application:
    # A tutorial's database next to the code (the app dir is root's).
    sqlite3.connect("notes.sqlite3").execute("CREATE TABLE IF NOT EXISTS notes (text)")
    return _app("notes")


async def on_startup_fails() -> web.Application:
    async def connect(app: web.Application) -> None:
        raise RuntimeError("cache server at cache:6379 is not answering")

    app = _app("never started")
    app.on_startup.append(connect)
    return app


async def never_ready() -> web.Application:
    await asyncio.Event().wait()  # a service that never answers, without a timeout
    return _app("never")


async def never_ready_ctx() -> web.Application:
    async def database(app: web.Application) -> AsyncIterator[None]:
        await asyncio.Event().wait()  # the same, in a cleanup_ctx
        yield

    app = _app("never")
    app.cleanup_ctx.append(database)
    return app


async def slow_shutdown() -> web.Application:
    async def flush_queue(app: web.Application) -> None:
        await asyncio.sleep(30)  # longer than the stop allows

    app = _app("slow to shut down")
    app.on_shutdown.append(flush_queue)
    return app


async def own_sigterm() -> web.Application:
    # A handler of its own for docker stop's signal, set in on_startup.
    async def handle_sigterm(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: print("the app saw SIGTERM", flush=True))

    async def clean_up(app: web.Application) -> None:
        print("the app cleaned up", flush=True)

    app = _app("handles SIGTERM")
    app.on_startup.append(handle_sigterm)
    app.on_cleanup.append(clean_up)
    return app


async def own_server() -> None:
    # The asyncio.run(main()) habit: a runner and a site of its own, then wait.
    runner = web.AppRunner(_app("its own server"))
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", 8080).start()
    await asyncio.Event().wait()


def main() -> None:
    # The habit of `python -m forms`: build the app, then run it.
    web.run_app(_app("a main that runs the app"), port=8080)


async def legacy(loop: asyncio.AbstractEventLoop) -> web.Application:
    # aiohttp 2 factories took the loop (the original parent's era).
    assert loop is asyncio.get_running_loop()
    return _app("a factory taking the loop")
