"""``actionstream pose <eval|finetune|itop2coco> ...``: pose accuracy, ITOP conversion, fine-tuning.

``pose_main(argv)`` takes the arguments after ``pose`` and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional

from shared.posemodels import POSE_MODELS

log = logging.getLogger(__name__)

MODEL_FILES = {m.name: m.filename for m in POSE_MODELS}


def _shared_dir() -> Optional[Path]:
    from shared.settings import find_shared_dir

    return find_shared_dir()


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionstream pose", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="COCO keypoint AP (OKS) and per-frame time of the pose models")
    e.add_argument("--models", default=",".join(MODEL_FILES),
                   help=f"comma list of {' / '.join(MODEL_FILES)}, or KIND=PATH.onnx for another file")
    e.add_argument("--datasets", default="coco,crowdpose,ochuman,posetrack18")
    e.add_argument("--gt-dir", type=Path, help="pose_gt directory (default ../shared/data/pose_gt)")
    e.add_argument("--gt-json", type=Path, help="evaluate on this COCO-17 JSON instead of --datasets")
    e.add_argument("--image-root", type=Path, help="images of --gt-json (default: its directory)")
    e.add_argument("--models-dir", type=Path, help="default ../shared/models")
    e.add_argument("--input-size", type=_size, help="mobilenet_thin WxH (default: the worker's 432x368; "
                   "movenet's: ACTIONSTREAM_POSE_INPUT_SIZE)")
    e.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = its choice)")
    e.add_argument("--repeat", type=int, default=1, help="timed passes over the images")
    e.add_argument("--json", type=Path, help="also write the rows here")
    i = sub.add_parser("itop2coco", help="convert ITOP labels (+ depth maps) to COCO-17 JSON")
    i.add_argument("labels", type=Path, help="ITOP *_labels.h5")
    i.add_argument("--out", type=Path, required=True, help="output directory")
    i.add_argument("--depth", type=Path, help="ITOP *_depth_map.h5: writes images/ and masks/")
    i.add_argument("--max-depth", type=float, default=4.0, help="metres mapped to black")
    i.add_argument("--limit", type=int, help="stop after this many frames")
    i.add_argument("--coco-json", type=Path, help="COCO keypoint JSON to mix in")
    i.add_argument("--coco-images", type=Path, help="its image directory")
    i.add_argument("--coco-ratio", type=float, default=0.0, help="COCO images per ITOP image")
    i.add_argument("--seed", type=int, default=0)
    _finetune_parser(sub)
    return p


def _finetune_parser(sub) -> None:
    f = sub.add_parser("finetune", help="fine-tune mobilenet_thin (PyTorch) and export it to ONNX")
    f.add_argument("--train", type=Path, required=True, help="COCO-17 keypoint JSON")
    f.add_argument("--val", type=Path, help="validation JSON (default: --train)")
    f.add_argument("--image-root", type=Path, help="default: each JSON's directory")
    f.add_argument("--out", type=Path, required=True, help="checkpoints + mobilenet_thin_ft.onnx")
    f.add_argument("--weights", type=Path, help="upstream mobilenet_thin.onnx (default from ../shared)")
    f.add_argument("--input-size", type=_size, default=(432, 368), help="WxH, e.g. 216x184")
    f.add_argument("--epochs", type=int, default=2)
    f.add_argument("--batch-size", type=int, default=2)
    f.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    f.add_argument("--lr", type=float, default=1e-4, help="SGD on the summed loss needs ~1e-6")
    f.add_argument("--momentum", type=float, default=0.9)
    f.add_argument("--weight-decay", type=float, default=0.0)
    f.add_argument("--freeze", default="backbone", help="comma list: backbone, stage1..stage6 ('' = none)")
    f.add_argument("--threads", type=int, default=1, help="torch threads")
    f.add_argument("--max-steps", type=int, help="batches per epoch at most")
    f.add_argument("--no-eval", action="store_true", help="skip mAP before/after")
    f.add_argument("--no-progress", action="store_true")


def _model_specs(text: str, models_dir: Optional[Path]) -> dict[str, tuple[str, Path]]:
    """``movenet,mobilenet_thin=/x.onnx`` -> {label: (kind, path)}."""
    specs = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, _, path = item.partition("=")
        if kind not in MODEL_FILES:
            raise SystemExit(f"pose eval: unknown model {kind!r}; known: {', '.join(MODEL_FILES)}")
        if path:
            specs[f"{kind}:{Path(path).name}"] = (kind, Path(path))
        elif models_dir is not None:
            specs[kind] = (kind, models_dir / MODEL_FILES[kind])
        else:  # where the pose worker looks: ACTIONSTREAM_MODELS_DIR, then ../shared/models
            from shared.modelpaths import resolve_pose_model
            from shared.settings import load_settings

            specs[kind] = (kind, resolve_pose_model(kind, load_settings()))
    return specs


def _cmd_eval(args) -> int:
    from shared.settings import load_settings
    from workers.offline.posetrain import evaluate as ev
    from workers.pose.adapters import load_pose_model

    shared = _shared_dir()
    models = {}
    movenet_size = load_settings().pose_input_size  # ACTIONSTREAM_POSE_INPUT_SIZE, as the worker
    for label, (kind, path) in _model_specs(args.models, args.models_dir).items():
        size = args.input_size if kind == "mobilenet_thin" else movenet_size
        models[label] = load_pose_model(kind, path, threads=args.threads, input_size=size)
    if args.gt_json:
        gt = ev.load_coco_file(args.gt_json, args.image_root)
        rows = [ev.evaluate_model(label, m, gt, args.repeat) for label, m in models.items()]
    else:
        gt_dir = args.gt_dir or (shared / "data" / "pose_gt" if shared else None)
        if gt_dir is None or not gt_dir.is_dir():
            print(f"pose eval: ground-truth directory {gt_dir} not found (pass --gt-dir)", file=sys.stderr)
            return 2
        names = [d.strip() for d in args.datasets.split(",") if d.strip()]
        rows = ev.evaluate(models, names, gt_dir, repeat=args.repeat)
    print(ev.format_table(rows))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0


def _cmd_itop(args) -> int:
    from workers.offline.posetrain.finetune import itop

    out = itop.convert(args.labels, args.out, args.depth, args.max_depth, args.limit)
    if args.coco_json and args.coco_ratio > 0:
        if not args.coco_images:
            print("pose itop2coco: --coco-json needs --coco-images", file=sys.stderr)
            return 2
        out = itop.mix_coco(out, args.coco_json, args.coco_images, args.coco_ratio,
                            args.out / "itop_coco_mixed.json", args.seed)
    data = json.loads(out.read_text())
    print(f"{out}: {len(data['images'])} images, {len(data['annotations'])} people, "
          f"skipped {data['info'].get('skipped')}")
    return 0


def _map(onnx_path: Path, gt, size) -> tuple[float, float]:
    from workers.offline.posetrain import evaluate as ev
    from workers.pose.adapters import load_pose_model

    model = load_pose_model("mobilenet_thin", onnx_path, threads=1, input_size=size)
    dets, _, _ = ev.predict(model, gt)
    return ev.keypoint_ap(gt.coco, dets, gt.spec.sigmas)


def _cmd_finetune(args) -> int:
    from workers.offline.posetrain import evaluate as ev
    from workers.offline.posetrain.finetune.export import export_onnx
    from workers.offline.posetrain.finetune.train import FinetuneConfig, finetune

    shared = _shared_dir()
    weights = args.weights or (shared / "models" / MODEL_FILES["mobilenet_thin"] if shared else None)
    if weights is None or not Path(weights).is_file():
        print(f"pose finetune: upstream weights {weights} not found (pass --weights)", file=sys.stderr)
        return 2
    cfg = FinetuneConfig(str(args.train), str(args.out), str(weights), args.val and str(args.val),
                         args.image_root and str(args.image_root), args.input_size, args.epochs,
                         args.batch_size, args.optimizer, args.lr, args.momentum, args.weight_decay,
                         [s.strip() for s in args.freeze.split(",") if s.strip()], args.threads,
                         max_steps=args.max_steps, progress=not args.no_progress)
    net, res = finetune(cfg)
    onnx_path = export_onnx(net, args.out / "mobilenet_thin_ft.onnx", args.input_size)
    print(f"validation loss per image: before {res.initial_val_loss:.4f}, "
          + ", ".join(f"epoch {i + 1} {v:.4f}" for i, v in enumerate(res.val_loss)))
    print("train loss per epoch: " + ", ".join(f"{v:.4f}" for v in res.train_loss)
          + f" ({res.seconds:.0f} s); best checkpoint {res.best}, exported {onnx_path}")
    if not args.no_eval:
        gt = ev.load_coco_file(args.val or args.train, args.image_root)
        before, after = _map(Path(weights), gt, args.input_size), _map(onnx_path, gt, args.input_size)
        print(f"keypoint AP / AP50 at {args.input_size[0]}x{args.input_size[1]} on "
              f"{Path(args.val or args.train).name} ({len(gt.image_paths)} images): before "
              f"{before[0]:.3f} / {before[1]:.3f}, after {after[0]:.3f} / {after[1]:.3f}")
    return 0


def pose_main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``actionstream pose ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"eval": _cmd_eval, "itop2coco": _cmd_itop, "finetune": _cmd_finetune}
    return handlers[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(pose_main())
