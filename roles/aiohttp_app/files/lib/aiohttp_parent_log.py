"""gunicorn's logger with the access log written in batches (gunicorn's
logger_class in gunicorn.conf.py).

Without nginx (API-only mode) gunicorn logs every request: aiohttp formats the
line and hands it to gunicorn's "gunicorn.access" logger, whose handler writes
and flushes it to stdout, the container's log pipe. One write per request,
through the logging module, halved the throughput of a small handler. Here
aiohttp still formats the line (same format, ACCESS_LOG_FORMAT rules
unchanged), and the lines are collected and written together:

- at most PIPE_BUF bytes per write, so a batch reaches the pipe in one piece
  and never interleaves with the other workers' lines (the same rule as
  nginx's ``buffer=4k``);
- within FLUSH_SECONDS of the first line of a batch, when the worker is idle
  (``docker logs -f`` readers see a request within about a second);
- before any other line of this logger, and when the worker exits (a
  graceful stop loses no line; a worker killed with SIGKILL, after
  GUNICORN_TIMEOUT, loses at most the last second's).

Only the default destination is batched: an access log sent to a file, to
syslog, or configured by a logging config of the user's keeps gunicorn's own
handlers, and so does a worker without a running event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import select
import sys
from collections.abc import Mapping

from gunicorn import glogging

# The largest write a pipe keeps in one piece (Linux: 4096).
BATCH_BYTES = select.PIPE_BUF
FLUSH_SECONDS = 1.0


class BufferedLines(logging.Logger):
    """The "gunicorn.access" logger for aiohttp's AccessLogger: info() lines
    go to `fd` in batches; anything else flushes them, then logs as usual."""

    def __init__(self, fd: int, handlers: list[logging.Handler]) -> None:
        super().__init__("gunicorn.access", logging.INFO)
        self.propagate = False
        self.handlers = list(handlers)
        self._fd = fd
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        atexit.register(self.flush)

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        # As logging does: one mapping is the values (gunicorn's own access()
        # passes its atoms so).
        one_mapping = len(args) == 1 and isinstance(args[0], Mapping) and args[0]
        text = str(msg) % (args[0] if one_mapping else args) if args else str(msg)
        line = (text + "\n").encode("utf-8", "backslashreplace")
        if self._size + len(line) > BATCH_BYTES:
            self.flush()
        self._lines.append(line)
        self._size += len(line)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop to flush later: write now
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def handle(self, record: logging.LogRecord) -> None:
        # Other levels (aiohttp's "Error in logging") keep their order.
        self.flush()
        super().handle(record)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:  # nobody reads the log any more: say so once, where we can
            print(f"aiohttp-parent: access log lines lost: {exc}", file=sys.stderr, flush=True)


class Logger(glogging.Logger):
    """gunicorn's Logger; the access log, when it goes to stdout ("-", the
    default of API-only mode) and nothing else configures logging, batched."""

    def setup(self, cfg: object) -> None:
        previous = (
            self.access_log
            if isinstance(getattr(self, "access_log", None), BufferedLines)
            else None
        )
        if previous is not None:  # a reload (HUP) sets up again: keep nothing back
            previous.flush()
            self.access_log = logging.getLogger("gunicorn.access")
        super().setup(cfg)
        own_config = cfg.syslog or cfg.logconfig_dict or cfg.logconfig_json or cfg.logconfig
        if cfg.accesslog == "-" and not own_config:
            self.access_log = BufferedLines(sys.stdout.fileno(), self.access_log.handlers)

    def flush_access_log(self) -> None:
        if isinstance(self.access_log, BufferedLines):
            self.access_log.flush()
