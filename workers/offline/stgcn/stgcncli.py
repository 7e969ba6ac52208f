"""``actionstream stgcn export|train|fall-model``: ST-GCN to ONNX + card, training, the fall model.

Examples::

    actionstream stgcn export --checkpoint st_gcn.kinetics.pt --layout openpose \\
        --num-class 400 --labels label_name.txt --out models/kinetics.onnx
    actionstream stgcn train --config train.yaml          # see TRAIN_EXAMPLE
    actionstream stgcn fall-model --detections out/detections \\
        --labels ../shared/data/urfd/labels.csv --upfall-labels ../shared/data/upfall/labels.csv \\
        --cv 5 --out workers/action/models/fall.onnx

Exit codes: 0 done (export: written and checked); 2 user error (missing or unfit files, bad
arguments, labels that do not match); 1 the export itself failed its check.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from workers.offline.stgcn.usage import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError

log = logging.getLogger(__name__)



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionstream stgcn export",
                                description="Export an ST-GCN model to ONNX with its model card.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="state dict of the original st-gcn "
                     "(e.g. st_gcn.kinetics.pt); 'module.' prefixes are accepted")
    src.add_argument("--seed", type=int, help="no checkpoint: random init with this seed (tests)")
    p.add_argument("--layout", default="openpose", choices=["openpose", "ntu-rgb+d", "coco"])
    p.add_argument("--num-class", type=int, help="classes (default: from --labels or the checkpoint)")
    p.add_argument("--labels", type=Path, help="text file, one label per line (line i = class i)")
    p.add_argument("--strategy", default="spatial", choices=["uniform", "distance", "spatial"])
    p.add_argument("--max-hop", type=int, default=1)
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument("--edge-importance", action=argparse.BooleanOptionalAction, default=True,
                   help="the model has learnable edge importance (default: yes, as the originals)")
    p.add_argument("--window", type=int, default=300, help="T the model was trained on (multiple of 4)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--num-person", type=int, default=2, help="M")
    p.add_argument("--fixed-t", action="store_true", help="export with T fixed at --window")
    p.add_argument("--vote-last", type=int, default=0)
    p.add_argument("--name", help="model name in the card (default: the output file's stem)")
    p.add_argument("--training-data", default="", help="card field training_data")
    p.add_argument("--notice", default="", help="card field notice (licence, terms)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--out", type=Path, required=True, help="the .onnx to write (card: .json beside it)")
    return p


def read_labels(path: Path) -> tuple[str, ...]:
    """Labels, one per line; blank lines at the end are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"labels file {path}: {exc.strerror or exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels = tuple(line.strip() for line in lines)
    if not labels or not all(labels):
        raise UsageError(f"labels file {path}: needs one non-empty label per line")
    return labels


def _num_class(args, labels: Optional[tuple[str, ...]], state) -> int:
    """The class count, agreed between --num-class, --labels and the checkpoint."""
    from workers.offline.stgcn.checkpoint import infer_config

    claims = {}
    if args.num_class is not None:
        claims["--num-class"] = args.num_class
    if labels is not None:
        claims[f"--labels ({args.labels})"] = len(labels)
    if state is not None and "num_class" in infer_config(state):
        claims[f"checkpoint {args.checkpoint}"] = infer_config(state)["num_class"]
    if not claims:
        raise UsageError("give --num-class or --labels (nothing else says how many classes)")
    if len(set(claims.values())) > 1:
        raise UsageError("the class counts disagree: " +
                         ", ".join(f"{k}: {v}" for k, v in claims.items()))
    count = next(iter(claims.values()))
    if count < 1:
        raise UsageError(f"--num-class must be at least 1, got {count}")
    return count


def _check_args(args) -> None:
    if args.window <= 0 or args.window % 4:
        raise UsageError(f"--window must be a positive multiple of 4, got {args.window}")
    if args.num_person < 1:
        raise UsageError(f"--num-person must be at least 1, got {args.num_person}")
    if args.max_hop < 1 or args.dilation < 1:
        raise UsageError("--max-hop and --dilation must be at least 1")
    if args.out.suffix != ".onnx":
        raise UsageError(f"--out must name a .onnx file, got {args.out}")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UsageError(f"checkpoint {args.checkpoint} does not exist")


