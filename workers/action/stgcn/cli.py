"""``actionstream stgcn export``: an ST-GCN checkpoint (or a seeded random init) -> ONNX + card.

Example::

    actionstream stgcn export --checkpoint st_gcn.kinetics.pt --layout openpose \\
        --num-class 400 --labels label_name.txt --out models/kinetics.onnx

Exit codes: 0 written and checked; 2 user error (missing or unfit checkpoint, bad
arguments, labels that do not match); 1 the export itself failed its check.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """A problem with what the user gave (arguments, files); exit code 2."""


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
    from workers.action.stgcn.checkpoint import infer_config

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
    from workers.action.stgcn.checkpoint import (CheckpointError, file_sha256, load_checkpoint,
                                                 read_state_dict)
    from workers.action.stgcn.export import export_onnx
    from workers.action.stgcn.model import build_model

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
    from workers.action.stgcn.export import ExportError

    try:
        return run_export(args)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """``python -m workers.action.stgcn.cli export ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "export":
        print("usage: python -m workers.action.stgcn.cli export --help", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return export_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
