"""Benchmark: live-camera lag with and without a full-speed replay beside them.

    python tests/benchmarks/replay_live_lag.py [--cameras 2] [--fps 5] [--clip fall-03-cam0.mp4]
        [--replay ../shared/data/urfd] [--threads 2] [--runs 1]

Two phases on a fresh embedded Redis, each with one pose worker (live mode, the real
MoveNet model) and ``--cameras`` live producers pacing a real clip at ``--fps``:
1. live cameras alone;
2. the same, with a replay job (a real ``jobs-worker``) publishing ``--replay`` as fast as
   the pose worker takes it.
Live lag of a frame = the time its skeleton entry was written minus the time its frame
entry was added, both from the entry ids (the Redis server's clock alone): the frame's wait
in its stream plus the pose batch it went in. The frame ids are collected by a side reader
(plain XREAD, no group) as the producers add them. Prints median and p95 per phase, the
live frames posed of those sent (fewer: stale ones were skipped), and the replay frames
posed meanwhile in phase 2 (the capacity the live cameras left).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared import codec, keys  # noqa: E402
from shared.redis_server import RedisServer  # noqa: E402
from shared.redisio import connect  # noqa: E402
from shared.schemas import Skeletons  # noqa: E402

SHARED = ROOT.parent / "shared"


def _spawn(env, log: Path, *args) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "workers", *args], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)


def _ms(entry_id: bytes) -> int:
    return int(entry_id.decode().partition("-")[0])


class FrameIds(threading.Thread):
    """(camera, seq) -> the frame entry's id time (ms), read as the producers add them."""

    def __init__(self, url: str, cameras: list[str]) -> None:
        super().__init__(daemon=True)
        self.r, self.seen, self.stop = connect(url), {}, threading.Event()
        self.last = {keys.frames_stream(c): "$" for c in cameras}

    def run(self) -> None:
        while not self.stop.is_set():
            for stream, entries in self.r.xread(self.last, count=500, block=100) or []:
                for entry_id, fields in entries:
                    self.last[stream.decode()] = entry_id.decode()
                    if fields.get(b"kind") == b"frame":
                        self.seen[(keys.camera_of_stream(stream), int(fields[b"seq"]))] = _ms(entry_id)


def _lags(r, camera: str, frame_ms: dict) -> list[float]:
    out = []
    for entry_id, fields in r.xrange(keys.skeletons_stream(camera)):
        msg = codec.decode_skeletons(fields)
        if isinstance(msg, Skeletons) and (camera, msg.seq) in frame_ms:
            out.append((_ms(entry_id) - frame_ms[camera, msg.seq]) / 1000)
    return out


def _posed(r, camera_prefix: str) -> int:
    return sum(r.xlen(keys.skeletons_stream(c.decode())) for c in r.hkeys(keys.CAMERAS_KEY)
               if c.decode().startswith(camera_prefix))


def phase(url: str, args, with_replay: bool, tmp: Path) -> dict:
    r = connect(url)
    r.flushdb()
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=url, ACTIONSTREAM_SHARED_DIR=str(SHARED),
               ACTIONSTREAM_THREADS=str(args.threads), ACTIONSTREAM_SNAPSHOT_FRAMES="0",
               ACTIONSTREAM_DATA_DIR=str(tmp / "data"), ACTIONSTREAM_LOG_LEVEL="WARNING")
    procs = [_spawn(env, tmp / "pose.log", "pose-worker")]
    if with_replay:
        procs.append(_spawn(env, tmp / "jobs.log", "jobs-worker", "--concurrency", "1"))
        job = subprocess.run([sys.executable, "-m", "workers", "replay", "submit", "--source",
                              args.replay, "--camera", "bench"], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        deadline = time.monotonic() + 60
        while _posed(r, "bench~") < 30 and time.monotonic() < deadline:  # the replay is under way
            time.sleep(0.2)
    time.sleep(2)  # the pose worker is warm
    clip = str(SHARED / "data" / "urfd" / args.clip)
    cams = [f"live-{i}" for i in range(args.cameras)]
    replay_before = _posed(r, "bench~")
    ids = FrameIds(url, cams)
    ids.start()
    time.sleep(0.3)  # its first XREAD ($) is in place
    producers = [_spawn(env, tmp / f"{c}.log", "produce", "--source", clip, "--camera", c, "--crop",
                        "320,0,320,240", "--fps", str(args.fps)) for c in cams]
    for p in producers:
        p.wait()
    deadline = time.monotonic() + 60
    while not all(r.hexists(keys.done_key(keys.POSE_GROUP), c) for c in cams) and time.monotonic() < deadline:
        time.sleep(0.2)
    replay_posed = _posed(r, "bench~") - replay_before
    ids.stop.set()
    ids.join()
    lags = sorted(x for c in cams for x in _lags(r, c, ids.seen))
    if with_replay:
        subprocess.run([sys.executable, "-m", "workers", "replay", "cancel", job], cwd=ROOT, env=env,
                       capture_output=True)
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
    return {"frames": len(lags), "sent": len(ids.seen), "median_ms": 1000 * statistics.median(lags),
            "p95_ms": 1000 * lags[int(0.95 * (len(lags) - 1))], "max_ms": 1000 * lags[-1],
            "replay_posed": replay_posed}


def _row(res: dict) -> str:
    return (f"frames posed {res['frames']:5.0f} of {res['sent']:5.0f}  median {res['median_ms']:6.0f} ms  "
            f"p95 {res['p95_ms']:6.0f} ms  max {res['max_ms']:6.0f} ms  replay frames posed meanwhile "
            f"{res['replay_posed']:.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--clip", default="fall-03-cam0.mp4")
    ap.add_argument("--replay", default=str(SHARED / "data" / "urfd"), help="a video or a folder of them")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    if not (SHARED / "models").is_dir():
        print(f"skipped: {SHARED} (models and clips) is absent")
        return 0
    phases = (("live only", False), ("live + full-speed replay", True))
    results: dict[str, list[dict]] = {name: [] for name, _ in phases}
    print(f"{args.cameras} live camera(s) at {args.fps:g} fps ({args.clip}), one pose worker, "
          f"{args.threads} threads; live lag = skeleton entry added - frame entry added", flush=True)
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):  # the phases alternate, so a busy spell hits both alike
            for name, with_replay in phases:
                res = phase(server.url, args, with_replay, Path(tmp))
                results[name].append(res)
                print(f"  run {run + 1} {name:26s} {_row(res)}", flush=True)
    print(f"medians of {args.runs} run(s):")
    for name, runs in results.items():
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        print(f"  {name:32s} {_row(med)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
