"""Benchmark: does the tracker keep the fallen person, and does it make ghosts?

    python tests/benchmarks/track_coverage.py [--detections /work/cache/detections]
        [--floor 0.1] [--high 0.2] [--max-misses 15] [--min-hits 3] [--clips urfd-fall-01 ...]

Runs the pose stage's MoveNet detections of the clips of ``deploy/fall-training.yaml`` through
two trackers: **old** (people decoded at the old person threshold 0.2, one threshold) and
**new** (people decoded down to ``--floor``; only those scoring ``--high`` or more start
tracks, weaker ones may only extend a confirmed track). ``--detections DIR`` reads the
``<camera>.npz`` files of ``actionstream pose detections`` (raw model rows); without it
(or for a clip missing there) the model runs on ../shared/data here (minutes).

Prints per URFD clip (frames labelled 1 = lying in ../shared/data/urfd/labels.csv):
``lying``: share of lying frames in which the faller's track (the id given most often in the
frames labelled falling or lying) holds a skeleton; ``any``: share with any track; ``ids``:
the ids given in falling/lying frames; ``one id``: a single id there, the same as before the
fall when the person was tracked upright; ``other``: person-frames of any other id in the
whole clip (one person acts in each URFD clip, so these are ghosts). Overall figures are over
the training clips (all but urfd-fall-05, the held-out clip). On scenes with no fall
(walking, kin-*): ids issued, short-lived tracks (confirmed tracks given in fewer than
``--short`` frames) and tracked person-frames, so that ghost tracks would show.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.settings import load_camera_file  # noqa: E402
from workers.offline.posetrain.detections import load_people  # noqa: E402
from workers.pose.movenet import DEFAULT_KEYPOINT_THRESHOLD, decode_rows, Letterbox  # noqa: E402
from workers.pose.tracker import Tracker, TrackerConfig  # noqa: E402

OLD_THRESHOLD = 0.2  # the MoveNet person threshold before two-threshold tracking
HELD_OUT = {"urfd-fall-05"}
SCENES = ("walking", "kin-clean-and-jerk", "kin-skateboarding", "kin-ta-chi")


def urfd_labels(path: Path) -> dict[str, dict[int, int]]:
    """camera id -> {0-based frame: label}."""
    labels: dict[str, dict[int, int]] = defaultdict(dict)
    with path.open() as fh:
        for row in csv.reader(fh):
            labels[f"urfd-{row[0]}"][int(row[1]) - 1] = int(row[2])
    return labels


class Detections:
    """Raw model rows per camera, from the cache or from the model; decoded per threshold."""

    def __init__(self, cache: Path | None, config: Path) -> None:
        self.cache, self.cameras = cache, {c.id: c for c in load_camera_file(config)}
        self._model, self._raw = None, {}

    def people(self, camera: str, threshold: float):
        path = self.cache / f"{camera}.npz" if self.cache else None
        if path is not None and path.exists():
            return load_people(path, threshold, DEFAULT_KEYPOINT_THRESHOLD)[0]
        data = self._raw.get(camera) or self._detect(camera)
        box = Letterbox(data["scale"], tuple(data["resized"]), tuple(data["tensor"]))
        return [decode_rows(rows, box, data["width"], data["height"], threshold, DEFAULT_KEYPOINT_THRESHOLD)
                for rows in data["rows"]]

    def _detect(self, camera: str) -> dict:
        from shared.modelpaths import resolve_pose_model
        from shared.settings import load_settings
        from workers.offline.posetrain.detections import detect_camera
        from workers.pose.adapters import load_pose_model

        settings = load_settings()
        if self._model is None:
            self._model = load_pose_model("movenet", resolve_pose_model("movenet", settings),
                                          settings.providers, settings.threads)
        print(f"# running MoveNet on {camera} ...", file=sys.stderr)
        self._raw[camera] = detect_camera(self.cameras[camera], self._model, settings.jpeg_quality)
        return self._raw[camera]


def track(frames, cfg: TrackerConfig) -> list[list[int]]:
    """Ids given in each frame."""
    tracker = Tracker(cfg)
    return [[p.track_id for p in tracker.update(people).people] for people in frames]


def fall_figures(ids: list[list[int]], labels: dict[int, int]) -> dict:
    down = [f for f in range(len(ids)) if labels.get(f, -1) >= 0]
    lying = [f for f in down if labels[f] == 1]
    counts = Counter(i for f in down for i in ids[f])
    faller = counts.most_common(1)[0][0] if counts else None
    before = Counter(i for f in range(len(ids)) if labels.get(f, -1) < 0 and f < min(down) for i in ids[f])
    upright = {i for i, _ in before.most_common(1)}
    ghost = sum(i != faller for frame in ids for i in frame)
    return {"lying": sum(faller in ids[f] for f in lying), "any": sum(bool(ids[f]) for f in lying),
            "n": len(lying), "ids": sorted(counts), "ghost": ghost,
            "one_id": len(counts) == 1 and (not upright or upright == {faller})}


def scene_figures(ids: list[list[int]], short: int) -> dict:
    counts = Counter(i for frame in ids for i in frame)
    return {"ids": len(counts), "short": sum(c < short for c in counts.values()),
            "person_frames": sum(counts.values()), "frames": len(ids)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detections", type=Path,
                   help="folder of <camera>.npz (actionstream pose detections)")
    p.add_argument("--config", type=Path, default=ROOT / "deploy" / "fall-training.yaml")
    p.add_argument("--labels", type=Path, default=ROOT.parent / "shared" / "data" / "urfd" / "labels.csv")
    p.add_argument("--floor", type=float, default=None, help="new: lowest person score (default: movenet's)")
    p.add_argument("--high", type=float, default=None, help="new: birth threshold (default: movenet's)")
    p.add_argument("--hold-ratio", type=float, default=TrackerConfig.hold_ratio)
    p.add_argument("--max-misses", type=int, default=TrackerConfig.max_misses)
    p.add_argument("--min-hits", type=int, default=TrackerConfig.min_hits)
    p.add_argument("--short", type=int, default=15, help="a track given in fewer frames is short-lived")
    p.add_argument("--clips", nargs="*", help="camera ids (default: urfd-fall-01..20 and the scenes)")
    args = p.parse_args(argv)
    from workers.pose.movenet import MoveNetModel

    high, floor = MoveNetModel.track_thresholds
    high = high if args.high is None else args.high
    floor = floor if args.floor is None else args.floor
    common = {"max_misses": args.max_misses, "min_hits": args.min_hits, "hold_ratio": args.hold_ratio}
    setups = {"old": (OLD_THRESHOLD, TrackerConfig(OLD_THRESHOLD, OLD_THRESHOLD, **common)),
              "new": (floor, TrackerConfig(high, floor, **common))}
    print(f"# old: one threshold {OLD_THRESHOLD}; new: floor {floor}, high {high}; {common}")
    labels = urfd_labels(args.labels)
    clips = args.clips or [f"urfd-fall-{i:02d}" for i in range(1, 21)] + list(SCENES)
    source = Detections(args.detections, args.config)
    totals = {name: Counter() for name in setups}
    print(f"{'clip':24} {'lying frames':>12} | {'old: lying  any  one id  ids other':>36} | "
          f"{'new: lying  any  one id  ids other':>36}")
    for clip in clips:
        figs = {name: (track(source.people(clip, thr), cfg)) for name, (thr, cfg) in setups.items()}
        if clip in labels:
            cells = []
            for name, ids in figs.items():
                f = fall_figures(ids, labels[clip])
                if clip not in HELD_OUT:
                    totals[name].update(lying=f["lying"], n=f["n"], one_id=int(f["one_id"]), clips=1,
                                        ghost=f["ghost"])
                cells.append(f"{f['lying'] / f['n']:11.2f} {f['any'] / f['n']:4.2f} {str(f['one_id']):>7} "
                             f"{','.join(map(str, f['ids'])):>5} {f['ghost']:5d}")
            mark = " (held out)" if clip in HELD_OUT else ""
            print(f"{clip + mark:24} {f['n']:12d} | {cells[0]:>36} | {cells[1]:>36}")
        else:
            cells = [scene_figures(ids, args.short) for ids in figs.values()]
            print(f"{clip:24} {cells[0]['frames']:12d} | " + " | ".join(
                f"ids {c['ids']:3d} short {c['short']:3d} person-frames {c['person_frames']:5d}"
                for c in cells))
    for name, t in totals.items():
        if t["n"]:
            print(f"overall {name} (training clips): lying coverage {t['lying'] / t['n']:.3f} "
                  f"({t['lying']}/{t['n']}), one id through the fall in {t['one_id']}/{t['clips']} clips, "
                  f"{t['ghost']} person-frames of other ids")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
