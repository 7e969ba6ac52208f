"""``actionstream stgcn upfall-ranges``: the fall range derived for each UP-Fall fall
clip (:func:`workers.offline.stgcn.upfall.derive_fall`) from its cached detections, tracked as
the pose worker tracks, printed, and drawn on contact sheets to check by eye."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from workers.offline.stgcn.fallsources import tracked_frames
from workers.offline.stgcn.upfall import contact_sheet, derive_fall, read_upfall_labels


def main(argv: Optional[list[str]] = None) -> int:
    """``actionstream stgcn upfall-ranges --detections DIR --videos DIR --out DIR
    [CLIP ...]``: the derived range of each UP-Fall fall clip, printed and drawn."""

    p = argparse.ArgumentParser(prog="actionstream stgcn upfall-ranges")
    p.add_argument("--detections", required=True, help="folder of <camera>.npz")
    p.add_argument("--videos", default="../shared/data/upfall", help="UP-Fall folder (labels.csv, mp4)")
    p.add_argument("--out", help="folder for <clip>.png contact sheets")
    p.add_argument("clips", nargs="*", help="clips to draw (default: none, only print)")
    args = p.parse_args(argv)
    labels = read_upfall_labels(Path(args.videos) / "labels.csv")
    for clip, info in sorted(labels.items()):
        path = Path(args.detections) / f"upfall-{clip}.npz"
        if not info.fall or not path.is_file():
            continue
        frames, fps, _ = tracked_frames(path)  # as the pose worker tracks
        fall = derive_fall(frames, fps)
        span = f"{fall[0]}-{fall[1]} ({(fall[1] - fall[0] + 1) / fps:.2f} s)" if fall else "none"
        print(f"{clip}  {info.name:32s} fall frames {span}")
        if args.out and clip in args.clips:
            contact_sheet(Path(args.videos) / f"{clip}.mp4", frames, fall, Path(args.out) / f"{clip}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
