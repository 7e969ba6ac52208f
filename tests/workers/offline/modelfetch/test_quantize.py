"""``actionstream models quantize``: a real MoveNet quantized on real frames, loaded as the
pose worker loads ``movenet_int8``, finds the person the float model finds."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, shared_path

pytest.importorskip("onnx")


def _frame(clip: str, at: float = 0.5) -> np.ndarray:
    cap = cv2.VideoCapture(str(shared_path("data", "upfall", clip)))
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) * at))
    ok, image = cap.read()
    cap.release()
    assert ok
    return image


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    videos = [shared_path("data", "upfall", c) for c in ("A06-S01-T1-C1.mp4", "A11-S01-T2-C2.mp4")]
    if not all(v.is_file() for v in videos) or not shared_path("models", "movenet_multipose.onnx").is_file():
        pytest.skip("../shared/data/upfall and ../shared/models are needed")
    out = tmp_path_factory.mktemp("int8") / "movenet_multipose_int8.onnx"
    argv = ["models", "quantize", "--calibration", *map(str, videos), "--per-video", "3", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "workers", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_the_quantized_model_records_how_it_was_made(int8):
    info = json.loads(int8.with_suffix(".json").read_text())
    assert info["calibration_frames"] == 6 and info["float_first"] == 6
    assert len(info["kept_in_float"]) >= 6 + 3  # the first six and the heads (score, keypoints, offsets)
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_it_runs_as_movenet_int8_and_finds_the_same_person(int8):
    from workers.pose.adapters import load_pose_model

    fp32 = load_pose_model("movenet", shared_path("models", "movenet_multipose.onnx"), threads=1)
    q = load_pose_model("movenet_int8", int8, threads=1)
    image = _frame("A06-S01-T3-C1.mp4")  # a trial neither calibrated on
    found_a, found_b = fp32.infer([image])[0], q.infer([image])[0]
    assert found_a and found_b
    a, b = (max(found, key=lambda p: p.score) for found in (found_a, found_b))  # the one walking
    seen = (a.keypoints[:, 2] > 0) & (b.keypoints[:, 2] > 0)
    assert seen.sum() >= 10
    err = np.linalg.norm(a.keypoints[seen, :2] - b.keypoints[seen, :2], axis=1)
    assert np.median(err) < 0.02 * image.shape[1], err  # within 2 % of the frame's width


@pytest.mark.parametrize("args, error", [
    (["--calibration", "/nonexistent/videos"], "does not exist"),
    (["--calibration", str(ROOT / "deploy")], "no calibration videos"),
])
def test_bad_calibration_input_is_refused_clearly(tmp_path, args, error):
    proc = subprocess.run([sys.executable, "-m", "workers", "models", "quantize", *args, "--out",
                           str(tmp_path / "x.onnx")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and error in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
