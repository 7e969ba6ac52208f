"""Figures behind the still-down posture test (not collected by pytest):

    python tests/benchmarks/posture_figures.py [--detections /work/cache/detections]
        [--threshold 0.1]

For every URFD frame labelled upright (-1) or lying (1) in ../shared/data/urfd/labels.csv
where MoveNet finds a person (person threshold ``--threshold``; the best-scoring person),
prints how often :func:`workers.action.still_down.posture` calls it lying or upright.
``--detections DIR`` reads the ``urfd-fall-NN.npz`` raw detections of
``actionstream pose detections``; without it MoveNet runs here on the clips (minutes).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from workers.action.still_down import LYING, UPRIGHT, posture  # noqa: E402
from workers.pose.movenet import DEFAULT_KEYPOINT_THRESHOLD, decode_rows  # noqa: E402

SHARED = ROOT.parent / "shared"


def _people_from_model(clip: str, threshold: float):
    import cv2

    from workers.pose.adapters import load_pose_model

    model = load_pose_model("movenet", SHARED / "models" / "movenet_multipose.onnx", threads=2)
    cap = cv2.VideoCapture(str(SHARED / "data" / "urfd" / f"{clip}-cam0.mp4"))
    out = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        image = image[:, 320:640].copy()
        rows, box = model.run(image)
        out.append(decode_rows(rows, box, image.shape[1], image.shape[0], threshold,
                               DEFAULT_KEYPOINT_THRESHOLD))
    return out


def _people(clip: str, detections, threshold: float):
    if detections is not None and (detections / f"urfd-{clip}.npz").is_file():
        from workers.offline.posetrain.detections import load_people

        return load_people(detections / f"urfd-{clip}.npz", person_threshold=threshold)[0]
    return _people_from_model(clip, threshold)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detections", type=Path)
    ap.add_argument("--threshold", type=float, default=0.1)
    args = ap.parse_args()
    labels: dict[str, dict[int, int]] = {}
    with open(SHARED / "data" / "urfd" / "labels.csv") as fh:
        for row in csv.reader(fh):
            labels.setdefault(row[0], {})[int(row[1]) - 1] = int(row[2])
    counts: Counter = Counter()
    for clip, lab in sorted(labels.items()):
        for i, people in enumerate(_people(clip, args.detections, args.threshold)):
            if lab.get(i) in (-1, 1) and people:
                counts[(lab[i], posture(max(people, key=lambda p: p.score)))] += 1
    for truth, name in ((-1, "upright"), (1, "lying")):
        n = max(1, sum(v for (t, _), v in counts.items() if t == truth))
        share = {p: counts[(truth, p)] / n for p in (LYING, UPRIGHT, None)}
        print(f"frames labelled {name} ({truth}) with a person: {n}; called lying {share[LYING]:.3f}, "
              f"upright {share[UPRIGHT]:.3f}, undecided {share[None]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
