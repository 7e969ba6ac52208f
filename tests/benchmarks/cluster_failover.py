"""What a Redis Cluster failover loses, and what WAIT costs.

    python tests/benchmarks/cluster_failover.py --kills 3 --seconds 2 --stall-ms 0 400

For each mode (no WAIT; ``WAIT 1 <ms>`` after each batch, as ACTIONSTREAM_REDIS_WAIT_REPLICAS=1
does) and each kill: a fresh cluster (3 primaries, 3 replicas, node timeout 1 s); a writer
sends fenced batches (:func:`shared.writing.execute_fenced`, the stages' write: 8 entries
of 1 KiB and a state SET per batch) for a camera as fast as it can; after ``--seconds``
the camera's primary is SIGKILLed mid-stream (with ``--stall-ms``, while its replica is
stalled by DEBUG SLEEP, as a slow or cut-off replica would be); the writer retries until
the promoted replica takes its writes. Then the stream is read back: an entry whose batch the primary
had acknowledged (and, with WAIT, whose WAIT had counted the replica) but which the
promoted replica lacks was lost. Prints per kill the entries lost and the failover time,
and per mode the batch latency (median, p95) and throughput before the kill.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from redis.crc import key_slot  # noqa: E402

from shared import keys, writing  # noqa: E402
from shared.leases import Leases  # noqa: E402
from shared.redis_server import LocalCluster  # noqa: E402
from shared.redisio import CONNECTION_ERRORS, connect, refresh_topology  # noqa: E402
from shared.writing import Outcome, Output  # noqa: E402

CAMERA = "cam-1"
BATCH, PAYLOAD = 8, b"x" * 1024


class Writer(threading.Thread):
    """Fenced batches of numbered entries for CAMERA until stopped; records what was acked."""

    def __init__(self, url: str, wait_replicas: int, wait_ms: int) -> None:
        super().__init__(daemon=True)
        self.r = connect(url, timeout=1.0)
        self.wait_replicas, self.wait_ms = wait_replicas, wait_ms
        self.leases = Leases(self.r, keys.POSE_GROUP, "bench", ttl_s=600)
        self.script = self.r.register_script(writing.FENCED_WRITE)
        self.acked: list[int] = []  # entry numbers the primary acknowledged (and WAIT, if on)
        self.unconfirmed = 0  # acked by the primary, but WAIT saw no replica in time
        self.latencies: list[tuple[float, float]] = []  # (monotonic end, seconds)
        self.errors: list[float] = []  # monotonic times of failed batches
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                if not self.leases.value(CAMERA):
                    self.leases.try_acquire(CAMERA)
                stream = keys.skeletons_stream(CAMERA)
                outs = [Output(stream, {"n": n + i, "pad": PAYLOAD}) for i in range(BATCH)]
                p = writing.plan(Outcome(outputs=outs, sets={keys.tracker_state_key(CAMERA): str(n)}),
                                 keys.POSE_GROUP, dict(self.leases.values))
                t0 = time.monotonic()
                res = writing.execute_fenced(self.r, self.script, p, self.wait_replicas, self.wait_ms)
            except CONNECTION_ERRORS:
                self.errors.append(time.monotonic())
                refresh_topology(self.r)
                time.sleep(0.05)
                continue
            t1 = time.monotonic()
            if res.get(CAMERA) != writing.OK:
                self.errors.append(t1)
                refresh_topology(self.r)
                time.sleep(0.05)
                continue
            if self.wait_replicas and res.get(writing.REPLICATED, 0) < self.wait_replicas:
                self.unconfirmed += BATCH
            else:
                self.acked.extend(range(n, n + BATCH))
            self.latencies.append((t1, t1 - t0))
            n += BATCH


def stall(cluster: LocalCluster, primary: int, ms: int) -> threading.Thread:
    """Stall the replica of ``primary`` for ``ms`` (DEBUG SLEEP: a slow or cut-off replica)."""
    replica = int(cluster.client(primary).info("replication")["slave0"]["port"])
    t = threading.Thread(target=lambda: cluster.client(replica).execute_command("DEBUG", "SLEEP", ms / 1000),
                         daemon=True)
    t.start()
    return t


def one_kill(wait_replicas: int, wait_ms: int, seconds: float, stall_ms: int) -> dict:
    with LocalCluster(primaries=3, replicas=1, node_timeout_ms=1000,
                      extra_args=["--enable-debug-command", "local"]) as cluster:
        slot = key_slot(CAMERA.encode())
        port = cluster.primary_port(slot)
        w = Writer(cluster.url, wait_replicas, wait_ms)
        w.start()
        time.sleep(seconds)
        if stall_ms:
            stall(cluster, port, stall_ms)
            time.sleep(stall_ms / 2000)  # the replica falls behind for half the stall
        killed_at = time.monotonic()
        cluster.kill(port)
        deadline = killed_at + 60
        while time.monotonic() < deadline and not (w.errors and w.latencies
                                                   and w.latencies[-1][0] > w.errors[-1] > killed_at):
            time.sleep(0.05)
        first_error = next((e for e in w.errors if e > killed_at), None)
        back = next((t for t, _ in w.latencies if first_error and t > first_error), None)
        time.sleep(0.3)
        w.stop.set()
        w.join(10)
        present = {int(f[b"n"]) for _, f in _read_back(w.r)}
        before = [(t, s) for t, s in w.latencies if t < killed_at]
        lost = sorted(set(w.acked) - present)
        return {"lost": len(lost), "acked": len(w.acked), "unconfirmed": w.unconfirmed,
                "failover_s": (back - killed_at) if back else float("nan"),
                "promoted": cluster.primary_port(slot) != port,
                "lat": [s for _, s in before], "span": (before[-1][0] - before[0][0]) if before else 0.0}


def _read_back(r, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return r.xrange(keys.skeletons_stream(CAMERA))
        except CONNECTION_ERRORS:
            if time.monotonic() > deadline:
                raise
            refresh_topology(r)
            time.sleep(0.2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="writing before each kill")
    ap.add_argument("--wait-ms", type=int, default=100)
    ap.add_argument("--stall-ms", type=int, nargs="+", default=[0, 400],
                    help="stall the replica this long before the kill (0: a healthy replica)")
    args = ap.parse_args(argv)
    for stall_ms, wait in [(st, w) for st in args.stall_ms for w in (0, 1)]:
        label = (f"WAIT 1 {args.wait_ms}" if wait else "no WAIT") + f", replica stall {stall_ms} ms"
        runs = [one_kill(wait, args.wait_ms, args.seconds, stall_ms) for _ in range(args.kills)]
        for i, run in enumerate(runs, 1):
            print(f"{label}: kill {i}: lost {run['lost']} of {run['acked']} acknowledged entries "
                  f"({run['unconfirmed']} acked without a replica in time), replica promoted: "
                  f"{run['promoted']}, writes back after {run['failover_s']:.2f} s", flush=True)
        lat = sorted(s for run in runs for s in run["lat"])
        entries = sum(len(run["lat"]) for run in runs) * BATCH
        span = sum(run["span"] for run in runs)
        print(f"{label}: batch of {BATCH} x 1 KiB: "
              f"latency median {1000 * statistics.median(lat):.3f} ms, "
              f"p95 {1000 * lat[int(0.95 * (len(lat) - 1))]:.3f} ms, {entries / span:.0f} entries/s; "
              f"lost in all {sum(r['lost'] for r in runs)} over {len(runs)} kills", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
