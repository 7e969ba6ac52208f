"""ST-GCN parity with the original yysijie/st-gcn: graph, checkpoint loading, PyTorch and ONNX
outputs, and the Kinetics-skeleton JSON reader, against ../shared/stgcn_vectors.

Reference sets (see their READMEs): ``default_seed1`` (set A, default init, outputs
bias-dominated: tolerance 1e-5) and ``highgain_seed3`` (set C, convs x sqrt(6): tolerance
1e-4; it also has ``extract_feature`` outputs and per-block ``debug/`` tensors). The check
is the READMEs' own: max |actual - ref| <= tol * max(1, max |ref|), per array.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from shared.skeleton import get_layout  # noqa: E402
from workers.action.card import ModelCard  # noqa: E402
from workers.offline.stgcn.checkpoint import CheckpointError, load_checkpoint, read_state_dict  # noqa: E402
from workers.offline.stgcn.datasets import ClipError, read_kinetics_json  # noqa: E402
from workers.offline.stgcn.export import export_onnx  # noqa: E402
from workers.offline.stgcn.graph import Graph  # noqa: E402
from workers.offline.stgcn.model import STGCN  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]
VECTORS = ROOT.parent / "shared" / "stgcn_vectors"
CLIP = ROOT.parent / "shared" / "data" / "kinetics" / "skeleton_json" / "--33Lscn6sk.json"

SETS = {"default_seed1": (1, 1e-5), "highgain_seed3": (3, 1e-4)}  # folder: (seed, tolerance)
MODELS = {  # name: (constructor arguments, input tags)
    "kinetics": (dict(num_class=400, layout="openpose"),
                 ("kinetics_short64", "kinetics_json", "kinetics_random")),
    "ntu": (dict(num_class=60, layout="ntu-rgb+d", dropout=0.5), ("ntu_random",)),
}
CASES = [(s, m) for s in SETS for m in MODELS]


def vectors(*parts: str) -> Path:
    path = VECTORS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/stgcn_vectors beside the checkout)")
    return path


def assert_close(actual: np.ndarray, ref: np.ndarray, tol: float, what: str) -> float:
    """The READMEs' check; returns max |actual - ref|."""
    assert actual.shape == ref.shape, f"{what}: shape {actual.shape}, reference {ref.shape}"
    diff = float(np.abs(actual.astype(np.float64) - ref).max())
    limit = tol * max(1.0, float(np.abs(ref).max()))
    assert diff <= limit, f"{what}: max |diff| {diff:.3g} > {limit:.3g}"
    return diff


def model_input(folder: str, tag: str) -> np.ndarray:
    name = "kinetics_json_preprocessed.npy" if tag == "kinetics_json" else f"input_{tag}.npy"
    return np.load(vectors(folder, name))


def references(folder: str, tag: str) -> dict[str, np.ndarray]:
    """logits / extract_output / extract_feature (the last only where the set has it)."""
    out = {}
    for kind in ("logits", "extract_output", "extract_feature"):
        path = VECTORS / folder / f"{kind}_{tag}.npy"
        if path.exists():
            out[kind] = np.load(path)
    return out


@pytest.fixture(scope="module")
def loaded():
    """(folder, model name) -> STGCN with the reference checkpoint, eval mode; built once."""
    cache: dict = {}

    def get(folder: str, name: str) -> STGCN:
        if (folder, name) not in cache:
            seed = SETS[folder][0]
            ckpt = vectors(folder, f"{name}_st_gcn_seed{seed}.pt")
            cache[folder, name] = load_checkpoint(STGCN(**MODELS[name][0]).eval(), ckpt)
        return cache[folder, name]

    return get


# -- graph -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout,tag", [("openpose", "openpose18"), ("ntu-rgb+d", "ntu25")])
def test_graph_edges_and_adjacency_match_original(layout, tag):
    ref = json.loads(vectors("default_seed1", f"graph_edges_{tag}.json").read_text())
    spec = get_layout(layout)
    assert [list(e) for e in spec.edges] == ref["neighbor_links_0based"]
    assert spec.center == ref["center"] and spec.num_joints == ref["num_node"]
    graph = Graph(layout, "spatial")
    assert [list(e) for e in graph.edge] == ref["edge_0based_as_in_Graph_edge"]
    expected = np.load(vectors("default_seed1", f"graph_A_{tag}_spatial.npy"))
    assert graph.A.dtype == np.float64 and np.array_equal(graph.A, expected)


@pytest.mark.parametrize("strategy,max_hop,k", [("uniform", 1, 1), ("distance", 2, 3),
                                                ("spatial", 1, 3), ("spatial", 2, 5)])
def test_graph_strategies_are_column_normalised(strategy, max_hop, k):
    for layout in ("openpose", "ntu-rgb+d", "coco"):
        A = Graph(layout, strategy, max_hop=max_hop).A
        v = get_layout(layout).num_joints
        assert A.shape == (k, v, v)
        np.testing.assert_allclose(A.sum(axis=(0, 1)), 1.0)
    with pytest.raises(ValueError, match="strategy"):
        Graph("openpose", "nope")


# -- checkpoints -----------------------------------------------------------------------------
def test_checkpoint_module_prefix_and_old_format_load():
    state = read_state_dict(vectors("highgain_seed3", "kinetics_st_gcn_seed3.pt"))
    assert len(state) == 172
    prefixed = {f"module.{k}": v for k, v in state.items()}
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(old) == 149
    for variant in (prefixed, {"state_dict": prefixed}, old):
        model = load_checkpoint(STGCN(num_class=400), variant)
        got = model.state_dict()
        assert all(torch.equal(got[k], v) for k, v in state.items())


