"""Steady bounded load for the rollout scenarios: concurrent clients GET a URL
at a steady rate until a stop file appears (or the time budget ends), then
write what they saw as JSON: requests sent, failed, the failures, the bodies'
first lines.

    python3 load.py URL --out FILE --stop FILE [--clients 4 --rate 100 --seconds 300]
"""

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--stop", required=True, type=Path)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100, help="requests per second, all clients")
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()

    lock = threading.Lock()
    sent = 0
    failures: Counter[str] = Counter()
    bodies: Counter[str] = Counter()
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()

    def client() -> None:
        nonlocal sent
        while time.monotonic() < deadline and not args.stop.exists():
            with lock:
                sent += 1
                # The n-th request is due at n / rate: a steady pace, not a flood.
                due = started + sent / args.rate
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                with urllib.request.urlopen(args.url, timeout=10) as response:
                    line = response.read().decode(errors="replace").splitlines()[:1]
                with lock:
                    bodies[line[0] if line else ""] += 1
            except urllib.error.HTTPError as exc:
                with lock:
                    failures[f"HTTP {exc.code}"] += 1
            except OSError as exc:
                with lock:
                    failures[type(exc).__name__ + ": " + str(exc)[:80]] += 1

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = {
        "sent": sent,
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "bodies": dict(bodies),
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
