"""``actionstream stgcn fall-model``: fall-training clips (cached detections or skeleton
exports) -> cross-validation and cross-dataset figures (the action worker and its rules
simulated) -> the final model, ONNX + card.

Clips come from ``--detections DIR`` (``actionstream pose detections --config
deploy/fall-training.yaml --out DIR``: tracked here as the pose worker tracks) or
``--skeletons DIR`` (``actionstream up --pose-only --skeletons-out DIR``).
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from typing import Optional

from workers.offline.stgcn.usage import EXIT_OK, EXIT_USAGE, UsageError

log = logging.getLogger(__name__)

FALL_NOTICE = ("Trained on UR Fall Detection, UP-Fall Detection, NTU RGB+D and Kinetics video and on "
               "SmartFallMM (no licence stated: research use, its authors ask to be contacted), "
               "NW-UCLA (CC BY-NC 4.0) and Penn Action skeletons: research use only (see their "
               "terms); not a certified fall detector.")
SWEEP_KEYS = ("threshold", "consecutive", "recall", "latency_median_s", "false_alerts",
              "false_per_hour", "false_fallen", "false_fallen_per_hour", "false_before_fall")


def default_rule() -> dict:
    """The action worker's default alert rule (the settings' defaults)."""
    from shared.settings import Settings

    fields = Settings.model_fields
    return {"threshold": fields["alert_threshold"].default,
            "consecutive": fields["alert_consecutive"].default}


def fall_parser() -> argparse.ArgumentParser:
    from workers.offline.stgcn.fall import FallConfig
    from workers.offline.stgcn.plans import PLANS

    d = FallConfig()
    p = argparse.ArgumentParser(prog="actionstream stgcn fall-model", description=(
        "Fall-training clips -> cross-validation (simulating the action worker and its rules), "
        "cross-dataset figures, the final model (ONNX + card)."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--detections", 
                     help="folder of <camera>.npz (actionstream pose detections)")
    src.add_argument("--skeletons", help="folder of <camera>.json exports (up --skeletons-out)")
    p.add_argument("--skeleton-sets", metavar="DIR",
                   help="add the skeleton-only sets of DIR (../shared/data/skeletons: SmartFallMM, "
                        "NW-UCLA, Penn Action) through virtual cameras and the pose worker's "
                        "imperfections measured on --detections")
    p.add_argument("--sets", nargs="+", default=["smartfallmm", "nwucla", "pennaction"],
                   help="which skeleton-only sets")
    p.add_argument("--skeleton-cache", metavar="DIR",
                   help="keep the converted skeleton-only clips in DIR (<set>-seed<N>.pkl; made when "
                        "absent, delete one to convert it again)")
    p.add_argument("--imperfections", metavar="FILE",
                   help="the pose worker's imperfections (JSON); default: measured on --detections "
                        "with --labels (and written to FILE when given)")
    p.add_argument("--skeleton-max-per-clip", type=int, default=d.skeleton_max_per_clip,
                   help="not-falling training windows per skeleton-only clip")
    p.add_argument("--no-confirm", action="store_true",
                   help="no confirmation of falling by the posture at the window's end")
    p.add_argument("--processes", type=int, default=2, help="processes converting skeleton clips")
    p.add_argument("--jobs", type=int, default=1, help="cross-validation folds trained at once")
    p.add_argument("--cv-scores", metavar="FILE", help="keep the cross-validated window scores (pickle)")
    p.add_argument("--labels", help="URFD labels.csv (clip, frame, -1/0/1, ...)")
    p.add_argument("--upfall-labels", help="UP-Fall labels.csv (clip, activity, ...)")
    p.add_argument("--cv", type=int, default=5, help="folds (0: no cross-validation)")
    p.add_argument("--cross-dataset", nargs="*", default=[], metavar="DATASET",
                   help="train on the other datasets, test on this one (urfd, ntu, upfall), "
                        "once per --compare normalisation")
    p.add_argument("--compare", nargs="+", default=["stgcn", "body"],
                   help="normalisations the cross-dataset runs compare")
    p.add_argument("--out", help="the .onnx to write (card .json beside it)")
    p.add_argument("--report", help="write the figures and per-clip outcomes (JSON)")
    p.add_argument("--hold-out", nargs="+", default=[], metavar="CLIP",
                   help="clips (camera ids) kept out of everything; the final model's "
                        "events on them are recorded in the card")
    p.add_argument("--classes", type=int, choices=[2, 3], default=len(d.classes))
    p.add_argument("--activity-classes", action="store_true",
                   help="daily activities as classes of their own (picking up, sitting down, on the "
                        "floor; workers.offline.stgcn.activities), falling weighed against the rest")
    p.add_argument("--normalisation", choices=["body", "stgcn"], default=d.normalisation)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--fps", type=float, default=30.0, help="the card's fps (windows resampled to it)")
    p.add_argument("--num-person", type=int, default=d.num_person, help="M: people per window")
    p.add_argument("--window", type=int, default=d.window, help="card window (multiple of 4)")
    p.add_argument("--vote-last", type=int, default=d.vote_last)
    p.add_argument("--plan", choices=sorted(PLANS), default="mini", help="network size")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--mine-epochs", type=int, default=d.mine_epochs,
                   help="epochs more with hard negatives added (0: none)")
    p.add_argument("--train-stride", type=int, default=d.train_stride)
    p.add_argument("--max-per-clip", type=int, default=d.max_per_clip)
    p.add_argument("--stride", type=int, default=d.stride, help="the action worker's stride")
    p.add_argument("--fall-share", type=float, default=d.fall_share,
                   help="a training window holding this share of the fall's frames is falling (less: "
                        "left out of training; none: lying)")
    p.add_argument("--score-stride", type=int,
                   help="cross-validation scores windows this often and --cv-scores keeps them (fall-eval: "
                        "the stride its --scores were kept at); a divisor of --stride, so that other "
                        "strides can be tried without training again")
    p.add_argument("--min-frames", type=int, default=d.min_frames)
    p.add_argument("--cooldown", type=float, default=d.cooldown_s)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def fall_config(args):
    from workers.action.confirm import Confirmation
    from workers.offline.stgcn import activities, fall
    from workers.offline.stgcn.plans import PLANS

    if args.window % 4 or args.window < args.min_frames:
        raise UsageError(f"--window must be a multiple of 4 and >= --min-frames ({args.min_frames})")
    if args.score_stride and (args.score_stride < 1 or args.stride % args.score_stride):
        raise UsageError(f"--score-stride ({args.score_stride}) must divide --stride ({args.stride})")
    if args.activity_classes and args.classes != 2:
        raise UsageError("--activity-classes replaces --classes 3 (lying is not-falling with it)")
    classes = activities.CLASSES if args.activity_classes else \
        fall.CLASSES_2 if args.classes == 2 else fall.CLASSES_3
    return fall.FallConfig(classes=classes, class_weight="binary" if args.activity_classes else "balanced",
                           window=args.window, vote_last=args.vote_last,
                           train_stride=args.train_stride, stride=args.stride,
                           score_stride=args.score_stride,
                           fall_share=args.fall_share,
                           min_frames=args.min_frames, channels=PLANS[args.plan],
                           num_person=args.num_person,
                           epochs=args.epochs, mine_epochs=args.mine_epochs, lr=args.lr,
                           max_per_clip=args.max_per_clip,
                           skeleton_max_per_clip=args.skeleton_max_per_clip,
                           confirmation=None if args.no_confirm else Confirmation(),
                           normalisation=args.normalisation, augment=not args.no_augment,
                           fps=args.fps, cooldown_s=args.cooldown, seed=args.seed,
                           device=args.device, progress=not args.no_progress)


def load(args) -> list:
    from workers.offline.stgcn import activities, fall
    from workers.offline.stgcn.fallsources import load_detection_clips, load_export_clips
    from workers.offline.stgcn.upfall import read_upfall_labels

    if args.detections:
        urfd = fall.read_urfd_labels(args.labels) if args.labels else {}
        upfall = read_upfall_labels(args.upfall_labels) if args.upfall_labels else {}
        clips = load_detection_clips(args.detections, urfd, upfall, runs=getattr(args, "motion_runs", None))
    else:
        clips = load_export_clips(args.skeletons, args.labels, args.upfall_labels)
    if not clips:
        raise UsageError(f"no clips in {args.detections or args.skeletons}")
    if args.skeleton_sets:
        clips += skeleton_clips(args)
    activities.assign(clips, args.skeleton_sets)
    return clips


def imperfections(args):
    """The pose worker's imperfections: ``--imperfections FILE`` if it exists, else measured
    on the cached URFD detections (and saved to FILE when given)."""
    from pathlib import Path

    from workers.offline.stgcn import imperfections as imp
    from workers.offline.stgcn.fallsources import worker_thresholds

    if args.imperfections and Path(args.imperfections).is_file():
        return imp.Imperfections.load(args.imperfections)
    if not (args.detections and args.labels):
        raise UsageError("--skeleton-sets needs --imperfections FILE, or --detections and --labels "
                         "to measure them on")
    measured = imp.measure(args.detections, imp.load_urfd_labels(args.labels), *worker_thresholds())
    if args.imperfections:
        measured.save(args.imperfections)
    return measured


def skeleton_clips(args) -> list:
    from workers.offline.stgcn.imperfections import describe
    from workers.offline.stgcn.skeletonclips import cached_skeleton_clips

    imp = imperfections(args)
    print(describe(imp, "the pose worker (URFD)"))
    return cached_skeleton_clips(args.skeleton_sets, imp, args.skeleton_cache, sets=args.sets,
                                 seed=args.seed, processes=args.processes,
                                 progress=not args.no_progress)


def run_fall(args) -> int:
    """CV and cross-dataset runs (optional), final training on every clip, export."""
    from dataclasses import replace

    from workers.offline.stgcn import fall

    from workers.offline.stgcn import accuracy as metrics

    cfg = fall_config(args)
    clips = load(args)
    unknown = sorted(set(args.hold_out) - {c.name for c in clips})
    if unknown:
        raise UsageError(f"--hold-out: no clip named {', '.join(unknown)}")
    held = [c for c in clips if c.name in args.hold_out]
    clips = [c for c in clips if c.name not in args.hold_out]
    rule = default_rule()
    report: dict = {"config": {**vars(cfg), "plan": args.plan}, "rule": rule,
                    "fall_ranges": {c.name: c.fall for c in clips + held if c.kind == "fall"}}
    if args.cv:
        scored = fall.cross_validate(clips, cfg, args.cv, args.jobs)
        if args.cv_scores:  # to try other rules and confirmations without training again
            with open(args.cv_scores, "wb") as fh:
                pickle.dump({name: [p for _, p in rows] for name, rows in scored.items()}, fh)
        scored = fall.at_stride(scored, cfg.scoring.stride, cfg.stride)
        rows = fall.sweep(clips, scored, cfg)
        outs = fall.outcomes(clips, scored, cfg, **rule)
        plain = metrics.outcomes(clips, scored, cfg.classes, cooldown_s=cfg.cooldown_s, **rule)
        report.update(sweep=rows, fewest_false_alerts=metrics.recommend(rows),
                      at_default_rule={**rule, **metrics.summarise(outs)},
                      without_confirmation={**rule, **metrics.summarise(plain)}, clips=outs)
        print("without the confirmation: " + _brief(report["without_confirmation"]))
        _print(rows, report["fewest_false_alerts"], report["at_default_rule"])
    cross = {}
    for test in args.cross_dataset:
        for norm in args.compare:
            _, rows = fall.cross_dataset(clips, replace(cfg, normalisation=norm), test)
            cross[f"{test}/{norm}"] = metrics.find_rule(rows, rule)
            print(f"cross-dataset, test {test}, normalisation {norm}: {_brief(cross[f'{test}/{norm}'])}")
    if cross:
        report["cross_dataset"] = cross
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    if args.out:
        _final_model(clips, held, cfg, args, report, rule)
        if args.report:
            with open(args.report, "w") as fh:
                json.dump(report, fh, indent=1, default=str)
    return EXIT_OK


def _brief(r: Optional[dict]) -> str:
    return ", ".join(f"{k} {r[k]}" for k in SWEEP_KEYS if k in r) if r else "-"


def _print(rows: list[dict], best: dict, default: Optional[dict]) -> None:
    from workers.offline.stgcn import accuracy as metrics

    for r in rows:
        is_default = default is not None and all(r[k] == default[k] for k in ("threshold", "consecutive"))
        mark = ("  <- fewest false alerts" if r is best else "") + (
            "  <- the default rule" if is_default else "")
        print(_brief(r) + mark)
    if default:
        print(metrics.table({"all": default, **default.get("by_source", {}), **default["by_dataset"]}))


def _compact(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in SWEEP_KEYS} for r in rows]


def _final_model(clips, held, cfg, args, report: dict, rule: dict) -> None:
    from workers.action.card import ModelCard
    from workers.offline.stgcn.export import export_onnx
    from workers.offline.stgcn.fall import outcomes, score_clips, train_fall

    model, result = train_fall(clips, cfg)
    held_out = outcomes(held, score_clips(model, held, cfg), cfg, **rule)
    report["held_out"] = held_out
    metrics = {"cv": (f"{args.cv}-fold, groups kept together (URFD by clip, NTU by subject, "
                      f"UP-Fall by trial with both cameras, SmartFallMM and NW-UCLA by subject, Penn "
                      f"Action by clip); action worker simulated: stride "
                      f"{cfg.stride}, min_frames {cfg.min_frames}, cooldown {cfg.cooldown_s} s; "
                      "latency = first event's frame_end - the fall's last frame; false alerts "
                      "per hour of the negative clips played back to back")
               if args.cv else "none",
               "at_default_rule": report.get("at_default_rule") or {},
               "without_confirmation": report.get("without_confirmation") or {},
               "fewest_false_alerts": report.get("fewest_false_alerts") or {},
               "sweep": _compact(report.get("sweep") or []),
               "cross_dataset": report.get("cross_dataset") or {},
               "held_out": held_out, "held_out_rule": rule,
               "train_seconds": round(result.seconds, 1),
               "train_loss": round(result.history[-1]["loss"], 4)}
    count = {d: (sum(c.dataset == d and c.kind == "fall" for c in clips),
                 sum(c.dataset == d and c.kind != "fall" for c in clips))
             for d in ("urfd", "ntu", "upfall", "other", "smartfall", "nwucla", "penn")}
    card = ModelCard(
        name=args.out.rsplit("/", 1)[-1].removesuffix(".onnx"), labels=tuple(cfg.classes),
        layout="openpose", window=cfg.window, fps=float(args.fps), num_person=cfg.num_person,
        dynamic_t=True,
        vote_last=cfg.vote_last, normalisation=cfg.normalisation,
        training_data=(f"MoveNet skeletons (the pose worker's decoding and tracker) of "
                       f"{count['urfd'][0]} UR Fall Detection falls (cam0 RGB, per-frame labels), "
                       f"{count['upfall'][0]} UP-Fall Detection subject-1 falls (ranges derived "
                       f"from the skeletons) and {count['upfall'][1]} of its daily activities, "
                       f"{count['ntu'][0]} NTU RGB+D A043 falls and {count['ntu'][1]} other NTU "
                       f"clips, {count['other'][1]} other negatives (Kinetics demos, walking); "
                       + (f"skeleton-only sets through virtual cameras (wall, corner, ceiling) with "
                          f"the pose worker's measured imperfections and tracker: SmartFallMM "
                          f"({count['smartfall'][0]} falls, {count['smartfall'][1]} daily-activity "
                          f"clips), NW-UCLA ({count['nwucla'][1]} clips), Penn Action "
                          f"({count['penn'][1]} clips); " if count["smartfall"] != (0, 0) else "")
                       + 
                       f"windows as the action worker builds them (T <= {cfg.window}, stride "
                       f"{cfg.train_stride}, M = {cfg.num_person}; falling when holding >= "
                       f"{cfg.fall_share:.0%} of the fall), normalisation {cfg.normalisation!r}"
                       + (", augmented (mirror, scale, rotation, camera height, translation, "
                          "speed 0.8-1.25x, dropped joints, keypoint noise)" if cfg.augment else "")
                       + (f"; held out of training: {', '.join(c.name for c in held)}"
                          if held else "")),
        metrics=metrics, notice=FALL_NOTICE)
    out = export_onnx(model, args.out, card)
    print(f"wrote {out.model_path} ({out.model_path.stat().st_size / 1e6:.2f} MB) and "
          f"{out.card_path}; trained in {result.seconds:.0f} s")


def run_command(parser: argparse.ArgumentParser, run, argv: list[str] | None) -> int:
    """Parse ``argv`` with ``parser`` and ``run(args)``: bad input is one line, exit 2."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def fall_main(argv: list[str] | None = None) -> int:
    """``actionstream stgcn fall-model (--detections DIR | --skeletons DIR) ...``."""
    return run_command(fall_parser(), run_fall, argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(fall_main())
