"""``actionstream stgcn fall-eval``: a fall model as shipped (ONNX + card, the action worker's
own classifier) on labelled clips, through the worker's windows, rules, confirmation and
still-down watch: recall, latency, false ``falling`` and ``fallen`` alerts per hour, per
source and per dataset.

The clips are those of ``fall-model`` (``--detections`` and/or ``--skeleton-sets``); held-out
clips, and the skeleton-only sets for a model trained without them, are data the model
never saw. ``--features FILE`` writes what :mod:`workers.action.confirm` reads of every
window that would raise ``falling`` without the confirmation, with whether the clip's fall
was there, so that its thresholds can be chosen on data.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


def score_onnx(classifier, clips, cfg, batch: int = 256) -> dict[str, list]:
    """Per clip, the worker's windows with the classifier's probabilities (as
    :func:`workers.offline.stgcn.fall.score_clips`, through onnxruntime)."""
    from tqdm import tqdm

    from workers.offline.stgcn.fall import clip_windows, window_size

    out = {}
    for clip in tqdm(clips, desc="scoring", disable=not cfg.progress):
        refs = clip_windows(clip, cfg.window, cfg.stride, cfg.min_frames, num_person=cfg.num_person,
                            fps=cfg.fps)
        probs = []
        for i in range(0, len(refs), batch):
            part = refs[i: i + batch]
            v, m = part[0].data.shape[2:]
            data = np.zeros((len(part), 3, cfg.window, v, m), dtype=np.float32)
            for k, ref in enumerate(part):
                data[k, :, : ref.frames] = ref.data
            probs.extend(classifier.classify(data, [r.frames for r in part],
                                             [window_size(r, clip) for r in part]))
        out[clip.name] = list(zip(refs, probs))
    return out


def cached_scores(path: Optional[str], clips, cfg, score) -> dict[str, list]:
    """``score(clips)``, the probabilities kept in the pickle ``path`` (clips already there
    are not scored again: trying another rule or confirmation costs no model call)."""
    import pickle
    from pathlib import Path

    from workers.offline.stgcn.fall import clip_windows

    kept = pickle.loads(Path(path).read_bytes()) if path and Path(path).is_file() else {}
    todo = [c for c in clips if c.name not in kept]
    fresh = score(todo) if todo else {}
    kept.update({name: [p for _, p in rows] for name, rows in fresh.items()})
    if path and todo:
        Path(path).write_bytes(pickle.dumps(kept))
    out = {}
    for clip in clips:
        refs = clip_windows(clip, cfg.window, cfg.stride, cfg.min_frames, num_person=cfg.num_person,
                            fps=cfg.fps)
        out[clip.name] = list(zip(refs, kept[clip.name]))
    return out


def alert_features(clips, scored: dict, cfg, threshold: float, consecutive: int) -> list[dict]:
    """The windows raising ``falling`` without the confirmation, with their features and
    whether they are true (a fall clip's window ending at or after its fall began)."""
    from workers.action.confirm import features
    from workers.offline.stgcn.accuracy import clip_events

    rows = []
    for clip in clips:
        by_end = {(ref.track_id, ref.frame_end): ref for ref, _ in scored[clip.name]}
        for e in clip_events(scored[clip.name], cfg.classes, threshold, consecutive, cfg.cooldown_s):
            ref = by_end[(e.track_id, e.frame_end)]
            f = features(ref.data, ref.frames, ref.width, ref.height, cfg.fps or 30.0)
            true = clip.kind == "fall" and clip.fall is not None and e.frame_end >= clip.fall[0]
            rows.append({"clip": clip.name, "dataset": clip.dataset, "true": bool(true),
                         "frame_end": e.frame_end, "score": round(e.score, 3), **f})
    return rows


def eval_parser() -> argparse.ArgumentParser:
    from workers.offline.stgcn.fallcli import fall_parser

    p = argparse.ArgumentParser(prog="actionstream stgcn fall-eval", parents=[fall_parser()],
                                add_help=False, conflict_handler="resolve",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the .onnx (card beside it)")
    p.add_argument("--features", help="write the confirmation's features of every alert (JSON)")
    p.add_argument("--scores", metavar="FILE", help="keep the window scores in FILE (pickle) and reuse them")
    p.add_argument("--rule", nargs=2, type=float, metavar=("THRESHOLD", "CONSECUTIVE"),
                   help="try this rule instead of the action worker's default")
    p.add_argument("--only", nargs="+", metavar="CLIP", help="evaluate these clips (camera ids) only")
    p.add_argument("--datasets", nargs="+", help="evaluate these datasets only (e.g. smartfall penn)")
    p.add_argument("--motion-gating", metavar="CAMERAS_YAML",
                   help="re-track the --detections clips as the pose worker does with motion gating on, "
                        "reading each clip's video from this camera file (the one the detections came from)")
    p.add_argument("--motion-threshold", type=float, default=0.002, help="gating's share of changed pixels")
    p.add_argument("--motion-keyframe-s", type=float, default=1.0, help="gating's longest gap between runs")
    return p


def gating_runs(args) -> dict[str, list[bool]]:
    """Per camera of ``--motion-gating``'s file with a cached clip, whether the gated pose
    worker runs the model on each frame; logs the share of frames it skips."""
    from pathlib import Path

    from shared.settings import load_camera_file, load_settings
    from workers.offline.posetrain.detections import motion_runs
    from workers.pose.motion import MotionConfig

    config = MotionConfig(threshold=args.motion_threshold, keyframe_s=args.motion_keyframe_s)
    quality = load_settings().jpeg_quality  # as the detections were cached
    cached = {p.stem for p in Path(args.detections).glob("*.npz")}
    runs = {c.id: motion_runs(c, config, quality) for c in load_camera_file(args.motion_gating)
            if c.id in cached and (not args.only or c.id in args.only)}
    total = sum(len(r) for r in runs.values())
    skipped = sum(len(r) - sum(r) for r in runs.values())
    print(f"motion gating: the model skips {skipped} of {total} frames ({skipped / max(1, total):.0%}) "
          f"of {len(runs)} clips")
    return runs


def run_eval(args) -> int:
    from workers.action.classifier import ActionClassifier
    from workers.offline.stgcn import accuracy as metrics
    from workers.offline.stgcn.fall import at_stride
    from workers.offline.stgcn.fallcli import default_rule, fall_config, load

    clf = ActionClassifier(args.model, providers=["CPUExecutionProvider"], threads=1)
    cfg = fall_config(args)
    if args.motion_gating:
        if not args.detections:
            from workers.offline.stgcn.usage import UsageError

            raise UsageError("--motion-gating re-tracks --detections clips; give --detections")
        args.motion_runs = gating_runs(args)
    cfg = replace(cfg, window=clf.card.window, fps=clf.card.fps, classes=tuple(clf.card.labels),
                  num_person=clf.card.num_person)
    clips = load(args)
    clips = [c for c in clips if (not args.only or c.name in args.only) and c.name not in args.hold_out
             and (not args.datasets or c.dataset in args.datasets)]
    scoring = cfg.scoring  # --scores kept at --score-stride
    scored = cached_scores(args.scores, clips, scoring, lambda todo: score_onnx(clf, todo, scoring))
    scored = at_stride(scored, scoring.stride, cfg.stride)
    rule = default_rule() if not args.rule else {"threshold": args.rule[0], "consecutive": int(args.rule[1])}
    report = {"model": args.model, "rule": rule}
    for name, confirm in (("with confirmation", cfg.confirm()), ("without confirmation", None)):
        outs = metrics.outcomes(clips, scored, cfg.classes, rule["threshold"], rule["consecutive"],
                                cfg.cooldown_s, confirm)
        report[name] = metrics.summarise(outs)
        s = report[name]
        print(f"\n{name}:\n" + metrics.table({"all": s, **s["by_source"], **s["by_dataset"]}))
    if args.features:
        with open(args.features, "w") as fh:
            json.dump(alert_features(clips, scored, cfg, rule["threshold"], rule["consecutive"]), fh)
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    return 0


def eval_main(argv: Optional[list[str]] = None) -> int:
    from workers.offline.stgcn.fallcli import run_command

    return run_command(eval_parser(), run_eval, argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(eval_main())
