"""Cost of durable writes on loopback: an event written by the action stage's guarded script,
or a frame-sized XADD, each followed by :meth:`shared.durability.Durability.confirm` as
configured (none, WAIT 1 replica, WAITAOF on the primary, both), on a primary with AOF
(``appendfsync`` as given) and one replica, both started from the server binary here.

    python tests/benchmarks/durable_writes.py --n 300 --batch 1 8 --fsync everysec always

Prints per configuration the median and p95 time per write (one confirmation per batch of
``batch`` writes), in microseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis  # noqa: E402

from shared import keys  # noqa: E402
from shared.durability import Durability  # noqa: E402
from shared.redis_server import RedisServer  # noqa: E402
from workers.action.worker import _WRITE_EVENT  # noqa: E402

CONFIGS = {"none": Durability(), "wait 1 replica": Durability(replicas=1, timeout_ms=1000),
           "waitaof local": Durability(aof=True, timeout_ms=2000),
           "wait + waitaof": Durability(replicas=1, aof=True, timeout_ms=2000)}
EVENT = b'{"schema_version":1,"id":"%s","camera":"cam-1","track_id":1,"label":"falling","score":0.9}'
FRAME = os.urandom(40_000)  # a 640x480 JPEG is about this size


def _replica_in_sync(replica: redis.Redis) -> None:
    end = time.monotonic() + 30
    while replica.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < end, "the replica did not sync"
        time.sleep(0.05)


def run(r: redis.Redis, durability: Durability, what: str, n: int, batch: int) -> list[float]:
    """Seconds per write, one sample per batch."""
    script = r.register_script(_WRITE_EVENT)
    stream = keys.frames_stream("cam-1") if what == "frame" else keys.EVENTS_STREAM
    samples, i = [], 0
    while i < n:
        t0, guards = time.perf_counter(), []
        for _ in range(batch):
            if what == "frame":
                r.xadd(stream, {"jpeg": FRAME}, maxlen=500, approximate=True)
            else:
                eid = f"{what}-{i}-{time.time_ns()}"
                guards.append(keys.event_guard_key(eid))
                script(keys=[guards[-1], stream], args=[3600, EVENT % eid.encode(), "", 100000])
            i += 1
        why = durability.confirm(r, stream, guards, what)
        assert why is None, why
        samples.append((time.perf_counter() - t0) / batch)
    return samples


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--fsync", nargs="+", default=["everysec", "always"])
    args = ap.parse_args(argv)
    print(f"{'appendfsync':<11} {'write':<6} {'batch':>5} {'durability':<16} {'median us':>10} {'p95 us':>9}")
    for fsync in args.fsync:
        with RedisServer(persist=True, extra_args=["--appendfsync", fsync]) as primary, \
                RedisServer(extra_args=["--replicaof", "127.0.0.1", "0"]) as rep:
            replica = redis.Redis.from_url(rep.url)
            replica.replicaof("127.0.0.1", primary.port)
            _replica_in_sync(replica)
            r = redis.Redis.from_url(primary.url)
            for what in ("event", "frame"):
                for batch in args.batch:
                    for name, durability in CONFIGS.items():
                        samples = sorted(run(r, durability, what, args.n, batch))
                        p95 = samples[int(0.95 * (len(samples) - 1))]
                        print(f"{fsync:<11} {what:<6} {batch:>5} {name:<16} "
                              f"{statistics.median(samples) * 1e6:>10.0f} {p95 * 1e6:>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
