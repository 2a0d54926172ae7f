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
import datetime
import logging
import os
import select
import sys
import time
from collections.abc import Mapping

from aiohttp import web, web_log
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


class AccessLogger(web_log.AccessLogger):
    """aiohttp's access log lines, the same text in every format, made for
    BufferedLines with less work per request: the time (``%t``) formatted once
    a second rather than per request, and no ``extra`` mapping, which only a
    logging handler reads and BufferedLines has none for access lines. Those
    two were most of the line's cost: about a fifth of a small handler's time
    in a profile, a third of its throughput."""

    STAMP = "[%d/%b/%Y:%H:%M:%S %z]"

    def __init__(
        self, logger: logging.Logger, log_format: str = web_log.AccessLogger.LOG_FORMAT
    ) -> None:
        super().__init__(logger, log_format)
        self._second = -1
        self._stamp = ""
        self._values = [
            self._start_time if key_method[1] is web_log.AccessLogger._format_t else key_method[1]
            for key_method in self._methods
        ]

    def _start_time(self, request: object, response: object, seconds: float) -> str:
        # aiohttp's %t: when the request started, in local time, to the second.
        second = int(time.time() - seconds)
        if second != self._second:
            offset = datetime.timedelta(seconds=time.localtime(second).tm_gmtoff)
            start = datetime.datetime.fromtimestamp(second, datetime.timezone(offset))
            self._second, self._stamp = second, start.strftime(self.STAMP)
        return self._stamp

    def log(self, request: web.BaseRequest, response: web.StreamResponse, elapsed: float) -> None:
        if not isinstance(self.logger, BufferedLines):
            super().log(request, response, elapsed)
            return
        try:
            values = tuple([value(request, response, elapsed) for value in self._values])
            self.logger.info(self._log_format % values)
        except Exception:
            self.logger.exception("Error in logging")
