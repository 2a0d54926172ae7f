"""gunicorn settings of aiohttp-parent. Every value comes from the environment
(see README.rst, "Runtime settings"); GUNICORN_CMD_ARGS still overrides them."""

import importlib
import inspect
import sys

sys.path.insert(0, "/usr/local/lib/aiohttp-parent")

import runtime

_s = runtime.Settings.from_env(check_tls=False)

wsgi_app = _s.app_module
worker_class = "aiohttp_parent_worker.UVLoopWorker"
bind = [_s.gunicorn_bind]
workers = _s.workers
timeout = _s.timeout
graceful_timeout = _s.graceful_timeout
keepalive = _s.keepalive
max_requests = _s.max_requests
max_requests_jitter = _s.max_requests_jitter
loglevel = _s.log_level
errorlog = "-"
# nginx logs every request; without nginx, gunicorn does.
accesslog = None if _s.nginx else "-"
forwarded_allow_ips = _s.forwarded_allow_ips
# Socket (and files the app creates) 0770/0660: the group is nginx's (run-gunicorn).
umask = 0o007
worker_tmp_dir = "/dev/shm"
proc_name = f"gunicorn {_s.app_module}"
# Production: import the app once in the master, fork workers from it.
# DEV=1: workers import it and reload when the code changes.
preload_app = not _s.dev
reload = _s.dev


def _check_app(spec: str) -> None:
    """Name APP_MODULE in the error, and catch a wrong type before any worker
    forks. The module stays imported, so gunicorn's own import reuses it."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    try:
        module = importlib.import_module(module_name)
        target = module
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as exc:  # any error in the user's import is reported the same way
        sys.exit(
            f"aiohttp-parent: error: APP_MODULE={spec!r} cannot be loaded: {type(exc).__name__}: {exc}"
        )
    from aiohttp import web

    if not (isinstance(target, web.Application) or inspect.iscoroutinefunction(target)):
        sys.exit(
            f"aiohttp-parent: error: APP_MODULE={spec!r} is a {type(target).__name__}, "
            "not an aiohttp.web.Application or an async function returning one"
        )


if preload_app and "(" not in _s.app_module:
    sys.path.insert(0, "/app")
    _check_app(_s.app_module)
