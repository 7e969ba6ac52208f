"""ST-GCN ONNX export and its CLI (``actionstream stgcn export``): the graph has no Einsum,
a dynamic batch and T, a model card beside it; user errors exit with 2 and a message."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from workers.action.card import ModelCard, load_card  # noqa: E402
from workers.offline.stgcn.stgcncli import export_main  # noqa: E402
from workers.offline.stgcn.export import ExportError, export_onnx, verify_onnx  # noqa: E402
from workers.offline.stgcn.model import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]
VECTORS = ROOT.parent / "shared" / "stgcn_vectors"
SEED, CLASSES = 7, 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A seeded 5-class OpenPose model exported by the CLI, with labels from a file."""
    folder = tmp_path_factory.mktemp("stgcn")
    labels = folder / "labels.txt"
    labels.write_text("standing\nwalking\nsitting\nfalling\nlying\n")
    out = folder / "fall.onnx"
    rc = export_main(["--seed", str(SEED), "--layout", "openpose", "--num-class", str(CLASSES),
                      "--labels", str(labels), "--window", "300", "--fps", "25", "--out", str(out)])
    assert rc == 0
    return out


def test_cli_writes_model_and_card(exported):
    assert exported.is_file() and exported.with_suffix(".json").is_file()
    card = load_card(exported)
    assert card.labels == ("standing", "walking", "sitting", "falling", "lying")
    assert (card.layout, card.window, card.fps, card.num_person) == ("openpose", 300, 25.0, 2)
    assert card.dynamic_t and card.input_name == "data" and card.outputs == ("logits", "scores")


def test_onnx_graph_has_no_einsum_and_a_recent_opset(exported):
    proto = onnx.load(str(exported))
    ops = {node.op_type for node in proto.graph.node}
    assert "Einsum" not in ops and "MatMul" in ops
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 12
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["stgcn.layout"] == "openpose" and "seed 7" in meta["source"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "time", 18, 2]


@pytest.mark.parametrize("t", [300, 64])
def test_onnx_batch_3_dynamic_t_matches_seeded_pytorch(exported, t):
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(t).standard_normal((3, 3, t, 18, 2)) * 0.3).astype(np.float32)
    logits, scores = session.run(["logits", "scores"], {"data": x})
    assert logits.shape == (3, CLASSES) and scores.shape == (3, CLASSES, t // 4, 18, 2)
    model = build_model(CLASSES, layout="openpose", seed=SEED)  # the same seed, the same weights
    with torch.no_grad():
        want_logits, want_scores, _ = model.forward_all(torch.from_numpy(x))
    np.testing.assert_allclose(logits, want_logits.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores, want_scores.numpy(), rtol=0, atol=1e-5)
    # "voting": the mean of the per-position scores is the pooled forward (linear head)
    np.testing.assert_allclose(scores.mean(axis=(2, 3, 4)), logits, rtol=0, atol=1e-5)


def test_verify_detects_a_model_that_differs(exported):
    model = build_model(CLASSES, layout="openpose", seed=SEED)
    card = dataclasses.replace(load_card(exported), window=32)  # short check inputs: fast
    assert verify_onnx(model, exported, card)["logits"] < 1e-5
    with torch.no_grad():
        model.fcn.bias += 0.01
    with pytest.raises(ExportError, match="differs from PyTorch"):
        verify_onnx(model, exported, card)


def test_export_refuses_a_card_that_does_not_fit(tmp_path):
    model = build_model(CLASSES, seed=1)
    with pytest.raises(ValueError, match="4 labels, the model 5 classes"):
        export_onnx(model, tmp_path / "m.onnx", ModelCard(name="m", labels=("a", "b", "c", "d")))
    with pytest.raises(ValueError, match="layout"):
        export_onnx(model, tmp_path / "m.onnx", ModelCard(name="m", labels=tuple("abcde"),
                                                          layout="coco"))
    assert not list(tmp_path.iterdir())


def test_cli_missing_checkpoint_exits_2(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = export_main(["--checkpoint", str(tmp_path / "absent.pt"), "--num-class", "400",
                      "--out", str(out)])
    assert rc == 2
    assert "absent.pt does not exist" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("argv,message", [
    ([], "one of the arguments --checkpoint --seed is required"),
    (["--seed", "1"], "give --num-class or --labels"),
    (["--seed", "1", "--num-class", "5", "--window", "30"], "multiple of 4"),
])
def test_cli_usage_errors_exit_2(tmp_path, capsys, argv, message):
    assert export_main([*argv, "--out", str(tmp_path / "m.onnx")]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_labels_must_match_num_class(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    rc = export_main(["--seed", "1", "--num-class", "4", "--labels", str(labels),
                      "--out", str(tmp_path / "m.onnx")])
    assert rc == 2 and "class counts disagree" in capsys.readouterr().err


def test_cli_checkpoint_of_another_layout_exits_2(tmp_path, capsys):
    ckpt = VECTORS / "default_seed1" / "kinetics_st_gcn_seed1.pt"
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} is absent (../shared/stgcn_vectors beside the checkout)")
    out = tmp_path / "m.onnx"
    rc = export_main(["--checkpoint", str(ckpt), "--layout", "ntu-rgb+d", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "shape mismatches" in err and "data_bn.weight" in err
    assert "layout openpose" in err  # the hint names the checkpoint's layout
    assert not out.exists()


def test_light_modules_do_not_import_torch():
    code = ("import sys, workers.offline.stgcn, workers.offline.stgcn.graph, "
            "workers.offline.stgcn.datasets; sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
