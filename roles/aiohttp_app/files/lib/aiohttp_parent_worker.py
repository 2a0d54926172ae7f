"""aiohttp's uvloop gunicorn worker, trusting X-Forwarded-* only from nginx,
with gunicorn's listen backlog, that fails fast when the app cannot start.
It makes its event loop itself, so that it serves whatever aiohttp a child
pins, and a worker that fails to boot before that reports it once too.

A worker whose app fails to start (its factory or on_startup raises, returns
the wrong thing, or is still not serving after APP_START_TIMEOUT seconds)
reports it once and exits with gunicorn's WORKER_BOOT_ERROR, so gunicorn
stops instead of forking replacements forever (aiohttp < 3.14 exits 0, and
the arbiter respawns it). The first worker that serves leaves the `ready`
note that nginx's start waits for.

aiohttp does not read X-Forwarded-For/-Proto/-Host itself. This worker puts a
middleware in front of the app that applies them when the request came from a
trusted peer: nginx over the unix socket (only nginx's group can connect), or
an address in gunicorn's forwarded_allow_ips (FORWARDED_ALLOW_IPS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import aiohttp_parent_app
import aiohttp_parent_log
import runtime
import uvloop
from aiohttp import web
from aiohttp.worker import GunicornUVLoopWebWorker
from gunicorn.workers.base import Worker

WORKER_BOOT_ERROR = 3  # gunicorn's arbiter halts on it

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# What code written for nginx in front over TCP reads as the peer's address
# (`host, port = request.transport.get_extra_info("peername")`, as aiohttp's
# docs do, and aiohttp-remotes' XForwardedStrict): nginx's side of the unix
# socket has none ("").
NGINX_PEERNAME = ("127.0.0.1", 0)


class _NginxTransport:
    """request.transport on the unix socket: the transport, with nginx's
    loopback address as its peername."""

    __slots__ = ("__weakref__", "_transport")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return NGINX_PEERNAME
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> object:
        if name == "_transport":  # unset: a copy made without __init__
            raise AttributeError(name)
        return getattr(self._transport, name)


_WRAPPED = "aiohttp_parent_transport"  # the key of a request's wrapper in its _cache


def peername_via_nginx() -> None:
    """Make request.transport (and aiohttp 3.14's request.get_extra_info) say
    nginx's loopback address when the connection is the unix socket's, whose
    peer has none. Once per worker, on aiohttp's request class: nothing is
    done per request, and a request that never reads them pays nothing (a
    subclass swapped in per request cost about 15% of `/`'s throughput).
    aiohttp writes responses through the protocol's own transport;
    FileResponse hands this one to loop.sendfile, which uvloop does not
    implement, and then writes the file itself, as before."""
    cls = web.BaseRequest
    if cls.__dict__.get(_WRAPPED):  # done in this process
        return
    setattr(cls, _WRAPPED, True)
    real = cls.transport

    def transport(self: web.BaseRequest) -> object:
        found = real.__get__(self, type(self))
        if found is None or found.get_extra_info("peername") != "":
            return found
        cache = getattr(self, "_cache", None)
        wrapped = cache.get(_WRAPPED) if isinstance(cache, dict) else None
        if wrapped is None or wrapped._transport is not found:
            wrapped = _NginxTransport(found)
            if isinstance(cache, dict):
                cache[_WRAPPED] = wrapped
        return wrapped

    cls.transport = property(transport)  # type: ignore[method-assign,assignment]
    if hasattr(cls, "get_extra_info"):  # aiohttp 3.14's shortcut to the transport's
        real_info = cls.get_extra_info

        def get_extra_info(self: web.BaseRequest, name: str, default: object = None) -> object:
            found = real_info(self, name, default)
            return NGINX_PEERNAME if name == "peername" and found == "" else found

        cls.get_extra_info = get_extra_info  # type: ignore[method-assign]


def forwarded_middleware(trusted: set[str]) -> Callable:
    trust_all = "*" in trusted
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted if t != "*"]

    def trusts(peer: str) -> bool:
        """nginx's socket (no address), or FORWARDED_ALLOW_IPS (API-only mode)."""
        if peer == "" or trust_all or peer in trusted:
            return True
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in networks)

    @web.middleware
    async def apply_forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusts(request.remote or ""):  # "" on a unix socket
            changes: dict[str, str] = {}
            if xff := request.headers.get("X-Forwarded-For"):
                # nginx appends the address it saw; anything before it came from the client.
                changes["remote"] = xff.rsplit(",", 1)[-1].strip()
            if (proto := request.headers.get("X-Forwarded-Proto")) in ("http", "https"):
                changes["scheme"] = proto
            if host := request.headers.get("X-Forwarded-Host"):
                changes["host"] = host
            # In place rather than request.clone(): aiohttp logs a handler's
            # error with the request it made, which should name the client.
            # remote, scheme and host are cached properties (reify) in _cache;
            # url and secure derive from them.
            cache = getattr(request, "_cache", None)
            if isinstance(cache, dict) and changes:
                cache.update(changes)
                cache.pop("url", None)
                cache.pop("secure", None)
            elif changes:
                request = request.clone(**changes)
        return await handler(request)

    return apply_forwarded


def app_module() -> str:
    return os.environ.get("APP_MODULE", "").strip()


def start_timeout() -> float:
    return float(os.environ.get("APP_START_TIMEOUT") or runtime.APP_START_TIMEOUT_DEFAULT)


def announce_ready() -> None:
    """The first worker to serve says so, and leaves the note nginx waits for.
    The first of each master leaves one for gunicorn-herder's reload too."""
    with contextlib.suppress(OSError):
        os.close(os.open(f"{runtime.APP_READY}.{os.getppid()}", os.O_WRONLY | os.O_CREAT, 0o644))
    try:
        os.close(os.open(runtime.APP_READY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return
    except OSError:
        pass
    print(f"aiohttp-parent: serving {app_module()}", file=sys.stderr, flush=True)


def _warn_body_limit(app: web.Application) -> None:
    """An app that accepts larger bodies than nginx (client_max_size above
    NGINX_CLIENT_MAX_BODY_SIZE) gets nginx's 413 where it expects the upload."""
    try:
        settings = json.loads(runtime.RUNTIME_JSON.read_text())
        nginx, limit = settings["nginx"], settings["client_max_body_size"]
    except (OSError, ValueError, KeyError):
        return
    nginx_takes = runtime.nginx_size(limit)  # 0: any size
    accepts = getattr(app, "_client_max_size", 1 << 20)  # 0: any size
    if nginx and nginx_takes and (accepts == 0 or accepts > nginx_takes):
        size = "of any size" if accepts == 0 else f"up to {accepts / (1 << 20):g} MiB"
        aiohttp_parent_app.warn_once(
            "body-limit",
            f"the app accepts request bodies {size} (client_max_size), but nginx answers "
            f"413 to any above NGINX_CLIENT_MAX_BODY_SIZE={limit}: raise it to match",
        )


def _check_debugtoolbar(app: web.Application) -> None:
    """aiohttp_debugtoolbar lets in the clients whose peername is one of its
    hosts (127.0.0.1): behind nginx, every client. Its console runs any Python
    a client sends."""
    if "debugtoolbar.main" not in app.router.named_resources():
        return
    try:
        dev = json.loads(runtime.RUNTIME_JSON.read_text())["dev"]
    except (OSError, ValueError, KeyError):
        dev = False
    risk = (
        "aiohttp_debugtoolbar, whose console runs any Python a client sends, and behind nginx "
        "every client passes its host check (each is 127.0.0.1 to it)"
    )
    if not dev:
        raise aiohttp_parent_app.AppError(
            f"APP_MODULE={app_module()!r} sets up {risk}: set it up only in development "
            "(DEV=1), and publish that port on 127.0.0.1 alone"
        )
    aiohttp_parent_app.warn_once(
        "debugtoolbar",
        f"the app sets up {risk}: publish this port on 127.0.0.1 alone "
        "(docker run -p 127.0.0.1:8080:80)",
    )


def _install(app: web.Application, middleware: Callable) -> web.Application:
    _check_debugtoolbar(app)
    app.middlewares.insert(0, middleware)
    _warn_body_limit(app)
    return app


class UVLoopWorker(GunicornUVLoopWebWorker):
    _serving: asyncio.Future[None] | None = None

    def init_signals(self) -> None:
        super().init_signals()
        # An app's own handler for a stop signal (add_signal_handler(SIGTERM,
        # ...) in on_startup, a published habit) would replace the worker's:
        # the worker would serve on until gunicorn kills it, and on_cleanup
        # would never run. The app's runs, then the worker's.
        stops = {
            signal.SIGTERM: self.handle_exit,
            signal.SIGQUIT: self.handle_quit,
            signal.SIGINT: self.handle_quit,
        }
        loop = self.loop
        add = loop.add_signal_handler

        def add_signal_handler(sig: int, callback: Callable[..., object], *args: object) -> None:
            stop = stops.get(sig)
            if stop is None or callback == stop:
                return add(sig, callback, *args)
            name = signal.Signals(sig).name
            aiohttp_parent_app.warn_once(
                f"signal-{name}",
                f"the app's own {name} handler ({getattr(callback, '__qualname__', callback)}) "
                "runs first, then the worker stops as usual: shutdown work belongs in "
                "on_shutdown or on_cleanup",
            )
            if callback == loop.stop:  # the worker's stop stops the loop, after on_cleanup
                return add(sig, stop, sig, None)

            def both(*given: object) -> None:
                try:
                    # GracefulExit, run_app's way to stop, is what follows anyway.
                    with contextlib.suppress(SystemExit, KeyboardInterrupt):
                        callback(*given)
                except Exception:
                    self.log.exception("the app's %s handler failed", name)
                finally:
                    stop(sig, None)

            return add(sig, both, *args)

        loop.add_signal_handler = add_signal_handler

    def init_process(self) -> None:
        # Not aiohttp's: before 3.13.4 (a child may pin one) it asks uvloop's
        # policy for the current loop first, which uvloop 0.22 and later refuse.
        try:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            Worker.init_process(self)  # boots, then serves until the worker exits
        except Exception as exc:
            if self.booted:
                raise
            # gunicorn halts on a worker that fails to boot, and supervisord
            # would start it again (within startsecs): the note stops the
            # container, once. As in _boot_failed, one exit 3 is enough.
            if not aiohttp_parent_app.report(
                f"a gunicorn worker failed to boot: {type(exc).__name__}: {exc} "
                "(gunicorn's traceback follows)"
            ):
                sys.exit(0)
            raise

    def run(self) -> None:
        try:
            super().run()
        finally:  # sys.exit() included: a graceful stop loses no access log line
            if flush := getattr(self.log, "flush_access_log", None):
                flush()

    def notify(self) -> None:
        # aiohttp calls notify() first right after its sites started: the
        # app is serving. Its SockSite listens again on gunicorn's socket
        # with its own backlog of 128, and a burst of new nginx connections
        # (256 clients) overflows that: connect() fails with EAGAIN and nginx
        # answers 502. Restore gunicorn's backlog.
        if self._serving is not None and not self._serving.done():
            for sock in self.sockets:
                sock.listen(self.cfg.backlog)
            self._serving.set_result(None)
            announce_ready()
        super().notify()

    async def _run(self) -> None:
        """aiohttp's _run (factory, on_startup, sites, then the serving loop),
        watched until it serves: a failure before that is a boot error."""
        # uvloop detaches a plain socket when its server closes; gunicorn's
        # wrapper it would close() after libuv did (EBADF, logged at exit).
        self.sockets = [getattr(sock, "sock", sock) for sock in self.sockets]
        loop = asyncio.get_running_loop()
        self._serving = loop.create_future()
        running = asyncio.ensure_future(self._start_and_serve())
        deadline = loop.time() + start_timeout()
        while not self._serving.done() and not running.done():
            if not self.alive:  # stopped while starting (docker stop, gunicorn halting)
                running.cancel()
                await asyncio.wait([running], timeout=self.cfg.graceful_timeout)
                return None
            if loop.time() >= deadline:
                where = aiohttp_parent_app.waiting_at(running)
                running.cancel()
                await asyncio.wait([running], timeout=self.cfg.graceful_timeout)
                return self._boot_failed(
                    f"APP_MODULE={app_module()!r} did not start within {start_timeout():g} s "
                    "(APP_START_TIMEOUT): its factory or on_startup handlers are still "
                    + (f"waiting at {where} " if where else "waiting ")
                    + "(for a database or service that does not answer? or does it "
                    "run a server of its own? name the function that returns the app)"
                )
            # Starting may await longer than gunicorn's timeout, which is
            # about a blocked loop: keep the arbiter's heartbeat going.
            Worker.notify(self)
            await asyncio.wait(
                [running, self._serving],
                timeout=min(1.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        if not self._serving.done():
            if running.cancelled() or running.exception() is None:
                return None  # stopped while starting (docker stop)
            exc = running.exception()
            if isinstance(exc, aiohttp_parent_app.AppError):
                return self._boot_failed(str(exc), exc.__cause__)
            return self._boot_failed(
                f"APP_MODULE={app_module()!r} failed to start: {type(exc).__name__}: {exc}"
                + aiohttp_parent_app.start_hint(exc),
                exc,
            )
        await running

    async def _start_and_serve(self) -> None:
        """aiohttp's _run. An exit while it starts (sys.exit() in on_startup)
        is a boot error like the others: out of a task, SystemExit would end
        the worker's loop, and gunicorn would fork replacements until the
        start deadline."""
        try:
            await super()._run()
        except SystemExit as exc:
            if self._serving is not None and self._serving.done():
                raise
            raise aiohttp_parent_app.AppError(
                f"APP_MODULE={app_module()!r} failed to start: {aiohttp_parent_app.exited(exc)}"
            ) from exc

    def _boot_failed(self, message: str, exc: BaseException | None = None) -> None:
        # One boot error is enough to halt gunicorn; a second one, reaped
        # while it halts, makes it die of an unhandled HaltServer instead.
        first = aiohttp_parent_app.report(message, exc)
        self.exit_code = WORKER_BOOT_ERROR if first else 0

    def load_wsgi(self) -> None:
        super().load_wsgi()
        peername_via_nginx()
        aiohttp_parent_app.prepare(app_module())
        middleware = forwarded_middleware(set(self.cfg.forwarded_allow_ips))
        batched = isinstance(self.log.access_log, aiohttp_parent_log.BufferedLines)
        target = self.wsgi
        if isinstance(target, web.Application) and not batched:
            self.wsgi = _install(target, middleware)
            return

        async def factory() -> web.Application | web.AppRunner:
            result = target if isinstance(target, web.Application) else await target()
            if isinstance(result, web.AppRunner):  # the app's own runner, as it made it
                _install(result.app, middleware)
                return result
            _install(result, middleware)
            return self._runner(result) if batched else result

        self.wsgi = factory

    def _runner(self, app: web.Application) -> web.AppRunner:
        """The runner aiohttp's worker makes (its _run, same arguments), with
        the access logger made for the batched access log."""
        return web.AppRunner(
            app,
            logger=self.log,
            keepalive_timeout=self.cfg.keepalive,
            access_log=self.log.access_log,
            access_log_class=aiohttp_parent_log.AccessLogger,
            access_log_format=self._get_valid_log_format(self.cfg.access_log_format),
            shutdown_timeout=self.cfg.graceful_timeout / 100 * 95,
        )
