"""ST-GCN training: voting logits, a short training run on tiny data (no NaN, checkpoints,
top-1/top-5), ``stgcn train --config`` and ``stgcn fall-model`` end to end — their ONNX
loads in the action worker's ActionClassifier."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from shared import kinetics  # noqa: E402
from workers.offline.stgcn import datasets as D  # noqa: E402
from workers.offline.stgcn.stgcncli import fall_main, train_main  # noqa: E402
from workers.offline.stgcn.feeder import ArrayDataset  # noqa: E402
from workers.offline.stgcn.train import (PLANS, TrainOptions, build_stgcn, evaluate, fit,  # noqa: E402
                                        load_trained, voted_logits)

KINETICS_JSON = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "kinetics" / \
    "skeleton_json" / "--33Lscn6sk.json"


def tiny_data(n: int = 5, t: int = 32, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 3, t, 18, 2)) * 0.2).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, 1] += 0.3  # a learnable difference
    return ArrayDataset(x, y, [t] * n, random_move=True, seed=seed)


def test_voted_logits_equal_forward_for_full_windows_and_ignore_padding():
    model = build_stgcn(3, channels=PLANS["tiny"], seed=0).eval()
    x = torch.randn(2, 3, 32, 18, 2) * 0.3
    full = torch.tensor([32, 32])
    with torch.no_grad():
        torch.testing.assert_close(voted_logits(model, x, full), model(x), rtol=1e-4, atol=1e-5)
        last = voted_logits(model, x, full, vote_last=2)
        scores = model.extract_feature(x)[0].mean(dim=(3, 4))[:, :, -2:].mean(dim=2)
        torch.testing.assert_close(last, scores, rtol=1e-4, atol=1e-5)


def test_one_epoch_on_tiny_data_has_no_nan_and_checkpoints(tmp_path):
    ds = tiny_data()
    model = build_stgcn(2, channels=PLANS["tiny"], seed=0)
    opt = TrainOptions(epochs=2, batch_size=4, lr=0.05, work_dir=str(tmp_path), progress=False)
    result = fit(model, ds, opt, val=ds)  # 5 samples, batch 4: the last batch holds one
    assert all(math.isfinite(r["loss"]) for r in result.history)
    assert {"top1", "top5"} <= set(result.history[-1]) and result.history[-1]["top5"] == 1.0
    assert [p.name for p in result.checkpoints] == ["epoch001.pt", "epoch002.pt"]
    again = load_trained(result.checkpoints[-1])
    np.testing.assert_allclose(evaluate(again, ds), evaluate(result.model, ds), atol=1e-6)


def test_train_config_exports_an_onnx_the_classifier_loads(tmp_path):
    from workers.action.classifier import ActionClassifier

    ds = tiny_data(6, 40)
    dpath, lpath = D.gendata([Path(f"clip{i}") for i in range(6)], ds.labels.tolist(), tmp_path,
                             "train", reader=lambda p: ds.data[int(str(p)[4:])], window=40)
    cfg = {"data": {"train": {"data": str(dpath), "label": str(lpath)},
                    "val": {"data": str(dpath), "label": str(lpath)}},
           "labels": ["standing", "falling"],
           "model": {"channels": PLANS["tiny"]},
           "augment": {"random_move": True},
           "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "device": "auto",
                     "progress": False},
           "work_dir": str(tmp_path / "run"),
           "export": {"out": str(tmp_path / "run" / "m.onnx"), "window": 40}}
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(cfg))  # JSON is YAML
    assert train_main(["--config", str(config)]) == 0
    clf = ActionClassifier(tmp_path / "run" / "m.onnx")
    assert clf.labels == ("standing", "falling") and clf.card.metrics["top1"] >= 0
    probs = clf.classify(ds.data[:2])
    assert probs.shape == (2, 2) and np.isfinite(probs).all()
    assert (tmp_path / "run" / "epoch001.pt").is_file()
    assert train_main(["--config", str(tmp_path / "missing.yaml")]) == 2


def _pose(rng) -> tuple[np.ndarray, np.ndarray]:
    info = json.loads(KINETICS_JSON.read_text())
    sk = next(f["skeleton"][0] for f in info["data"] if f["skeleton"])
    return np.asarray(sk["pose"]).reshape(18, 2), np.asarray(sk["score"])


def synthetic_fall(path: Path, camera: str, pose: np.ndarray, score: np.ndarray, rng,
                   before: int = 50, fall: int = 15, after: int = 40) -> None:
    """A standing person that tips over (rotation about the feet) and lies still."""
    feet = pose[[10, 13]].mean(axis=0)
    frames = []
    for i in range(before + fall + after):
        a = np.pi / 2 * min(1.0, max(0.0, (i - before) / fall))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        xy = (pose - feet) * 0.8 @ rot.T + feet + rng.normal(0, 0.003, pose.shape)
        xy = np.clip(xy, 0, 1) * (score[:, None] > 0)
        frames.append([{"pose": xy.ravel().round(4).tolist(), "score": score.tolist(),
                        "track_id": 1}])
    kinetics.write_exported_skeletons(path, camera, frames)


def test_fall_model_cli_cross_validates_and_ships(tmp_path, capsys):
    from workers.action.classifier import ActionClassifier

    if not KINETICS_JSON.is_file():
        pytest.skip(f"{KINETICS_JSON} is absent")
    rng = np.random.default_rng(0)
    pose, score = _pose(rng)
    skel = tmp_path / "skel"
    skel.mkdir()
    rows = []
    for n in (1, 2, 3):
        synthetic_fall(skel / f"urfd-fall-0{n}.json", f"urfd-fall-0{n}", pose, score, rng)
        rows += [f"fall-0{n},{i + 1},{-1 if i < 50 else 0 if i < 65 else 1}" for i in range(105)]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    info = json.loads(KINETICS_JSON.read_text())
    frames = [[] for _ in range(max(f["frame_index"] for f in info["data"]))]
    for f in info["data"]:
        frames[f["frame_index"] - 1] = [{**s, "track_id": m} for m, s in enumerate(f["skeleton"][:2])]
    kinetics.write_exported_skeletons(skel / "kin-demo.json", "kin-demo", frames)
    out = tmp_path / "fall.onnx"
    rc = fall_main(["--skeletons", str(skel), "--labels", str(labels), "--cv", "2",
                    "--epochs", "1", "--window", "48", "--vote-last", "2", "--train-stride", "8",
                    "--out", str(out), "--report", str(tmp_path / "cv.json"), "--no-progress",
                    "--hold-out", "urfd-fall-03"])
    assert rc == 0
    assert "the default rule" in capsys.readouterr().out
    clf = ActionClassifier(out)
    assert clf.labels == ("not-falling", "falling") and clf.card.window == 48
    assert clf.card.vote_last == 2 and "research use" in clf.card.notice
    assert "recall" in clf.card.metrics["at_default_rule"]
    report = json.loads((tmp_path / "cv.json").read_text())
    assert set(report["clips"]) == {"urfd-fall-01", "urfd-fall-02", "kin-demo"}
    held = clf.card.metrics["held_out"]
    assert set(held) == {"urfd-fall-03"} and isinstance(held["urfd-fall-03"]["detected"], bool)
    assert "held out of training: urfd-fall-03" in clf.card.training_data
    rc = fall_main(["--skeletons", str(skel), "--labels", str(labels), "--cv", "0",
                    "--hold-out", "urfd-fall-99", "--no-progress"])
    assert rc == 2 and "urfd-fall-99" in capsys.readouterr().err
    rc = fall_main(["--skeletons", str(skel), "--labels", str(labels), "--cv", "0", "--classes", "3",
                    "--activity-classes", "--no-progress"])
    assert rc == 2 and "--activity-classes replaces --classes 3" in capsys.readouterr().err