def run_export(args) -> int:
    """Build or load the model, export it; raises UsageError for the user's mistakes."""
    from workers.action.card import ModelCard
    from workers.offline.stgcn.checkpoint import (CheckpointError, file_sha256, load_checkpoint,
                                                 read_state_dict)
    from workers.offline.stgcn.export import export_onnx
    from workers.offline.stgcn.model import build_model

    _check_args(args)
    labels = read_labels(args.labels) if args.labels else None
    try:
        state = read_state_dict(args.checkpoint) if args.checkpoint else None
        num_class = _num_class(args, labels, state)
        model = build_model(num_class, layout=args.layout, strategy=args.strategy,
                            edge_importance_weighting=args.edge_importance, seed=args.seed,
                            max_hop=args.max_hop, dilation=args.dilation)
        if state is not None:
            load_checkpoint(model, state, where=f"checkpoint {args.checkpoint}")
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    meta = {"source": f"seeded random init (seed {args.seed})"}
    if args.checkpoint:
        meta = {"source": f"checkpoint {args.checkpoint.name}",
                "source.sha256": file_sha256(args.checkpoint)}
    card = ModelCard(name=args.name or args.out.stem,
                     labels=labels or tuple(f"class_{i}" for i in range(num_class)),
                     layout=args.layout, window=args.window, fps=args.fps,
                     num_person=args.num_person, dynamic_t=not args.fixed_t,
                     vote_last=args.vote_last, training_data=args.training_data,
                     notice=args.notice)
    result = export_onnx(model, args.out, card, opset=args.opset, metadata=meta)
    print(f"wrote {result.model_path} and {result.card_path} ({num_class} classes, "
          f"{args.layout}, {result.seconds:.1f} s; onnxruntime vs PyTorch max |diff| "
          + ", ".join(f"{k} {v:.1e}" for k, v in result.max_abs_diff.items()) + ")")
    return EXIT_OK


def export_main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and export; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or an argparse error (2), already printed
        return int(exc.code or 0)
    try:
        import torch  # noqa: F401  (the optional 'train' extra)
    except ImportError:
        print("error: stgcn export needs PyTorch: pip install 'actionstream[train]'", file=sys.stderr)
        return EXIT_USAGE
    from workers.offline.stgcn.export import ExportError

    try:
        return run_export(args)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


# -- stgcn train ------------------------------------------------------------------------------
TRAIN_EXAMPLE = """\
data:
  train: {data: work/train_data.npy, label: work/train_label.pkl}   # from gendata
  val: {data: work/val_data.npy, label: work/val_label.pkl}         # optional
labels: [drink water, pickup]      # or labels_file: labels.txt (one per line)
model: {layout: openpose, channels: null, dropout: 0.5, edge_importance: true}
augment: {random_choose: true, window_size: 150, random_move: true, random_shift: false}
train: {epochs: 50, batch_size: 64, lr: 0.1, optimizer: sgd, weight_decay: 0.0001,
        step: [20, 30, 40], class_weight: balanced, vote_last: 0, device: auto, seed: 0}
work_dir: work/run1                 # checkpoints epochNNN.pt
export: {out: work/run1/model.onnx, window: 300, fps: 30, dynamic_t: true, vote_last: 0}
"""


def _train_config(path: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"config {path}: {exc}") from None
    if not isinstance(cfg, dict) or "train" not in cfg.get("data", {}):
        raise UsageError(f"config {path}: needs data.train.data and data.train.label; "
                         f"example:\n{TRAIN_EXAMPLE}")
    return cfg


def _config_labels(cfg: dict, num_class: int) -> tuple[str, ...]:
    if cfg.get("labels_file"):
        labels = read_labels(Path(cfg["labels_file"]))
    else:
        labels = tuple(cfg.get("labels") or (f"class_{i}" for i in range(num_class)))
    if len(labels) != num_class:
        raise UsageError(f"{len(labels)} labels for {num_class} classes")
    return labels


