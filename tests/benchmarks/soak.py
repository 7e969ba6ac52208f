"""Soak run: N simulated cameras for M minutes; prints memory, stream lengths and lag.

    python tests/benchmarks/soak.py --cameras 32 --minutes 10 [--fps 5] [--every 30]

Runs a real Redis (embedded), one process producing synthetic JPEG frames for every camera
in live mode, a pose worker with a null pose model (one synthetic walking person per
frame: the pose stage's I/O, decoding, tracking and writing are real, the network is not),
and a real action worker (a seeded ST-GCN). Every ``--every`` seconds it prints each
process's RSS, Redis memory, the total length of each kind of stream, and the lag of each
stage, so that a leak or an unbounded stream shows as a rising column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared import keys  # noqa: E402
from shared.redis_server import RedisServer  # noqa: E402
from shared.redisio import connect, group_lag  # noqa: E402
from shared.skeleton import Person  # noqa: E402

BASE = np.array([[50, 20], [50, 35], [40, 35], [35, 50], [33, 65], [60, 35], [65, 50], [67, 65],
                 [44, 70], [43, 90], [42, 110], [56, 70], [57, 90], [58, 110], [47, 17], [53, 17],
                 [44, 19], [56, 19]], np.float32)


class NullPoseModel:
    """One person walking across every frame; a stand-in network for soak runs only."""

    name = "null"

    def __init__(self) -> None:
        self.calls = 0

    def infer(self, images):
        out = []
        for img in images:
            self.calls += 1
            dx = (self.calls * 2) % max(1, img.shape[1] - 80)
            kp = np.concatenate([BASE + (dx, 0), np.full((18, 1), 0.9, np.float32)], axis=1)
            out.append([Person(kp, np.array([*kp[:, :2].min(0), *kp[:, :2].max(0)]), 0.9)])
        return out


def role_producer(url: str, cameras: int, fps: float, minutes: float) -> None:
    import cv2

    from shared import codec
    from shared.schemas import Frame

    r = connect(url)
    jpegs = []
    for i in range(8):
        img = np.full((240, 320, 3), 40 + 20 * i, np.uint8)
        cv2.rectangle(img, (20 * i, 60), (20 * i + 60, 200), (200, 180, 160), -1)
        jpegs.append(cv2.imencode(".jpg", img)[1].tobytes())
    cams = [f"soak-{i:03d}" for i in range(cameras)]
    for cam in cams:
        r.hset(keys.CAMERAS_KEY, cam, json.dumps({"source": "synthetic", "mode": "live"}))
    end, seq = time.time() + minutes * 60, 0
    while time.time() < end:
        t0 = time.time()
        pipe = r.pipeline(transaction=False)
        for cam in cams:
            frame = Frame(cam, seq, t0, 320, 240, jpegs[seq % len(jpegs)])
            pipe.xadd(keys.frames_stream(cam), codec.encode_frame(frame), maxlen=500, approximate=True)
        pipe.execute()
        seq += 1
        time.sleep(max(0.0, 1.0 / fps - (time.time() - t0)))


def role_pose(url: str) -> None:
    import signal

    from shared.settings import load_settings
    from workers.pose.worker import PoseWorker

    worker = PoseWorker(load_settings(redis_url=url, mode="live"), NullPoseModel(), "null")
    signal.signal(signal.SIGTERM, worker.request_stop)
    worker.run()


def _rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _lengths(r, cameras: int) -> dict:
    cams = [f"soak-{i:03d}" for i in range(cameras)]
    pipe = r.pipeline(transaction=False)
    for cam in cams:
        pipe.xlen(keys.frames_stream(cam))
        pipe.xlen(keys.skeletons_stream(cam))
    lens = pipe.execute()
    lag = [group_lag(r, keys.frames_stream(c), keys.POSE_GROUP) or 0 for c in cams[:4]]
    alag = [group_lag(r, keys.skeletons_stream(c), keys.ACTION_GROUP) or 0 for c in cams[:4]]
    return {"frames": sum(lens[0::2]), "skeletons": sum(lens[1::2]), "events": r.xlen(keys.EVENTS_STREAM),
            "dead": r.xlen(keys.DEADLETTER_STREAM), "pose_lag": max(lag), "action_lag": max(alag),
            "redis_mb": r.info("memory")["used_memory"] / 2**20}


def _export_model(tmp: Path) -> Path:
    from workers.offline.stgcn.stgcncli import export_main

    (tmp / "labels.txt").write_text("upright\nfalling\nlying\n")
    export_main(["--seed", "3", "--layout", "openpose", "--num-class", "3", "--labels",
                 str(tmp / "labels.txt"), "--out", str(tmp / "soak.onnx")])
    return tmp / "soak.onnx"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=32)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--fps", type=float, default=5)
    p.add_argument("--every", type=float, default=30)
    p.add_argument("--stride", type=int, default=150)
    p.add_argument("--skeleton-maxlen", type=int, default=600,
                   help="per-camera skeleton stream bound (ACTIONSTREAM_SKELETON_MAXLEN)")
    p.add_argument("--role", choices=["producer", "pose"], help=argparse.SUPPRESS)
    p.add_argument("--redis", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "producer":
        role_producer(args.redis, args.cameras, args.fps, args.minutes)
        return 0
    if args.role == "pose":
        role_pose(args.redis)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="actionstream-soak-"))
    model = _export_model(tmp)
    with RedisServer() as server:
        env = dict(os.environ, ACTIONSTREAM_REDIS_URL=server.url, ACTIONSTREAM_STRIDE=str(args.stride),
                   ACTIONSTREAM_MAX_LAG_S="5", ACTIONSTREAM_LOG_LEVEL="WARNING",
                   ACTIONSTREAM_SKELETON_MAXLEN=str(args.skeleton_maxlen))
        me = [sys.executable, __file__, "--redis", server.url, "--cameras", str(args.cameras)]
        procs = {
            "producer": subprocess.Popen([*me, "--role", "producer", "--fps", str(args.fps),
                                          "--minutes", str(args.minutes)], env=env,
                                         stderr=subprocess.DEVNULL),
            "pose": subprocess.Popen([*me, "--role", "pose"], env=env, stderr=subprocess.DEVNULL),
            "action": subprocess.Popen([sys.executable, "-m", "workers", "action-worker",
                                        "--action-model", str(model), "--log-level", "WARNING"],
                                       cwd=ROOT, env=env),
        }
        r = connect(server.url)
        print(f"{args.cameras} cameras x {args.fps} fps for {args.minutes} min (live mode)")
        print(f"{'t(s)':>6} {'prod MB':>8} {'pose MB':>8} {'act MB':>8} {'redis MB':>9} {'frames':>7} "
              f"{'skel':>7} {'events':>7} {'dead':>5} {'poselag':>7} {'actlag':>7} {'pose fps':>8}",
              flush=True)
        t0, last_frames = time.time(), 0
        try:
            while procs["producer"].poll() is None:
                time.sleep(args.every)
                st = _lengths(r, args.cameras)
                beats = [json.loads(r.get(k)) for k in r.scan_iter(match=keys.worker_pattern())]
                done = sum(b.get("frames", 0) for b in beats if b.get("stage") == "pose")
                fps = (done - last_frames) / args.every
                last_frames = done
                print(f"{time.time() - t0:6.0f} {_rss_mb(procs['producer'].pid):8.1f} "
                      f"{_rss_mb(procs['pose'].pid):8.1f} "
                      f"{_rss_mb(procs['action'].pid):8.1f} {st['redis_mb']:9.1f} {st['frames']:7d} "
                      f"{st['skeletons']:7d} {st['events']:7d} {st['dead']:5d} {st['pose_lag']:7d} "
                      f"{st['action_lag']:7d} {fps:8.1f}", flush=True)
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
