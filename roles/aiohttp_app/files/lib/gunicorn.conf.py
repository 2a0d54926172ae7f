"""gunicorn settings of aiohttp-parent. Every value comes from the environment
(see README.rst, "Runtime settings"); GUNICORN_CMD_ARGS still overrides them."""

import sys

sys.path.insert(0, "/usr/local/lib/aiohttp-parent")

import aiohttp_parent_app
import runtime

_s = runtime.Settings.from_env(check_tls=False)

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
# gunicorn >= 24's control socket (gunicornc): supervisord is the control
# here, and a read-only root has no place for it.
control_socket_disable = True
proc_name = f"gunicorn {_s.app_module}"
# Production: import the app once in the master, fork workers from it.
# DEV=1: workers import it and reload when the code changes.
preload_app = not _s.dev
reload = _s.dev


# Every worker builds the app with aiohttp_parent_app, which accepts the forms
# aiohttp apps are written in and names what is wrong when it cannot.
wsgi_app = "aiohttp_parent_app:application"
if preload_app:
    aiohttp_parent_app.preload(_s.app_module)