def run_train(cfg: dict) -> int:
    """Train as ``cfg`` says (see :data:`TRAIN_EXAMPLE`), export ONNX + card at the end."""
    from workers.action.card import ModelCard
    from workers.offline.stgcn.export import export_onnx
    from workers.offline.stgcn.feeder import from_gendata
    from workers.offline.stgcn.train import TrainOptions, build_stgcn, fit

    aug = {k: v for k, v in (cfg.get("augment") or {}).items()
           if k in ("random_choose", "random_shift", "random_move", "window_size")}
    try:
        train = from_gendata(cfg["data"]["train"]["data"], cfg["data"]["train"]["label"], **aug)
        val_cfg = cfg["data"].get("val")
        window = aug.get("window_size", -1)
        val = from_gendata(val_cfg["data"], val_cfg["label"], window_size=window) if val_cfg else None
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError(f"training data: {exc}") from None
    mcfg = cfg.get("model") or {}
    num_class = int(mcfg.get("num_class") or (len(cfg["labels"]) if cfg.get("labels") else
                                                int(train.labels.max()) + 1))
    labels = _config_labels(cfg, num_class)
    model = build_stgcn(num_class, mcfg.get("layout", "openpose"), mcfg.get("channels"),
                        float(mcfg.get("dropout", 0.0)), bool(mcfg.get("edge_importance", True)),
                        seed=int((cfg.get("train") or {}).get("seed", 0)))
    known = set(TrainOptions.__dataclass_fields__)
    topt = {k: v for k, v in (cfg.get("train") or {}).items() if k in known}
    opt = TrainOptions(**{**topt, "work_dir": cfg.get("work_dir")})
    result = fit(model, train, opt, val)
    print(f"trained {opt.epochs} epochs in {result.seconds:.1f} s; last: {result.history[-1]}")
    exp = cfg.get("export") or {}
    if exp.get("out"):
        metrics = {k: v for k, v in result.history[-1].items() if k in ("top1", "top5", "loss")}
        card = ModelCard(name=exp.get("name") or Path(exp["out"]).stem, labels=labels,
                         layout=model.config["layout"], window=int(exp.get("window", 300)),
                         fps=float(exp.get("fps", 30.0)), num_person=train.data.shape[4],
                         dynamic_t=bool(exp.get("dynamic_t", True)),
                         vote_last=int(exp.get("vote_last", opt.vote_last)),
                         training_data=str(exp.get("training_data", "")), metrics=metrics,
                         notice=str(exp.get("notice", "")))
        out = export_onnx(model, exp["out"], card)
        print(f"wrote {out.model_path} and {out.card_path}")
    return EXIT_OK


def train_main(argv: list[str] | None = None) -> int:
    """``actionstream stgcn train --config FILE.yaml``; returns the exit code."""
    p = argparse.ArgumentParser(prog="actionstream stgcn train",
                                description="Train ST-GCN from a YAML config, export ONNX + card.",
                                epilog="config example:\n" + TRAIN_EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("error: stgcn train needs PyTorch: pip install 'actionstream[train]'", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_train(_train_config(args.config))
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


# -- stgcn fall-model: workers.offline.stgcn.fallcli ---------------------------------------
def fall_main(argv: list[str] | None = None) -> int:
    """``actionstream stgcn fall-model ...`` (see :mod:`workers.offline.stgcn.fallcli`)."""
    from workers.offline.stgcn.fallcli import fall_main as run

    return run(argv)


def fall_eval_main(argv: list[str] | None = None) -> int:
    """``actionstream stgcn fall-eval ...`` (see :mod:`workers.offline.stgcn.falleval`)."""
    from workers.offline.stgcn.falleval import eval_main

    return eval_main(argv)


def upfall_ranges_main(argv: list[str] | None = None) -> int:
    from workers.offline.stgcn.upfallcli import main

    return main(argv)


def streaming_main(argv: list[str] | None = None) -> int:
    from workers.offline.stgcn.continual import main

    return main(argv)


def conversion_main(argv: list[str] | None = None) -> int:
    """``actionstream stgcn conversion ...`` (see :mod:`workers.offline.stgcn.skeletonstats`)."""
    from workers.offline.stgcn.skeletonstats import main as run

    return run(argv)


# ``actionstream stgcn COMMAND ...`` (workers/console/cli.py dispatches here)
COMMANDS = {"export": export_main, "train": train_main, "fall-model": fall_main, "fall-eval": fall_eval_main,
            "conversion": conversion_main, "upfall-ranges": upfall_ranges_main, "streaming": streaming_main}
