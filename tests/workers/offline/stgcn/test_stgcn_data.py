"""ST-GCN training data: NTU ``.skeleton`` and label JSON readers, gendata (memory-mapped
.npy + label pickle), actionstream's own skeleton exports, the original augmentations and
the fall-window builder — on the real samples in ``../shared/data``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from shared import kinetics
from workers.offline.stgcn import datasets as D
from workers.offline.stgcn import feeder as F

ROOT = Path(__file__).resolve().parents[4]
SHARED = ROOT.parent / "shared" / "data"
NTU = SHARED / "ntu"
KINETICS_JSON = SHARED / "kinetics" / "skeleton_json" / "--33Lscn6sk.json"
URFD_LABELS = SHARED / "urfd" / "labels.csv"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared data is not here)")
    return path


def ntu_files() -> list[Path]:
    return sorted(need(NTU / "skeleton").glob("*.skeleton"))


def test_read_ntu_skeleton_matches_the_file_text():
    path = ntu_files()[0]
    lines = path.read_text().split("\n")
    clip = D.read_ntu_skeleton(path)
    assert clip.shape == (3, int(lines[0]), 25, 2) and clip.dtype == np.float32
    # frame 0: line 1 = bodies, line 2 = body info, line 3 = joints, line 4 = joint 0
    first = [float(v) for v in lines[4].split()[:3]]
    np.testing.assert_allclose(clip[:, 0, 0, 0], first, rtol=1e-6)
    assert np.isfinite(clip).all() and np.abs(clip).max() > 0


def test_every_ntu_sample_reads_and_bad_files_raise(tmp_path):
    for path in ntu_files():
        assert D.read_ntu_skeleton(path).shape[2:] == (25, 2)
    bad = tmp_path / "bad.skeleton"
    bad.write_text("3\n1\nnot numbers\n")
    with pytest.raises(D.ClipError, match="bad.skeleton"):
        D.read_ntu_skeleton(bad)


def test_label_json_is_keyed_by_clip_with_and_without_rgb():
    path = need(NTU / "label_json" / "kinetics_val_label.json")
    raw = json.loads(path.read_text())
    labels = D.read_label_json(path)
    clip, info = next(iter(raw.items()))
    assert labels[clip] == (info["label"], info["label_index"], info["has_skeleton"])
    assert labels[clip.removesuffix("_rgb")] == labels[clip]
    assert D.ntu_action("S001C001P001R001A043.skeleton") == 42
    assert D.ntu_action("S004C001P008R002A048_rgb") == 47
    with pytest.raises(D.ClipError):
        D.ntu_action("walking.json")


def test_gendata_ntu_memmap_and_label_pickle(tmp_path):
    paths = ntu_files()[:3]
    labels = [D.ntu_action(p.name) for p in paths]
    data_path, label_path = D.gendata(paths, labels, tmp_path, "val", reader=D.read_ntu_skeleton,
                                      window=300, num_joints=25)
    data, got, names = D.load_gendata(data_path, label_path)
    assert isinstance(data, np.memmap) and data.shape == (3, 3, 300, 25, 2)
    assert got.tolist() == labels and names == [p.name for p in paths]
    first = D.read_ntu_skeleton(paths[0])
    t = min(300, first.shape[1])
    np.testing.assert_array_equal(data[0, :, :t], first[:, :t])
    assert not data[0, :, t:].any()  # zero-padded at the end
    with open(label_path, "rb") as fh:
        assert pickle.load(fh) == ([p.name for p in paths], labels)
    assert json.loads((tmp_path / "val_label.json").read_text())["label"] == labels


def test_gendata_kinetics_json_equals_the_reader(tmp_path):
    path = need(KINETICS_JSON)
    data_path, label_path = D.gendata([path], [3], tmp_path, "train")
    data, labels, _ = D.load_gendata(data_path, label_path)
    np.testing.assert_array_equal(data[0], D.read_kinetics_json(path)[0])
    assert labels.tolist() == [3]


def kinetics_as_export(tmp_path: Path, camera: str = "cam") -> tuple[Path, dict]:
    """The real Kinetics-skeleton clip rewritten as an actionstream export (track = person
    index), as `actionstream up --skeletons-out` writes it."""
    info = json.loads(need(KINETICS_JSON).read_text())
    frames: list[list[dict]] = [[] for _ in range(max(f["frame_index"] for f in info["data"]))]
    for f in info["data"]:
        frames[f["frame_index"] - 1] = [
            {"pose": s["pose"], "score": s["score"], "track_id": m}
            for m, s in enumerate(f["skeleton"][:2])]
    return kinetics.write_exported_skeletons(tmp_path / f"{camera}.json", camera, frames), info


def test_exported_skeletons_give_the_worker_windows(tmp_path):
    from workers.action.window import CameraWindows

    path, info = kinetics_as_export(tmp_path)
    camera, frames = kinetics.read_exported_skeletons(path, fps=30.0)
    assert camera == "cam" and [s.seq for s in frames] == list(range(len(frames)))
    assert frames[10].ts == pytest.approx(10 / 30)
    windows = CameraWindows(window=300, stride=15, min_frames=32, camera=camera)
    for skel in frames:
        windows.push(skel)
    ref = next(r for r in windows.flush() if r.track_id == 0)
    # track 0's own slot: x - 0.5, y - 0.5, conf, as the original feeder's centring
    first = next(f for f in info["data"] if f["skeleton"])
    t = first["frame_index"] - 1 - ref.frame_start
    pose = np.asarray(first["skeleton"][0]["pose"]).reshape(18, 2)
    score = np.asarray(first["skeleton"][0]["score"])
    seen = score > 0
    np.testing.assert_allclose(ref.data[0, t, seen, 0], pose[seen, 0] - 0.5, atol=1e-5)
    np.testing.assert_allclose(ref.data[1, t, seen, 0], pose[seen, 1] - 0.5, atol=1e-5)
    np.testing.assert_allclose(ref.data[2, t, :, 0], score, atol=1e-6)
    assert not ref.data[0:2, t, ~seen, 0].any()


def test_augmentations_keep_shapes_and_missing_joints():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 40, 18, 2)).astype(np.float32)
    x[2, :, 3] = 0
    x[0:2, :, 3] = 0
    moved = F.random_move(x, rng=rng)
    assert moved.shape == x.shape and not moved[0:2, :, 3].any()
    assert not np.allclose(moved[0:2], x[0:2])
    assert F.random_choose(x, 16, rng=rng).shape[1] == 16
    assert F.random_choose(x, 64, rng=rng).shape[1] == 64
    x[:, 30:] = 0
    shifted = F.random_shift(x, rng=rng)
    assert ((shifted != 0).sum(axis=(0, 2, 3)) > 0).sum() == 30


def test_batches_group_lengths_and_keep_the_last_short_batch():
    data = np.ones((7, 3, 64, 18, 2), dtype=np.float32)
    lengths = [33, 64, 64, 35, 64, 64, 64]
    ds = F.ArrayDataset(data, np.arange(7) % 2, lengths)
    out = list(F.batches(ds, 4, shuffle=False))
    assert sorted(x.shape[2] for x, _, _ in out) == [36, 64, 64]
    assert sum(len(y) for _, y, _ in out) == 7


def test_urfd_labels_and_fall_window_labels():
    from workers.offline.stgcn import fall

    spans = fall.read_urfd_labels(need(URFD_LABELS))
    assert len(spans) == 20 and all(a <= b for a, b in spans.values())
    ref = _ref(frame_start=100, frames=64)
    assert fall.window_label(ref, None) == fall.UPRIGHT
    assert fall.window_label(ref, (170, 190)) == fall.UPRIGHT
    assert fall.window_label(ref, (150, 160)) == fall.FALLING
    assert fall.window_label(ref, (160, 180)) == fall.IGNORE  # 4 of 21 fall frames
    assert fall.window_label(ref, (160, 180), share=0.15) == fall.FALLING
    assert fall.window_label(ref, (160, 180), share=0.25) == fall.IGNORE
    assert fall.window_label(_ref(100, 64), (40, 90)) == fall.LYING
    assert fall.to_class(fall.LYING, fall.CLASSES_2) == 0


def _ref(frame_start: int, frames: int):
    from workers.action.window import WindowRef

    data = np.zeros((3, frames, 18, 2), dtype=np.float32)
    data[2, :, :, 0] = 0.5
    return WindowRef("cam", 1, frame_start, frame_start + frames - 1, 0.0, 1.0, frames, frames,
                     data)
