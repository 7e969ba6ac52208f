"""Benchmark: pose model bare vs through Redis, and action windows bare vs through Redis.

    python tests/benchmarks/bench_pipeline.py [--video PATH] [--crop X,Y,W,H]
        [--pose-model movenet|mobilenet_thin] [--frames 120] [--runs 3] [--threads 2]
        [--action-model PATH] [--windows 8] [--providers CUDAExecutionProvider,CPUExecutionProvider]

Prints medians of ``--runs`` runs, and the medians of the per-run ratios:
1. bare onnxruntime frames/s of the pose model (preprocessed input, model calls only);
2. pose-worker frames/s through Redis (a real server; JPEG decode, model, decode of the
   outputs, tracking, stream writes and acks included);
3. action-worker windows/s through Redis vs bare onnxruntime on the same batch of windows.
Without --action-model a seeded ST-GCN is exported (needs torch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from producer.producer import Producer  # noqa: E402
from producer.sources import crop_and_resize, open_source  # noqa: E402
from shared import codec, keys  # noqa: E402
from shared.modelpaths import resolve_pose_model  # noqa: E402
from shared.redis_server import RedisServer  # noqa: E402
from shared.redisio import connect  # noqa: E402
from shared.schemas import EndOfStream, Skeletons  # noqa: E402
from shared.settings import load_settings, make_camera, parse_crop  # noqa: E402


def _frames(video: str, crop, n: int) -> list[np.ndarray]:
    src = open_source(video)
    out = [crop_and_resize(img, crop, None) for _, img in zip(range(n), src.frames())]
    src.close()
    return out


def bare_inputs(model, frames) -> list[np.ndarray]:
    """The model's input tensors of ``frames``, one frame per call (MoveNet's graph takes batch 1)."""
    if model.name == "movenet":
        return [model.preprocess(f)[0] for f in frames]
    return [model.preprocess([f]) for f in frames]


def bare_pose_fps(model, frames, min_seconds: float = 0.0) -> float:
    """Model calls only (``model.runner``: ``session.run``, or IO binding on CUDA), on already
    decoded and preprocessed inputs, one frame per call; passes over ``frames`` until
    ``min_seconds`` have gone."""
    inputs = bare_inputs(model, frames)
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < min_seconds:
        for x in inputs:
            model.runner(x)
        n += len(inputs)
    return n / (time.perf_counter() - t0)


def worker_pose_fps(url: str, model, name: str, video: str, crop, n: int, run: int) -> float:
    from workers.pose.worker import PoseWorker

    settings = load_settings(redis_url=url, mode="replay", replay_max_lag=100_000)
    cam = f"bench-{run}"
    Producer(settings, make_camera(id=cam, source=video, crop=crop)).run(max_frames=n)
    worker = PoseWorker(settings, model, name, cameras=[cam])
    t0 = time.perf_counter()
    worker.run(exit_on_eos=True)
    return worker.metrics["frames"] / (time.perf_counter() - t0)


def _export_seeded(tmp: Path) -> Path:
    from workers.offline.stgcn.stgcncli import export_main

    labels = tmp / "labels.txt"
    labels.write_text("upright\nfalling\nlying\n")
    out = tmp / "seeded.onnx"
    export_main(["--seed", "1", "--layout", "openpose", "--num-class", "3", "--labels", str(labels),
                 "--out", str(out)])
    return out


def _skeleton_entries(url: str, camera: str, tracks: int, frames: int) -> None:
    """``tracks`` people walking across, for ``frames`` frames, written as skeleton entries."""
    from shared.skeleton import Person, box_from_keypoints

    r = connect(url)
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 60, size=(18, 2)).astype(np.float32)
    pipe = r.pipeline(transaction=False)
    for seq in range(frames):
        people = []
        for t in range(tracks):
            xy = base + (t * 70 + seq * 0.5, t * 10)
            kp = np.concatenate([xy, np.full((18, 1), 0.9, np.float32)], axis=1)
            people.append(Person(kp, box_from_keypoints(kp), 0.9, t + 1))
        pipe.xadd(keys.skeletons_stream(camera),
                  codec.encode_skeletons(Skeletons(camera, seq, seq / 30, 640, 480, tuple(people), "b")))
    pipe.xadd(keys.skeletons_stream(camera), codec.encode_skeletons(EndOfStream(camera, frames)))
    pipe.hset(keys.CAMERAS_KEY, camera, "{}")
    pipe.execute()


def action_rates(url: str, model_path: Path, tracks: int, run: int) -> tuple[float, float]:
    """(worker windows/s, bare windows/s) for full 300-frame windows of ``tracks`` tracks."""
    from workers.action.classifier import ActionClassifier
    from workers.action.rules import Rules
    from workers.action.window import CameraWindows, stack_windows
    from workers.action.worker import ActionWorker

    cam = f"bench-act-{run}"
    window = 300
    _skeleton_entries(url, cam, tracks, window)
    settings = load_settings(redis_url=url, mode="replay", stride=window, min_frames=window,
                             batch_per_camera=window)
    classifier = ActionClassifier(model_path)
    worker = ActionWorker(settings, classifier, Rules([]), cameras=[cam])
    t0 = time.perf_counter()
    worker.run(exit_on_eos=True)
    worker_rate = worker.metrics["windows"] / (time.perf_counter() - t0)
    wins = CameraWindows(window=window, stride=window, min_frames=window, camera=cam)
    for _, f in connect(url).xrange(keys.skeletons_stream(cam)):  # the same windows, bare
        msg = codec.decode_skeletons(f)
        if isinstance(msg, Skeletons):
            wins.push(msg)
    refs = wins.flush()
    batch = stack_windows(refs)
    session = classifier.session
    t0 = time.perf_counter()
    session.run(None, {classifier.card.input_name: batch})
    bare_rate = len(refs) / (time.perf_counter() - t0)
    return worker_rate, bare_rate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=str(ROOT.parent / "shared/data/urfd/fall-01-cam0.mp4"))
    p.add_argument("--crop", default="320,0,320,240")
    p.add_argument("--pose-model", default="movenet", choices=["movenet", "mobilenet_thin"])
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--providers", default="CPUExecutionProvider",
                   help="onnxruntime providers, in order (CPU is always added)")
    p.add_argument("--action-model")
    p.add_argument("--windows", type=int, default=8, help="tracks with a full window each")
    args = p.parse_args(argv)
    if not Path(args.video).is_file():
        print(f"video {args.video} is absent (../shared/data holds the benchmark clip)", file=sys.stderr)
        return 2
    from workers.pose.adapters import load_pose_model

    settings = load_settings()
    model = load_pose_model(args.pose_model, resolve_pose_model(args.pose_model, settings),
                            providers=args.providers.split(","), threads=args.threads)
    crop = parse_crop(args.crop) if args.crop else None
    frames = _frames(args.video, crop, args.frames)
    tmp = Path(tempfile.mkdtemp(prefix="actionstream-bench-"))
    action_model = Path(args.action_model) if args.action_model else _export_seeded(tmp)
    bare, through, act_worker, act_bare = [], [], [], []
    with RedisServer() as server:
        for run in range(args.runs):
            bare.append(bare_pose_fps(model, frames))
            through.append(worker_pose_fps(server.url, model, args.pose_model, args.video, crop,
                                           args.frames, run))
            w, b = action_rates(server.url, action_model, args.windows, run)
            act_worker.append(w)
            act_bare.append(b)
            print(f"run {run + 1}: pose bare {bare[-1]:.1f} fps, through redis {through[-1]:.1f} fps; "
                  f"action worker {w:.2f} windows/s, bare {b:.2f} windows/s", flush=True)
    med = statistics.median
    pose_ratio = med([t / b for t, b in zip(through, bare)])  # paired: same run, same load
    act_ratio = med([w / b for w, b in zip(act_worker, act_bare)])
    print(f"\nvideo {Path(args.video).name} crop {args.crop}, {args.frames} frames, pose model "
          f"{args.pose_model}, {args.runs} runs (medians)")
    print(f"pose  bare onnxruntime      {med(bare):8.1f} frames/s")
    print(f"pose  worker through Redis  {med(through):8.1f} frames/s   ratio {pose_ratio:.2f}")
    print(f"action bare onnxruntime     {med(act_bare):8.2f} windows/s (batch of {args.windows}, T=300)")
    print(f"action worker through Redis {med(act_worker):8.2f} windows/s   ratio {act_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
