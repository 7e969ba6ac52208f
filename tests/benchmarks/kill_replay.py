"""Exactly-once alerts through kill -9: a replay of several real falls back to back (one
camera, longer than the action window) with the producer, the pose worker and the action
worker as separate processes, as `up` runs them. Each disturbed run kills -9 the pose
worker and then the action worker at random points of their work (restarting each at
once; the point is a frame count drawn at random, so every kill lands) and compares
its set of event ids with the undisturbed run's.

    python tests/benchmarks/kill_replay.py --clips 10 --runs 20 --seed 1

Prints the undisturbed run, then one line per run: kill points, events, equal or not (with
the ids missing and extra). Exit status 1 when any run differs. Needs ../shared (videos,
pose model); the action model is the shipped fall model unless --action-model is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import redis  # noqa: E402

from shared import keys  # noqa: E402
from shared.redis_server import RedisServer  # noqa: E402

SHARED = ROOT.parent / "shared"
CLI = "workers"


def concat_clips(n: int, out: Path) -> int:
    """fall-01 … fall-n (URFD cam0) back to back into one file; the number of frames."""
    writer, frames = None, 0
    for i in range(1, n + 1):
        cap = cv2.VideoCapture(str(SHARED / "data" / "urfd" / f"fall-{i:02d}-cam0.mp4"))
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
            writer.write(img)
            frames += 1
        cap.release()
    writer.release()
    return frames


class Run:
    """One replay: producer, pose worker and action worker as processes on ``url``."""

    def __init__(self, url: str, video: Path, env: dict, log_dir: Path, name: str) -> None:
        self.url, self.video, self.env, self.log_dir, self.name = url, video, env, log_dir, name
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts = {"pose": 0, "action": 0}

    def spawn(self, role: str) -> None:
        common = ["--cameras", "cam", "--mode", "replay", "--exit-on-eos"]
        argv = {"producer": ["produce", "--source", str(self.video), "--camera", "cam",
                             "--crop", "320,0,320,240", "--mode", "replay"],
                "pose": ["pose-worker", *common], "action": ["action-worker", *common]}[role]
        self.starts[role] = self.starts.get(role, 0) + 1
        log = open(self.log_dir / f"{self.name}-{role}-{self.starts[role]}.log", "w")
        self.procs[role] = subprocess.Popen([sys.executable, "-m", CLI, *argv], cwd=ROOT, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, role: str) -> bool:
        """kill -9 ``role`` and start it again; False when it had already finished."""
        proc = self.procs[role]
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.spawn(role)
        return True

    def wait(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for role in ("producer", "pose", "action"):
            while True:  # a killed-and-restarted process replaces its entry
                proc = self.procs[role]
                proc.wait(max(1.0, end - time.monotonic()))
                if proc is self.procs[role]:
                    break
            if proc.returncode != 0:
                raise RuntimeError(f"{self.name}: {role} exited {proc.returncode}; see {self.log_dir}")


def event_ids(r: redis.Redis) -> list[str]:
    return [json.loads(f[b"event"])["id"] for _, f in r.xrange(keys.EVENTS_STREAM)]


def progress(r: redis.Redis, role: str) -> int:
    """Frames ``role`` has done on camera ``cam``: skeleton entries written (pose), skeleton
    entries read and acked by the action group (action)."""
    stream = keys.skeletons_stream("cam")
    if role == "pose":
        return r.xlen(stream)
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:
        return 0
    for g in groups:
        if g["name"] in (b"action", "action"):
            return int(g.get("entries-read") or 0) - int(g["pending"])
    return 0


def replay(url: str, video: Path, env: dict, log_dir: Path, name: str,
           kills: list[tuple[int, str]], timeout: float) -> tuple[list[str], float, list[str]]:
    """Run one replay, killing ``role`` once it has done ``frames`` frames (``kills``: (frames,
    role), in order); (event ids, wall s, kills that landed)."""
    r = redis.Redis.from_url(url)
    r.flushdb()
    run = Run(url, video, env, log_dir, name)
    t0 = time.monotonic()
    for role in ("producer", "pose", "action"):
        run.spawn(role)
    landed = []
    for frames, role in kills:
        while progress(r, role) < frames and run.procs[role].poll() is None:
            time.sleep(0.02)
        if run.kill(role):
            landed.append(f"{role}@frame {progress(r, role)}")
    run.wait(timeout)
    return event_ids(r), time.monotonic() - t0, landed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=10, help="URFD falls back to back (1-20)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--action-model", help="ST-GCN ONNX with its card (default: the shipped fall model)")
    ap.add_argument("--lease-ttl", type=float, default=1.5)
    ap.add_argument("--timeout", type=float, default=900, help="per run")
    ap.add_argument("--logs", help="keep the processes' logs here (default: a temporary folder)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-replay-"))
    log_dir = Path(args.logs) if args.logs else work
    log_dir.mkdir(parents=True, exist_ok=True)
    video = work / "falls.mp4"
    frames = concat_clips(args.clips, video)
    with RedisServer() as server:
        env = dict(os.environ, ACTIONSTREAM_REDIS_URL=server.url, ACTIONSTREAM_SHARED_DIR=str(SHARED),
                   ACTIONSTREAM_LEASE_TTL_S=str(args.lease_ttl), ACTIONSTREAM_BATCH_PER_CAMERA="4",
                   ACTIONSTREAM_LOG_LEVEL="INFO")
        if args.action_model:
            env["ACTIONSTREAM_ACTION_MODEL"] = args.action_model
        base, wall, _ = replay(server.url, video, env, log_dir, "base", [], args.timeout)
        print(f"undisturbed: {args.clips} falls, {frames} frames, {len(base)} events in {wall:.0f} s "
              f"{sorted(base)}", flush=True)
        failures = 0
        for k in range(1, args.runs + 1):
            at_pose = rng.randrange(frames // 20, frames * 9 // 10)  # a random point of each stage's work
            at_action = rng.randrange(frames // 20, frames * 9 // 10)
            ids, took, landed = replay(server.url, video, env, log_dir, f"run{k:02d}",
                                       [(at_pose, "pose"), (at_action, "action")], args.timeout)
            same = sorted(ids) == sorted(base)
            failures += not same
            extra = sorted(set(ids) - set(base)) + sorted(i for i in set(ids) if ids.count(i) > 1)
            print(f"run {k:2d}: kills {', '.join(landed) or 'none landed'}; {len(ids)} events in "
                  f"{took:.0f} s: {'same ids' if same else 'DIFFERENT'}"
                  + ("" if same else f" missing {sorted(set(base) - set(ids))} extra {extra}"), flush=True)
        print(f"{args.runs - failures} of {args.runs} runs raised exactly the undisturbed run's event ids"
              f" (logs: {log_dir})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
