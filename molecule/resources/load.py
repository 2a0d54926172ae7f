#!/usr/bin/python3
"""Bounded load for the rollout scenarios (vm, fleet), run on a host during a rollout.

A few threads GET the URL, each on a new connection, one request at a time,
until the stop file appears, --max-seconds pass or --max-requests are sent.
Prints one JSON object: requests sent and failed (any answer but 2xx, or
none), the 2xx bodies seen and how often (which version answered), the
failures by reason, and the first failures' times.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import threading
import time
import urllib.parse


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        url = urllib.parse.urlsplit(args.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.path = url.path or "/"
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.stopped_by = ""
        self.sent = 0
        self.failed = 0
        self.answers: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.first_failures: list[str] = []
        self.start = time.monotonic()

    def stop(self, reason: str) -> None:
        with self.lock:
            self.stopped_by = self.stopped_by or reason
        self.done.set()

    def watch(self) -> None:
        while not self.done.wait(0.1):
            if os.path.exists(self.args.stop_file):
                self.stop("stop file")
            elif time.monotonic() - self.start > self.args.max_seconds:
                self.stop("max seconds")

    def request(self) -> tuple[bool, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read().decode(errors="replace").strip()
        except (OSError, http.client.HTTPException) as exc:
            return False, f"{type(exc).__name__}: {exc}"[:120]
        finally:
            conn.close()
        if 200 <= response.status < 300:
            return True, body[:80]
        return False, f"HTTP {response.status}"

    def worker(self) -> None:
        while not self.done.is_set():
            with self.lock:
                if self.sent >= self.args.max_requests:
                    break
                self.sent += 1
            ok, what = self.request()
            with self.lock:
                if ok:
                    self.answers[what] += 1
                else:
                    self.failed += 1
                    self.failures[what] += 1
                    if len(self.first_failures) < 10:
                        self.first_failures.append(f"{time.monotonic() - self.start:.2f}s {what}")
            self.done.wait(self.args.pause)
        self.stop("max requests")

    def run(self) -> dict[str, object]:
        threads = [threading.Thread(target=self.worker) for _ in range(self.args.threads)]
        watcher = threading.Thread(target=self.watch)
        for thread in (*threads, watcher):
            thread.start()
        for thread in (*threads, watcher):
            thread.join()
        return {
            "sent": self.sent,
            "failed": self.failed,
            "seconds": round(time.monotonic() - self.start, 1),
            "stopped_by": self.stopped_by,
            "answers": dict(self.answers),
            "failures": dict(self.failures),
            "first_failures": self.first_failures,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pause", type=float, default=0.05, help="seconds between a thread's requests"
    )
    print(json.dumps(Load(parser.parse_args()).run()))


if __name__ == "__main__":
    main()
