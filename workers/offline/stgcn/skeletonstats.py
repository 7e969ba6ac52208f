"""Is the conversion faithful? Statistics of converted skeleton-only tracks beside the pose
worker's real tracks, and contact sheets of converted falls to check by eye.

``actionstream stgcn conversion --detections out/detections --labels
../shared/data/urfd/labels.csv --upfall-labels ../shared/data/upfall/labels.csv
--skeleton-cache out/skelclips/smartfallmm-seed0.pkl --out out/conversion`` prints a table
(per source: joint speed at rest, missing joints, track coverage, ids per clip, and the box's
aspect through a fall), writes ``aspect.png`` (the aspect through the fall, real beside
converted) and ``sheets/<clip>.png`` for a sample of converted falls (the derived fall range
in red).
"""

from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

PHASES = (-1.0, 0.0, 0.5, 1.0, 2.0)  # seconds relative to the fall: before, start, mid, end, after
LIMBS = ((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
         (11, 12), (12, 13), (0, 14), (0, 15), (14, 16), (15, 17))


def main_track(clip) -> dict[int, np.ndarray]:
    """seq -> keypoints (18, 3) of the clip's longest track."""
    counts: dict[int, int] = {}
    for f in clip.frames:
        for p in f.people:
            counts[p.track_id] = counts.get(p.track_id, 0) + 1
    if not counts:
        return {}
    tid = max(counts, key=counts.get)
    return {f.seq: p.keypoints for f in clip.frames for p in f.people if p.track_id == tid}


def _box(kp: np.ndarray) -> Optional[np.ndarray]:
    seen = kp[:, 2] > 0
    if seen.sum() < 2:
        return None
    return np.concatenate([kp[seen, :2].min(axis=0), kp[seen, :2].max(axis=0)])


def clip_stats(clip) -> dict:
    """One clip's figures: rest speeds, missing-joint share, coverage, ids, aspect by phase."""
    track = main_track(clip)
    ids = {p.track_id for f in clip.frames for p in f.people}
    speeds, missing = [], []
    for seq, kp in track.items():
        missing.append(float((kp[:, 2] == 0).mean()))
        prev = track.get(seq - 1)
        box = _box(kp)
        if prev is None or box is None:
            continue
        both = (kp[:, 2] > 0) & (prev[:, 2] > 0)
        size = float(np.hypot(*(box[2:] - box[:2])))
        if both.sum() < 5 or size < 20:
            continue
        d = np.linalg.norm(kp[both, :2] - prev[both, :2], axis=1) / size
        centre = np.linalg.norm(kp[both, :2].mean(axis=0) - prev[both, :2].mean(axis=0)) / size
        if centre < 0.01:
            speeds.append(float(np.median(d)))
    out = {"speed_rest": speeds, "missing": missing, "coverage": len(track) / max(1, len(clip.frames)),
           "ids": len(ids), "aspect": {}}
    if clip.fall:
        fs, fe = clip.fall
        for phase in PHASES:
            seq = (fs + phase * clip.fps if phase <= 0 else fs + phase * (fe - fs) if phase <= 1
                   else fe + (phase - 1) * clip.fps)
            near = [track[s] for s in range(int(seq) - 2, int(seq) + 3) if s in track]
            boxes = [b for b in (_box(k) for k in near) if b is not None]
            if boxes:
                out["aspect"][phase] = float(np.median([(b[2] - b[0]) / max(b[3] - b[1], 1e-6)
                                                        for b in boxes]))
    return out


def summary(clips: Sequence) -> dict:
    """Figures over ``clips`` (medians and shares)."""
    rows = [clip_stats(c) for c in clips]
    speeds = [s for r in rows for s in r["speed_rest"]]
    missing = [m for r in rows for m in r["missing"]]
    aspects = {p: [r["aspect"][p] for r in rows if p in r["aspect"]] for p in PHASES}
    return {"clips": len(rows), "speed_rest_median": float(np.median(speeds)) if speeds else None,
            "speed_rest_p90": float(np.quantile(speeds, 0.9)) if speeds else None,
            "missing_joints": float(np.mean(missing)) if missing else None,
            "coverage": float(np.mean([r["coverage"] for r in rows])) if rows else None,
            "ids_per_clip": float(np.mean([r["ids"] for r in rows])) if rows else None,
            "aspect": {p: (float(np.median(v)) if v else None) for p, v in aspects.items()}}


def table(groups: dict[str, dict]) -> str:
    """Markdown: one row per group of clips."""
    head = ("| tracks | clips | joint speed at rest (median / p90, x body) | joints missing | "
            "track coverage | ids per clip | box aspect 1 s before / start / mid / end / 1 s after fall |")
    out = [head, "|" + "---|" * 7]
    for name, s in groups.items():
        def f(v, fmt):
            return ("-" if v is None else format(v, fmt))
        asp = " / ".join(f(s["aspect"][p], ".2f") for p in PHASES)
        out.append(f"| {name} | {s['clips']} | {f(s['speed_rest_median'], '.4f')} / "
                   f"{f(s['speed_rest_p90'], '.4f')} | {f(s['missing_joints'], '.1%')} | "
                   f"{f(s['coverage'], '.1%')} | {f(s['ids_per_clip'], '.2f')} | {asp} |")
    return "\n".join(out)


def plot_aspect(groups: dict[str, dict], path: Path) -> None:
    """The box aspect through the fall, one line per group (a small chart drawn with OpenCV)."""
    w, h, m = 640, 360, 50
    img = np.full((h, w, 3), 255, np.uint8)
    xs = {p: m + i * (w - 2 * m) / (len(PHASES) - 1) for i, p in enumerate(PHASES)}
    ymax = 3.0
    def to_y(v):
        return (int(h - m - v / ymax * (h - 2 * m)))
    for v in (0.5, 1.0, 2.0, 3.0):
        cv2.line(img, (m, to_y(v)), (w - m, to_y(v)), (220, 220, 220), 1)
        cv2.putText(img, f"{v:.1f}", (5, to_y(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for p, label in zip(PHASES, ("-1 s", "start", "mid", "end", "+1 s")):
        cv2.putText(img, label, (int(xs[p]) - 15, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    colours = [(200, 80, 0), (0, 120, 0), (0, 0, 200), (150, 0, 150)]
    for k, (name, s) in enumerate(groups.items()):
        pts = [(int(xs[p]), to_y(s["aspect"][p])) for p in PHASES if s["aspect"][p] is not None]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, colours[k % 4], 2)
        cv2.putText(img, name, (m + 10, 20 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colours[k % 4], 1)
    cv2.putText(img, "box width / height through a fall", (w // 2 - 60, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)


def contact_sheet(clip, path: Path, columns: int = 8, rows: int = 3, cell: int = 160) -> None:
    """Evenly spaced frames of a clip, the skeletons drawn on grey, the fall's frames framed red."""
    n = columns * rows
    seqs = np.linspace(0, len(clip.frames) - 1, n).astype(int)
    sheet = np.full((rows * cell, columns * cell, 3), 60, np.uint8)
    w, h = clip.size
    scale = cell / max(w, h)
    for i, seq in enumerate(seqs):
        y0, x0 = (i // columns) * cell, (i % columns) * cell
        tile = sheet[y0:y0 + cell, x0:x0 + cell]
        for p in clip.frames[seq].people:
            kp = p.keypoints
            for a, b in LIMBS:
                if kp[a, 2] > 0 and kp[b, 2] > 0:
                    cv2.line(tile, tuple(int(v * scale) for v in kp[a, :2]),
                             tuple(int(v * scale) for v in kp[b, :2]), (0, 255, 255), 1)
        if clip.fall and clip.fall[0] <= seq <= clip.fall[1]:
            cv2.rectangle(tile, (1, 1), (cell - 2, cell - 2), (0, 0, 255), 2)
        cv2.putText(tile, f"{seq / clip.fps:.1f}s", (4, cell - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1)
    cv2.imwrite(str(path), sheet)


def main(argv: Optional[list[str]] = None) -> int:
    from workers.offline.stgcn import fall
    from workers.offline.stgcn.fallsources import load_detection_clips
    from workers.offline.stgcn.upfall import read_upfall_labels

    p = argparse.ArgumentParser(prog="actionstream stgcn conversion",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--detections", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--upfall-labels", required=True)
    p.add_argument("--skeleton-cache", nargs="+", required=True, help="pickles of converted clips")
    p.add_argument("--out", default="out/conversion")
    p.add_argument("--sheets", type=int, default=6, help="contact sheets of converted falls")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    real = load_detection_clips(args.detections, fall.read_urfd_labels(args.labels),
                                read_upfall_labels(args.upfall_labels))
    conv = [c for path in args.skeleton_cache for c in pickle.load(open(path, "rb"))]
    groups = {
        "real falls (URFD, UP-Fall)": summary([c for c in real if c.kind == "fall" and c.fall]),
        "converted falls (SmartFallMM)": summary([c for c in conv if c.kind == "fall"]),
        "real daily activity (UP-Fall)": summary([c for c in real if c.dataset == "upfall"
                                                  and c.kind != "fall"]),
        "converted daily activity": summary([c for c in conv if c.kind != "fall"]),
    }
    print(table(groups))
    out = Path(args.out)
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    plot_aspect(groups, out / "aspect.png")
    falls = [c for c in conv if c.kind == "fall"]
    for c in falls[:: max(1, len(falls) // max(1, args.sheets))][: args.sheets]:
        contact_sheet(c, out / "sheets" / f"{c.name}.png")
    print(f"wrote {out / 'aspect.png'} and {args.sheets} contact sheets in {out / 'sheets'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
