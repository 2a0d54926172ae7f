"""aiohttp's uvloop gunicorn worker, trusting X-Forwarded-* only from nginx,
with gunicorn's listen backlog.

aiohttp does not read X-Forwarded-For/-Proto/-Host itself. This worker puts a
middleware in front of the app that applies them when the request came from a
trusted peer: nginx over the unix socket (only nginx's group can connect), or
an address in gunicorn's forwarded_allow_ips (FORWARDED_ALLOW_IPS).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.worker import GunicornUVLoopWebWorker

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forwarded_middleware(trusted: set[str]) -> Callable:
    trust_all = "*" in trusted

    @web.middleware
    async def apply_forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""  # "" on a unix socket
        if peer == "" or trust_all or peer in trusted:
            changes: dict[str, str] = {}
            if xff := request.headers.get("X-Forwarded-For"):
                # nginx appends the address it saw; anything before it came from the client.
                changes["remote"] = xff.rsplit(",", 1)[-1].strip()
            if (proto := request.headers.get("X-Forwarded-Proto")) in ("http", "https"):
                changes["scheme"] = proto
            if host := request.headers.get("X-Forwarded-Host"):
                changes["host"] = host
            if changes:
                request = request.clone(**changes)
        return await handler(request)

    return apply_forwarded


def _install(app: web.Application, middleware: Callable) -> web.Application:
    app.middlewares.insert(0, middleware)
    return app


class UVLoopWorker(GunicornUVLoopWebWorker):
    _backlog_restored = False

    def notify(self) -> None:
        # aiohttp's SockSite listens again on gunicorn's socket with its own
        # backlog of 128, and a burst of new nginx connections (256 clients)
        # overflows that: connect() fails with EAGAIN and nginx answers 502.
        # The first notify comes right after the sites started.
        if not self._backlog_restored:
            for sock in self.sockets:
                sock.listen(self.cfg.backlog)
            self._backlog_restored = True
        super().notify()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        middleware = forwarded_middleware(set(self.cfg.forwarded_allow_ips))
        target = self.wsgi
        if isinstance(target, web.Application):
            self.wsgi = _install(target, middleware)
            return

        async def factory() -> web.Application | web.AppRunner:
            result = await target()
            _install(result.app if isinstance(result, web.AppRunner) else result, middleware)
            return result

        self.wsgi = factory