def test_checkpoint_mismatches_are_named(tmp_path):
    state = read_state_dict(vectors("highgain_seed3", "kinetics_st_gcn_seed3.pt"))
    broken = dict(state)
    del broken["fcn.bias"]
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(STGCN(num_class=400), broken)
    assert "missing keys: fcn.bias" in str(err.value)
    assert "unexpected keys: extra.weight" in str(err.value)
    with pytest.raises(CheckpointError, match=r"fcn.weight: checkpoint \(400, 256, 1, 1\) vs model"):
        load_checkpoint(STGCN(num_class=60), state)
    with pytest.raises(CheckpointError, match="V=18 joints"):
        load_checkpoint(STGCN(num_class=400, layout="ntu-rgb+d"), state)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(STGCN(num_class=400), tmp_path / "absent.pt")


# -- PyTorch ---------------------------------------------------------------------------------
def test_blocks_match_original_debug_tensors(loaded):
    """Set C, input kinetics_short64: data_bn and every block's output (N*M, C, T, V)."""
    folder, tol = "highgain_seed3", SETS["highgain_seed3"][1]
    model = loaded(folder, "kinetics")
    x = torch.from_numpy(model_input(folder, "kinetics_short64"))
    with torch.no_grad():
        h = model.normalise_input(x)
        assert_close(h.numpy(), np.load(vectors(folder, "debug", "kinetics_short64_after_data_bn.npy"))
                     .reshape(h.shape), tol, "after data_bn")
        for i, block in enumerate(model.st_gcn_networks):
            h = block(h, model.A * model.edge_importance[i])
            ref = np.load(vectors(folder, "debug", f"kinetics_short64_after_block{i}.npy"))
            assert_close(h.numpy(), ref, tol, f"after block {i}")


@pytest.mark.parametrize("folder,name", CASES)
def test_pytorch_matches_original(loaded, folder, name):
    """forward and extract_feature on the short input; forward_all (the same code paths in
    one backbone pass) on the long ones."""
    model, tol = loaded(folder, name), SETS[folder][1]
    for tag in MODELS[name][1]:
        x, ref = torch.from_numpy(model_input(folder, tag)), references(folder, tag)
        with torch.no_grad():
            if tag == "kinetics_short64":
                logits, (scores, features) = model(x), model.extract_feature(x)
            else:
                logits, scores, features = model.forward_all(x)
        got = {"logits": logits, "extract_output": scores, "extract_feature": features}
        for kind, expected in ref.items():
            assert_close(got[kind].numpy(), expected, tol, f"{folder} {tag} {kind}")


# -- ONNX ------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder,name", CASES)
def test_onnx_matches_original(loaded, tmp_path, folder, name):
    model, tol = loaded(folder, name), SETS[folder][1]
    # window 64: export_onnx's own check then runs at T=64 and T=16 (fast); T=300 is below
    card = ModelCard(name=f"{name}-{folder}", labels=tuple(map(str, range(model.num_class))),
                     layout=model.config["layout"], window=64)
    result = export_onnx(model, tmp_path / "model.onnx", card)
    session = ort.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
    for tag in MODELS[name][1]:
        ref = references(folder, tag)
        logits, scores = session.run(["logits", "scores"], {"data": model_input(folder, tag)})
        assert_close(logits, ref["logits"], tol, f"onnx {folder} {tag} logits")
        assert_close(scores, ref["extract_output"], tol, f"onnx {folder} {tag} scores")


# -- Kinetics-skeleton JSON ------------------------------------------------------------------
def test_kinetics_json_reader_matches_original_feeder():
    if not CLIP.exists():
        pytest.skip(f"{CLIP} is absent")
    data, label = read_kinetics_json(CLIP)
    assert label == 129 and data.dtype == np.float32 and data.shape == (3, 300, 18, 2)
    ref = np.load(vectors("default_seed1", "kinetics_json_preprocessed.npy"))[0]
    ref64 = np.load(vectors("default_seed1", "kinetics_json_preprocessed_float64_CTVM.npy"))
    assert np.array_equal(data, ref)
    assert np.array_equal(data, ref64.astype(np.float32))


def _clip(tmp_path: Path, frames: list) -> Path:
    path = tmp_path / "clip.json"
    path.write_text(json.dumps({"data": frames, "label": "x", "label_index": 3}))
    return path


def test_kinetics_json_reader_sorts_persons_and_rejects_bad_frames(tmp_path):
    def person(conf):
        return {"pose": [0.25, 0.75] * 18, "score": [conf] * 17 + [0.0]}

    frames = [{"frame_index": 1, "skeleton": [person(0.2), person(0.9), person(0.5)]}]
    data, label = read_kinetics_json(_clip(tmp_path, frames), window=8)
    assert label == 3 and data.shape == (3, 8, 18, 2)
    assert np.all(data[:, 0] == 0) and np.all(data[:, 2:] == 0)  # 1-based frame_index kept
    np.testing.assert_allclose(data[2, 1, 0], [0.9, 0.5])  # best two persons, by score
    np.testing.assert_allclose(data[0, 1, 0], [-0.25, -0.25])
    np.testing.assert_allclose(data[1, 1, 0], [0.25, 0.25])
    assert np.all(data[:2, 1, 17] == 0)  # zero confidence -> x = y = 0, not -0.5
    with pytest.raises(ClipError, match="frame_index 8"):
        read_kinetics_json(_clip(tmp_path, [{"frame_index": 8, "skeleton": []}]), window=8)
