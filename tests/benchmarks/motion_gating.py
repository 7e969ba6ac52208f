"""Benchmark: what motion gating skips, and whether the fallen person stays tracked.

    python tests/benchmarks/motion_gating.py --detections out/detections
        [--config deploy/fall-training.yaml] [--threshold 0.002] [--keyframe-s 1.0]

For every clip of the camera file with a cached ``<camera>.npz`` (``actionstream pose
detections``), the frames the gated pose worker would run the model on (the producer's resize
and JPEG, then :class:`workers.pose.motion.MotionGate`), and the clip tracked both ways as the
pose worker tracks it (a gated frame repeats the last people). Prints per dataset the share of
frames the model skips, and per URFD clip the lying coverage both ways: the share of frames
labelled lying (1 in ../shared/data/urfd/labels.csv) in which the faller's track (the id
given most often in the falling and lying frames) holds a skeleton. Fall recall, false
alerts and ``fallen`` with gating: ``actionstream stgcn fall-eval --motion-gating``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.settings import load_camera_file, load_settings  # noqa: E402
from tests.benchmarks.track_coverage import urfd_labels  # noqa: E402
from workers.offline.posetrain.detections import motion_runs  # noqa: E402
from workers.offline.stgcn.fallsources import tracked_frames  # noqa: E402
from workers.pose.motion import MotionConfig  # noqa: E402


def lying_coverage(frames, labels: dict[int, int]) -> tuple[int, int]:
    """(lying frames where the faller's track has a skeleton, lying frames)."""
    ids = [[p.track_id for p in s.people] for s in frames]
    down = [f for f in range(len(ids)) if labels.get(f, -1) >= 0]
    lying = [f for f in down if labels[f] == 1]
    faller = Counter(i for f in down for i in ids[f]).most_common(1)
    return (sum(faller[0][0] in ids[f] for f in lying) if faller else 0), len(lying)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detections", type=Path, required=True)
    p.add_argument("--config", type=Path, default=ROOT / "deploy" / "fall-training.yaml")
    p.add_argument("--labels", type=Path, default=ROOT.parent / "shared" / "data" / "urfd" / "labels.csv")
    p.add_argument("--threshold", type=float, default=MotionConfig.threshold)
    p.add_argument("--keyframe-s", type=float, default=MotionConfig.keyframe_s)
    args = p.parse_args(argv)
    config = MotionConfig(threshold=args.threshold, keyframe_s=args.keyframe_s)
    quality, labels = load_settings().jpeg_quality, urfd_labels(args.labels)
    skipped, total = defaultdict(int), defaultdict(int)
    cover = {"plain": [0, 0], "gated": [0, 0]}
    print("| URFD clip | lying frames | faller tracked: every frame inferred | gated | frames skipped |")
    print("|---|---|---|---|---|")
    for camera in load_camera_file(args.config):
        path = args.detections / f"{camera.id}.npz"
        if not path.is_file():
            continue
        runs = motion_runs(camera, config, quality)
        dataset = camera.id.split("-")[0]
        skipped[dataset] += len(runs) - sum(runs)
        total[dataset] += len(runs)
        if camera.id in labels:
            plain = lying_coverage(tracked_frames(path)[0], labels[camera.id])
            gated = lying_coverage(tracked_frames(path, runs=runs)[0], labels[camera.id])
            for key, (k, n) in (("plain", plain), ("gated", gated)):
                cover[key][0] += k
                cover[key][1] += n
            print(f"| {camera.id} | {plain[1]} | {plain[0]} | {gated[0]} | {1 - sum(runs) / len(runs):.0%} |")
    print(f"\nlying coverage, all URFD clips: every frame inferred {cover['plain'][0]}/{cover['plain'][1]}, "
          f"gated {cover['gated'][0]}/{cover['gated'][1]}")
    print("frames the model skips, per dataset (threshold "
          f"{config.threshold}, keyframe every {config.keyframe_s} s):")
    for dataset in sorted(total):
        share = skipped[dataset] / total[dataset]
        print(f"  {dataset:8s} {skipped[dataset]:6d} of {total[dataset]:6d} ({share:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
