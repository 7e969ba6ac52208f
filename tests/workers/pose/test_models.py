"""load_pose_model: the right adapter for each name, clear ModelErrors for the wrong file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from workers.pose.adapters import POSE_MODELS, PoseModel, load_pose_model
from workers.pose.movenet import MoveNetModel
from workers.pose.openpose import OpenPoseModel
from workers.inference.sessions import ModelError

ROOT = Path(__file__).resolve().parents[3]
SHARED = ROOT.parent / "shared"


def model_file(name: str) -> Path:
    path = SHARED / "models" / name
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared beside the checkout holds the models)")
    return path


def test_names():
    assert set(POSE_MODELS) == {"mobilenet_thin", "movenet", "movenet_int8"}


def test_loads_each_model_with_defaults():
    op = load_pose_model("mobilenet_thin", model_file("mobilenet_thin.onnx"), threads=1)
    mv = load_pose_model("movenet", model_file("movenet_multipose.onnx"), threads=1)
    assert isinstance(op, OpenPoseModel) and isinstance(op, PoseModel)
    assert isinstance(mv, MoveNetModel) and isinstance(mv, PoseModel)
    assert (op.name, op.input_size, op.nchw) == ("mobilenet_thin", (432, 368), False)
    assert (mv.name, mv.input_size) == ("movenet", 256)


def test_input_size_is_passed_through():
    op = load_pose_model("mobilenet_thin", model_file("mobilenet_thin.onnx"), input_size=(656, 368))
    mv = load_pose_model("movenet", model_file("movenet_multipose.onnx"), input_size=(256, 256))
    assert op.input_size == (656, 368) and mv.input_size == (256, 256)
    with pytest.raises(ModelError, match="multiples of 32"):
        load_pose_model("movenet", model_file("movenet_multipose.onnx"), input_size=(250, 250))
    with pytest.raises(ModelError, match=r"\(width, height\)"):
        load_pose_model("mobilenet_thin", model_file("mobilenet_thin.onnx"), input_size=256)


def test_resize_out_ratio_option():
    op = load_pose_model("mobilenet_thin", model_file("mobilenet_thin.onnx"), resize_out_ratio=2)
    assert op.resize_out_ratio == 2.0
    assert load_pose_model("mobilenet_thin", model_file("mobilenet_thin.onnx")).resize_out_ratio == 4.0
    with pytest.raises(ModelError, match="mobilenet_thin only"):
        load_pose_model("movenet", model_file("movenet_multipose.onnx"), resize_out_ratio=2)


def test_movenet_file_as_mobilenet_thin_is_refused():
    with pytest.raises(ModelError, match="is not a mobilenet_thin model.*uint8"):
        load_pose_model("mobilenet_thin", model_file("movenet_multipose.onnx"))


def test_mobilenet_thin_file_as_movenet_is_refused():
    with pytest.raises(ModelError, match="is not a movenet model"):
        load_pose_model("movenet", model_file("mobilenet_thin.onnx"))


def test_unknown_name_missing_and_garbage_files(tmp_path):
    with pytest.raises(ModelError, match="unknown pose model 'openpose_body25'"):
        load_pose_model("openpose_body25", tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        load_pose_model("movenet", tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_pose_model("mobilenet_thin", junk)


def test_nchw_file_gives_the_same_people():
    nchw_path = model_file("mobilenet_thin_nchw.onnx")
    img = cv2.imread(str(SHARED / "data" / "pose_gt" / "coco" / "000000000785.jpg"))
    if img is None:
        pytest.skip("the COCO test image is absent")
    nhwc = load_pose_model("mobilenet_thin", model_file("mobilenet_thin.onnx"))
    nchw = load_pose_model("mobilenet_thin", nchw_path)
    assert nchw.nchw
    (a,), (b,) = nhwc.infer([img]), nchw.infer([img])
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].keypoints, b[0].keypoints, atol=1e-3)
