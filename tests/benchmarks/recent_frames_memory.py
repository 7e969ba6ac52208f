"""Memory of the recent-frames stream (event snapshots) per camera, on a real Redis server.

    python tests/benchmarks/recent_frames_memory.py [--frames 150]

Writes ``--frames`` real video frames (JPEG at the default quality 90, with a one-person
skeletons message) per resolution the way the pose worker does, with its MAXLEN ~, and prints
the key's MEMORY USAGE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared import codec, keys  # noqa: E402
from shared.redis_server import RedisServer  # noqa: E402
from shared.schemas import Skeletons  # noqa: E402
from shared.skeleton import Person  # noqa: E402

VIDEO = Path(__file__).resolve().parents[3] / "shared" / "data" / "ntu" / "rgb"


def frames(n: int):
    clip = sorted(VIDEO.glob("*.avi")) + sorted(VIDEO.glob("*.mp4"))
    cap = cv2.VideoCapture(str(clip[0]))
    out = []
    while len(out) < n:
        ok, image = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append(image)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=150)
    args = ap.parse_args()
    images = frames(args.frames)
    person = Person(np.random.default_rng(0).uniform(0, 300, (18, 3)).astype(np.float32),
                    np.array([0, 0, 100, 200], np.float32), 0.9, 1)
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        for width, height in ((320, 240), (640, 480), (1280, 720)):
            cam = f"cam-{width}"
            sizes = []
            for seq, image in enumerate(images):
                jpeg = cv2.imencode(".jpg", cv2.resize(image, (width, height)),
                                    [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                sizes.append(len(jpeg))
                skel = Skeletons(cam, seq, seq / 30, width, height, (person,), "movenet")
                r.xadd(keys.recent_frames_stream(cam), {**codec.encode_skeletons(skel), "jpeg": jpeg},
                       maxlen=args.frames, approximate=True)
            used = r.memory_usage(keys.recent_frames_stream(cam), samples=0)
            print(f"{width}x{height}: {r.xlen(keys.recent_frames_stream(cam))} entries kept, "
                  f"JPEG {np.mean(sizes) / 1024:.0f} kB on average, MEMORY USAGE {used / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
