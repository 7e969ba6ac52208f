"""Failover time against the lease TTL: two workers split four cameras, one dies (no
release, no more renewals: as after kill -9), the time until the other holds all four.

    python tests/benchmarks/failover.py --ttl 0.6 1 2 4 --runs 3

Prints one line per TTL: the failover times (s) and their ratio to the TTL. The bound is
TTL + one lease period (TTL/4) + one read block: the dead worker's leases and heartbeat
lapse one TTL after their last renewal, and the survivor looks every lease period.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis  # noqa: E402

from shared.redis_server import RedisServer  # noqa: E402
from tests.shared.echo_stage import EchoWorker, Running, register, settings, wait_for  # noqa: E402

CAMS = [f"cam-{i}" for i in range(4)]


def failover_once(url: str, ttl: float) -> float:
    r = redis.Redis.from_url(url)
    r.flushdb()
    register(r, CAMS)
    a, b = (EchoWorker(settings(url, lease_ttl_s=ttl), name) for name in ("a", "b"))
    run = Running(a, b)
    try:
        wait_for(lambda: len(a.owned) == 2 and len(b.owned) == 2, timeout=60, what="a fair split")
        t0 = time.monotonic()
        a.crash()
        wait_for(lambda: len(b.owned) == 4, timeout=60, what="the takeover")
        return time.monotonic() - t0
    finally:
        run.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ttl", type=float, nargs="+", default=[0.6, 1.0, 2.0, 4.0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    with RedisServer() as server:
        for ttl in args.ttl:
            times = [failover_once(server.url, ttl) for _ in range(args.runs)]
            print(f"lease TTL {ttl:4.1f} s: failover {', '.join(f'{t:.2f}' for t in times)} s "
                  f"(median {statistics.median(times):.2f} s = {statistics.median(times) / ttl:.2f} TTL, "
                  f"max {max(times) / ttl:.2f} TTL)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
