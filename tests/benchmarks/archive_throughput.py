"""Archiver throughput and read-back speed, on a real Redis server and a real directory.

    python tests/benchmarks/archive_throughput.py [--cameras 4] [--frames 300] [--dir DIR]

Publishes ``--frames`` real video frames (URFD fall-01, 640x240 JPEG at quality 90, the
producer's encoding) per camera, each with a two-person skeletons entry, then times
``Archiver.run(burst=True)`` (every batch fsync'd before its ack) and an ``ArchiveReader`` pass
over all frames; prints entries/s, MB/s and the archive's size. ``--dir``: where the archive
goes (default: a temporary folder; give one on the disk you mean to measure).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared import codec, keys  # noqa: E402
from shared.redis_server import RedisServer  # noqa: E402
from shared.schemas import Frame, Skeletons  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.skeleton import Person  # noqa: E402
from workers.archive.archiver import Archiver  # noqa: E402
from workers.archive.reader import ArchiveReader  # noqa: E402
from workers.archive.storage import LocalStorage  # noqa: E402

VIDEO = Path(__file__).resolve().parents[3] / "shared" / "data" / "urfd" / "fall-01-cam0.mp4"


def jpegs(n: int) -> list[bytes]:
    cap = cv2.VideoCapture(str(VIDEO))
    out = []
    while len(out) < n:
        ok, image = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def publish(r, camera: str, images: list[bytes]) -> int:
    r.hset(keys.CAMERAS_KEY, camera, json.dumps({"source": str(VIDEO)}))
    rng = np.random.default_rng(0)
    box = np.array([0, 0, 90, 200], np.float32)
    people = tuple(Person(rng.uniform(0, 200, (18, 3)).astype(np.float32), box, 0.9, t) for t in (1, 2))
    nbytes, pipe = 0, r.pipeline(transaction=False)
    for seq, jpeg in enumerate(images):
        ts = 1_800_000_000.0 + seq / 30
        pipe.xadd(keys.frames_stream(camera), codec.encode_frame(Frame(camera, seq, ts, 640, 240, jpeg)))
        pipe.xadd(keys.skeletons_stream(camera),
                  codec.encode_skeletons(Skeletons(camera, seq, ts, 640, 240, people, "movenet")))
        nbytes += len(jpeg)
    pipe.execute()
    return nbytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    images = jpegs(args.frames)
    root = args.dir or Path(tempfile.mkdtemp(prefix="archive-bench-"))
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        jpeg_bytes = sum(publish(r, f"cam-{i}", images) for i in range(args.cameras))
        settings = load_settings(redis_url=server.url, archive_dir=root)
        storage = LocalStorage(root, writer=True)
        t0 = time.perf_counter()
        entries = Archiver(r, storage, settings, block_ms=10).run(burst=True)
        write_s = time.perf_counter() - t0
        reader = ArchiveReader(storage)
        t0 = time.perf_counter()
        read = sum(len(rec.fields[b"jpeg"]) > 0 for c in reader.cameras() for rec in reader.read(c, "frames"))
        read_s = time.perf_counter() - t0
        size = sum(f.size for f in storage.list())
        storage.close()
    frames = args.cameras * args.frames
    print(f"archive in {root}: {args.cameras} cameras x {args.frames} frames (+ skeletons), "
          f"JPEG {jpeg_bytes / frames / 1024:.1f} kB/frame")
    print(f"archived {entries} entries in {write_s:.2f} s: {entries / write_s:.0f} entries/s, "
          f"{frames / write_s:.0f} frames/s, {jpeg_bytes / write_s / 1e6:.1f} MB/s of JPEG "
          "(fsync'd per batch)")
    print(f"read back {read} frames in {read_s:.2f} s: {read / read_s:.0f} frames/s")
    print(f"archive size {size / 1e6:.1f} MB ({size / jpeg_bytes:.3f} x the JPEG bytes)")
    if args.dir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
