"""Load: many connections, and clients that never finish their request."""

from __future__ import annotations

import statistics
import threading

from tests.reliability.load import Load, slowloris, wrk
from tests.service import served


def test_wrk_256_connections_through_nginx(example_image: str, figure) -> None:
    """wrk, 256 connections for 20 s on / through nginx
    Zero socket errors and zero non-2xx responses."""
    with served(example_image) as svc:
        wrk(svc.http, connections=16, seconds=2)  # warm up workers and keep-alive pools
        result = wrk(svc.http, connections=256, seconds=20)
    figure(
        f"{result.requests_per_second:,.0f} req/s, p99 {result.p99_ms:.0f} ms; "
        f"{result.requests:,} requests, {result.socket_errors} socket errors, "
        f"{result.non_2xx} non-2xx"
    )
    assert result.socket_errors == 0, result.output
    assert result.non_2xx == 0, result.output


def test_slow_clients_are_timed_out_while_others_are_served(example_image: str, figure) -> None:
    """Slowloris: 300 connections sending headers a byte every 0.5 s
    Normal requests alongside all succeed (client timeout 5 s); nginx closes every
    slow connection after NGINX_CLIENT_TIMEOUT (here 3 s) without answering it."""
    timeout = 3
    with served(example_image, env={"NGINX_CLIENT_TIMEOUT": str(timeout)}) as svc:
        slow: list = []
        attack = threading.Thread(target=lambda: slow.extend(slowloris(svc.http, 300, 12)))
        with Load(svc.http, {"/": 2}, seconds=12, timeout=5) as load:
            attack.start()
            attack.join(30)
        normal = list(load.records)
    closed = [c.closed - c.opened for c in slow if c.closed is not None]
    latencies = sorted(r.end - r.start for r in normal)
    figure(
        f"{len(normal):,} normal requests, {sum(not r.ok for r in normal)} failed, "
        f"median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms; "
        f"{len(closed)} of {len(slow)} slow connections closed by nginx, "
        f"after {min(closed):.1f} to {max(closed):.1f} s"
    )
    assert len(slow) == 300
    assert normal
    assert all(r.ok for r in normal), [r for r in normal if not r.ok][:5]
    assert len(closed) == len(slow)
    assert all(c.answered == b"" for c in slow)  # closed, not served
    assert min(closed) >= timeout - 0.5
