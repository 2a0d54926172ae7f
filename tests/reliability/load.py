"""Bounded load on 127.0.0.1: wrk for throughput, a small asyncio HTTP/1.1 client
where each request's fate must be known (which ones failed, and when)."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HOST = "127.0.0.1"


# --- wrk ---------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    requests_per_second: float
    p99_ms: float
    socket_errors: int
    non_2xx: int
    output: str


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    port: int,
    path: str = "/",
    connections: int = 64,
    seconds: int = 10,
    prefix: Sequence[str] = (),
) -> WrkResult:
    """Debian's wrk, 2 threads; a generous timeout so slowness shows as latency.
    `prefix` runs it elsewhere, e.g. in a container's network namespace (nsenter)."""
    cmd = [
        *prefix,
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    out = subprocess.run(
        [*cmd, f"http://{HOST}:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    requests = re.search(r"^\s+(\d+) requests in", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (p99 and requests and rps):
        raise AssertionError(f"cannot read wrk's output:\n{out}")
    return WrkResult(
        requests=int(requests.group(1)),
        requests_per_second=float(rps.group(1)),
        p99_ms=_ms(*p99.groups()),
        socket_errors=sum(map(int, errors.groups())) if errors else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        output=out,
    )


# --- a client that accounts for every request --------------------------------------


@dataclass
class Record:
    start: float  # time.monotonic() just before the request was written
    end: float
    status: int | None  # None: no complete response (refused, reset, timed out)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server closes the connection) of one response."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("connection closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    return status, headers.get("connection", "").lower() == "close"


async def _client(
    port: int, path: str, until: Callable[[], float], records: list[Record], timeout: float
) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    while time.monotonic() < until():
        start = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, port), timeout
                )
                start = time.monotonic()
            writer.write(request)
            await writer.drain()
            assert reader is not None
            status, close = await asyncio.wait_for(_read_response(reader), timeout)
            records.append(Record(start, time.monotonic(), status))
            if close:
                writer.close()
                writer = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            records.append(Record(start, time.monotonic(), None, type(exc).__name__))
            if writer is not None:
                writer.close()
                writer = None
            await asyncio.sleep(0.02)  # a refused port must not spin
    if writer is not None:
        writer.close()


@dataclass
class Load:
    """Keep-alive clients hammering paths until stopped (at most `seconds`)."""

    port: int
    paths: dict[str, int]  # path -> number of concurrent clients
    seconds: float = 30
    timeout: float = 15
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._until = time.monotonic() + self.seconds
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        clients = [
            _client(self.port, path, lambda: self._until, self.records, self.timeout)
            for path, count in self.paths.items()
            for _ in range(count)
        ]
        await asyncio.gather(*clients)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def stop_after(self, seconds: float) -> None:
        self._until = min(self._until, time.monotonic() + seconds)

    def __exit__(self, *exc: object) -> None:
        self._until = time.monotonic()
        self._thread.join(self.timeout + 5)

    def recovered_since(self, moment: float) -> bool:
        """Whether a request sent after the last failure since `moment` succeeded."""
        records = list(self.records)
        failed, seconds = recovery(records, moment)
        return (
            not math.isnan(seconds) if failed else any(r.ok and r.start >= moment for r in records)
        )


def recovery(records: list[Record], moment: float) -> tuple[int, float]:
    """(requests failed after `moment`, seconds from `moment` until a request sent
    after the last of them succeeded: 0 when none failed, NaN if none did yet)."""
    failed = [r.end for r in records if not r.ok and r.end >= moment]
    if not failed:
        return 0, 0.0
    last = max(failed)
    back = min((r.end for r in records if r.ok and r.start >= last), default=float("nan"))
    return len(failed), back - moment


# --- slow clients --------------------------------------------------------------------


@dataclass
class SlowClient:
    opened: float
    closed: float | None = None  # when the server closed the connection
    answered: bytes = b""


async def _slow_client(port: int, until: float, result: SlowClient) -> None:
    """Send a request's headers one byte every half second, never finishing."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        result.closed = time.monotonic()
        return
    header = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
    try:
        for byte in header:
            if time.monotonic() >= until:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1024), 0.5)
            except TimeoutError:
                continue
            result.answered += data
            result.closed = time.monotonic()
            break
    except OSError:
        result.closed = time.monotonic()
    finally:
        writer.close()


def slowloris(port: int, connections: int, seconds: float) -> list[SlowClient]:
    """`connections` slow clients for at most `seconds`; run in this thread."""

    async def main() -> list[SlowClient]:
        until = time.monotonic() + seconds
        clients = [SlowClient(time.monotonic()) for _ in range(connections)]
        await asyncio.gather(*(_slow_client(port, until, c) for c in clients))
        return clients

    return asyncio.run(main())
