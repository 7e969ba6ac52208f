"""The streaming (continual) ST-GCN: exact parity with the windowed model under the same padding
conventions, the ONNX step graph against PyTorch, the runtime's per-track state, causal body
normalisation, and bad input.

Real windows: the genuine Kinetics-skeleton clip of ../shared (300 frames, OpenPose-18, two
people); real weights: the shipped fall model read back from its ONNX, and a seeded
full-size network with trained-like BatchNorm statistics and gain (so a misaligned frame
moves the outputs far beyond float noise).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from tests.conftest import shared_path  # noqa: E402
from workers.action.card import load_card  # noqa: E402
from workers.action.classifier import body_normalise  # noqa: E402
from workers.offline.stgcn.datasets import read_kinetics_json  # noqa: E402
from workers.offline.stgcn.model import build_model  # noqa: E402
from workers.offline.stgcn.onnx_weights import stgcn_from_onnx  # noqa: E402
from workers.offline.stgcn.continual import (StreamingSTGCN, export_step_onnx, layer_timings,  # noqa: E402
                                            stream_window)
from workers.offline.stgcn.stepmodel import CausalBodyNorm, StepModel, StreamingTracks, load_step_card  # noqa: E402

FALL_MODEL = Path(__file__).resolve().parents[4] / "workers" / "action" / "models" / "fall.onnx"
TOL = 1e-4


@pytest.fixture(scope="module")
def kinetics() -> np.ndarray:
    """(3, 300, 18, 2): the real Kinetics-skeleton clip."""
    data, _ = read_kinetics_json(shared_path("data", "kinetics", "skeleton_json", "--33Lscn6sk.json"))
    return data


@pytest.fixture(scope="module")
def fall_model():
    return stgcn_from_onnx(FALL_MODEL)


@pytest.fixture(scope="module")
def sharp_full():
    """The ten-block network (strides 1 x4, 2, 1, 1, 2, 1, 1), 4 classes, sharpened."""
    model = build_model(4, layout="openpose", seed=3)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
        for block in model.st_gcn_networks:
            block.gcn.conv.weight.mul_(math.sqrt(6.0))
            block.tcn[2].weight.mul_(math.sqrt(6.0))
    return model.eval()


def fall_window(kinetics: np.ndarray, start: int, length: int) -> np.ndarray:
    """(1, 3, length, 18, 1): the first person of the clip, body-normalised as the fall model's
    card says."""
    w = kinetics[None, :, start:start + length, :, :1]
    return body_normalise(w, [length], [(340, 256)])


def windowed(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x))
        return model.extract_feature(t)[0].mean(dim=(3, 4)).numpy(), model(t).numpy()


def close(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


# -- (a) exact parity under the windowed model's padding conventions --------------------------
def test_onnx_weights_read_back_reproduce_the_shipped_model(fall_model, kinetics):
    import onnxruntime as ort

    x = fall_window(kinetics, 100, 48)
    session = ort.InferenceSession(str(FALL_MODEL), providers=["CPUExecutionProvider"])
    logits, scores = session.run(None, {"data": x})
    want_pos, want_logits = windowed(fall_model, x)
    assert close(logits, want_logits) <= TOL
    assert close(scores.mean(axis=(3, 4)), want_pos) <= TOL


@pytest.mark.parametrize("start, length", [(0, 48), (120, 48), (40, 36), (0, 300)])
def test_streaming_fall_model_equals_windowed_on_a_real_window(fall_model, kinetics, start, length):
    x = fall_window(kinetics, start, length)
    want_pos, want_logits = windowed(fall_model, x)
    pos, scores = stream_window(StreamingSTGCN(fall_model, length), torch.from_numpy(x))
    assert pos.shape == want_pos.shape == (1, 2, length // 4)
    assert close(pos, want_pos) <= TOL * max(1.0, float(np.abs(want_pos).max()))
    assert close(scores, want_logits) <= TOL * max(1.0, float(np.abs(want_logits).max()))


def test_streaming_full_network_two_people_equals_windowed(sharp_full, kinetics):
    """Ten blocks (delay 19 positions), identity and strided residuals, M = 2."""
    x = kinetics[None, :, 100:164]
    stream = StreamingSTGCN(sharp_full, 64)
    assert stream.delay == 19
    want_pos, want_logits = windowed(sharp_full, x)
    assert np.abs(want_pos).max() > 1.0  # a signal that a misaligned frame would move
    pos, scores = stream_window(stream, torch.from_numpy(x))
    assert close(pos, want_pos) <= TOL * float(np.abs(want_pos).max())
    assert close(scores, want_logits) <= TOL * max(1.0, float(np.abs(want_logits).max()))


def test_a_state_of_zeros_is_a_track_without_history(fall_model, kinetics):
    """Plain steps from a zero state (no end mask, no flush, as at runtime): every position
    whose receptive field ends inside the window equals the windowed model's, so the start
    needs nothing beyond ``age``."""
    x = fall_window(kinetics, 60, 96)
    stream = StreamingSTGCN(fall_model, 96)
    want_pos, _ = windowed(fall_model, x)
    state = stream.initial_state(1, 1)
    got = []
    with torch.no_grad():
        for k in range(24):
            _, position, *state = stream.step(torch.from_numpy(x[:, :, 4 * k:4 * k + 4]), *state)
            if k >= stream.delay:
                got.append(position.numpy())
    got = np.stack(got, axis=2)  # positions 0 .. 17: their receptive fields end by frame 95
    assert got.shape[2] == 24 - stream.delay
    assert close(got, want_pos[..., : got.shape[2]]) <= TOL


# -- (b) the ONNX step graph and the runtime ------------------------------------------------------
@pytest.fixture(scope="module")
def step_graph(tmp_path_factory, fall_model) -> Path:
    out = tmp_path_factory.mktemp("step") / "fall.step.onnx"
    export_step_onnx(fall_model, load_card(FALL_MODEL), out, "fall.onnx")
    return out


def test_step_graph_equals_torch_steps_on_a_real_clip(step_graph, fall_model, kinetics):
    import onnx

    assert not [n for n in onnx.load(str(step_graph)).graph.node if n.op_type == "Einsum"]
    card = load_step_card(step_graph)
    assert (card.frames_per_step, card.delay_frames, card.window) == (4, 24, 48)
    model = StepModel(step_graph, providers=["CPUExecutionProvider"])
    stream = StreamingSTGCN(fall_model, 48)
    x = fall_window(kinetics, 0, 300)
    t_state, o_state = stream.initial_state(1, 1), model.initial_state(1)
    for k in range(75):
        chunk = x[:, :, 4 * k:4 * k + 4]
        with torch.no_grad():
            want, _, *t_state = stream.step(torch.from_numpy(chunk), *t_state)
        got, o_state = model.run(chunk, o_state)
        assert close(got, want.numpy()) <= TOL * max(1.0, float(want.abs().max())), f"step {k}"


def test_tracks_keep_their_own_state(step_graph, kinetics):
    """Two tracks pushed together, one starting 6 frames later, score as each does alone."""
    model = StepModel(step_graph, providers=["CPUExecutionProvider"])
    a, b = kinetics[:, :120, :, :1], kinetics[:, 50:170, :, 1:2]
    alone = {}
    for name, clip in (("a", a), ("b", b)):
        tracks = StreamingTracks(model)
        alone[name] = [tracks.push({name: clip[:, i]}).get(name) for i in range(clip.shape[1])]
    both = StreamingTracks(model)
    together: dict[str, list] = {"a": [], "b": []}
    for i in range(126):
        frames = {}
        if i < 120:
            frames["a"] = a[:, i]
        if 6 <= i:
            frames["b"] = b[:, i - 6]
        out = both.push(frames)
        for k in frames:
            together[k].append(out.get(k))
    for name in ("a", "b"):
        steps = [(x, y) for x, y in zip(alone[name], together[name]) if x is not None or y is not None]
        # 120 frames = 30 steps, the first 6 (the delay) without an output position
        assert len(steps) == 24 and all(x is not None and y is not None for x, y in steps)
        assert all(x is None for x in alone[name][:27])
        assert max(close(x, y) for x, y in steps) <= 1e-5
    assert not np.allclose(alone["a"][-1], alone["b"][-1])  # the two tracks differ


def test_causal_body_norm_equals_the_window_normalisation_at_the_window_end(kinetics):
    w = kinetics[:, 30:78, :, :1]  # 48 frames of a real track
    norm = CausalBodyNorm(48)
    outs = [norm(w[:, i], (340, 256)) for i in range(48)]
    want = body_normalise(w[None], [48], [(340, 256)])[0]
    assert close(outs[-1], want[:, -1]) <= 1e-5
    assert close(outs[10], want[:, 10]) > 1e-3  # earlier frames: fewer frames' statistics


def test_step_card_export_card_fields(step_graph):
    raw = json.loads(step_graph.with_suffix(".json").read_text())
    assert raw["state"]["conv3"] == [1, 64, 8, 18] and raw["state"]["res1"] == [1, 16, 4, 18]
    assert raw["labels"] == list(load_card(FALL_MODEL).labels) and raw["model"] == "fall.onnx"


# -- (c) bad input ----------------------------------------------------------------------------------
def _bad_state(model: StepModel) -> list:
    state = model.initial_state(1)
    state[2] = np.zeros((1, 2, 16, 8, 18), np.float32)
    return state


@pytest.mark.parametrize("frames, state, error", [
    (np.zeros((1, 3, 1, 18, 1)), None, r"frames must have shape \(N, 3, 4, 18, 1\)"),
    (np.zeros((1, 3, 4, 17, 1)), None, r"frames must have shape"),
    (np.zeros((0, 3, 4, 18, 1)), None, r"N >= 1"),
    (np.zeros((3, 4, 18, 1)), None, r"frames must have shape"),
    (np.zeros((2, 3, 4, 18, 1)), None, r"state 'age' must have shape \(2,\)"),
    (np.zeros((1, 3, 4, 18, 1)), "short", r"state must be 9 arrays"),
    (np.zeros((1, 3, 4, 18, 1)), "bad", r"state 'conv0' must have shape \(1, 1, 16, 8, 18\)"),
])
def test_step_model_rejects_bad_shapes(step_graph, frames, state, error):
    model = StepModel(step_graph, providers=["CPUExecutionProvider"])
    st = {None: model.initial_state(1), "short": model.initial_state(1)[:-1],
          "bad": _bad_state(model)}[state]
    with pytest.raises(ValueError, match=error):
        model.run(frames, st)


def test_tracks_reject_a_bad_frame(step_graph):
    tracks = StreamingTracks(StepModel(step_graph, providers=["CPUExecutionProvider"]))
    with pytest.raises(ValueError, match=r"track 7: a frame must have shape \(3, 18, 1\)"):
        tracks.push({7: np.zeros((3, 18, 2))})


@pytest.mark.parametrize("call, error", [
    (lambda m: StreamingSTGCN(m, 50), "window 50 is not a positive multiple of 4"),
    (lambda m: StreamingSTGCN(m, 48).step(torch.zeros(1, 3, 1, 18, 1), *StreamingSTGCN(m, 48)
                                          .initial_state(1, 1)), r"frames must be \(N, 3, 4, 18, M\)"),
    (lambda m: layer_timings([2, 2, 2]), "must multiply to 4|do not fit"),
    (lambda m: layer_timings([1, 1]), "must multiply to 4"),
    (lambda m: layer_timings([3]), "do not fit"),
])
def test_streaming_model_rejects_bad_input(fall_model, call, error):
    with pytest.raises(ValueError, match=error):
        call(fall_model)


def test_a_malformed_step_card_is_refused(tmp_path, step_graph):
    bad = tmp_path / "x.step.onnx"
    bad.write_bytes(step_graph.read_bytes())
    raw = json.loads(step_graph.with_suffix(".json").read_text())
    del raw["state"]
    bad.with_suffix(".json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="field 'state' missing or malformed"):
        load_step_card(bad)


def test_onnx_weights_read_back_a_full_network_export(stgcn_export):
    """The CLI's seeded ten-block export: blocks whose folded adjacency is equal share one
    constant in the graph."""
    import onnxruntime as ort

    path = stgcn_export(seed=1, num_class=4)
    model = stgcn_from_onnx(path)
    x = (np.random.default_rng(1).standard_normal((2, 3, 32, 18, 2)) * 0.5).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, scores = session.run(None, {"data": x})
    want_pos, want_logits = windowed(model, x)
    assert close(logits, want_logits) <= TOL and close(scores.mean(axis=(3, 4)), want_pos) <= TOL


def test_the_runtime_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, workers.offline.stgcn.stepmodel; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[4])
    assert out.stdout.strip() == "False"
