"""A realistic service's shape for the bench: it imports what such services
import at start-up (templates, settings, models, metrics, structured logs) and
answers `/` from a template. Its code is what a team edits on every commit."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
import orjson
import prometheus_client
import pydantic
import sqlalchemy.ext.asyncio
import structlog
from aiohttp import web

log = structlog.get_logger()
REQUESTS = prometheus_client.Counter("service_requests", "Requests served")


class Settings(pydantic.BaseModel):
    name: str = "service"
    database_url: str = "postgresql+asyncpg://db/service"


async def index(request: web.Request) -> web.Response:
    REQUESTS.inc()
    return aiohttp_jinja2.render_template("index.html", request, {"name": request.app["name"]})


async def health(_request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps({"ok": True}), content_type="application/json")


def create_app() -> web.Application:
    settings = Settings()
    # Made, not connected: no database runs in the bench.
    sqlalchemy.ext.asyncio.create_async_engine(settings.database_url)
    app = web.Application()
    app["name"] = settings.name
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"))
    app.router.add_get("/", index)
    app.router.add_get("/healthz", health)
    log.info("service ready", name=settings.name)
    return app
