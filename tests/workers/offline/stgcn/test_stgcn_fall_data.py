"""The fall model's data: UP-Fall fall ranges derived from real skeletons, the cached
detections -> tracked clips route, augmentation invariants and the metrics."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.conftest import shared_path  # noqa: E402
from workers.offline.stgcn import augment as A  # noqa: E402
from workers.offline.stgcn import accuracy as MX  # noqa: E402
from workers.offline.stgcn.fall import Clip  # noqa: E402

UPFALL_CLIP = "A01-S01-T1-C1"  # falling forward using hands, 640x480 @ 18 fps


@pytest.fixture(scope="module")
def upfall_cache(tmp_path_factory):
    """MoveNet's raw output of one real UP-Fall fall clip, cached as the pose stage would."""
    from shared.settings import Camera
    from workers.offline.posetrain.detections import detect_camera
    from workers.pose.adapters import load_pose_model

    video = shared_path("data", "upfall", f"{UPFALL_CLIP}.mp4")
    model = load_pose_model("movenet", shared_path("models", "movenet_multipose.onnx"), threads=1)
    data = detect_camera(Camera(id=f"upfall-{UPFALL_CLIP}", source=str(video)), model)
    path = tmp_path_factory.mktemp("det") / f"upfall-{UPFALL_CLIP}.npz"
    np.savez_compressed(path, **data)
    return path


def test_detections_become_tracked_clips_as_the_pose_worker_makes_them(upfall_cache):
    from workers.offline.stgcn.fallsources import load_detection_clips
    from workers.offline.stgcn.upfall import read_upfall_labels

    labels = read_upfall_labels(shared_path("data", "upfall", "labels.csv"))
    (clip,) = load_detection_clips(upfall_cache.parent, {}, labels)
    assert clip.name == f"upfall-{UPFALL_CLIP}" and clip.dataset == "upfall"
    assert clip.kind == "fall" and clip.group == "upfall-A01-S01-T1"
    assert clip.fps == 18.0 and clip.size == (640, 480) and len(clip.frames) == 142
    assert [s.seq for s in clip.frames] == list(range(142))
    tracked = [s for s in clip.frames if any(p.track_id > 0 for p in s.people)]
    assert len(tracked) > 100  # one standing person, well seen


def test_upfall_fall_range_is_derived_where_the_body_goes_down(upfall_cache):
    """Checked by eye on the contact sheet: the subject leans forward from frame ~47 and is
    flat on the floor at frame 58-59."""
    from workers.offline.stgcn.fallsources import tracked_frames
    from workers.offline.stgcn.upfall import derive_fall

    frames, fps, _ = tracked_frames(upfall_cache)
    start, end = derive_fall(frames, fps)
    assert 40 <= start <= 50 and 54 <= end <= 60 and end > start
    assert derive_fall(frames[:45], fps) is None  # still standing: no fall


@pytest.mark.parametrize("stride,error", [(15, None), (10, None), (5, None), (7, "not a multiple")])
def test_windows_scored_every_5_steps_give_the_worker_windows_of_a_longer_stride(upfall_cache, stride,
                                                                                error):
    """Cross-validation scores every 5 steps so that other strides can be tried without
    training again: the subsample is the window list the worker classifies at that stride."""
    from workers.offline.stgcn.fall import at_stride, clip_windows
    from workers.offline.stgcn.fallsources import load_detection_clips
    from workers.offline.stgcn.upfall import read_upfall_labels

    labels = read_upfall_labels(shared_path("data", "upfall", "labels.csv"))
    (clip,) = load_detection_clips(upfall_cache.parent, {}, labels)
    fine = {clip.name: [(ref, i) for i, ref in enumerate(clip_windows(clip, 48, 5, 32, fps=30.0))]}
    if error:
        with pytest.raises(ValueError, match=error):
            at_stride(fine, 5, stride)
        return
    got = [(ref.track_id, ref.frame_end) for ref, _ in at_stride(fine, 5, stride)[clip.name]]
    want = [(ref.track_id, ref.frame_end) for ref in clip_windows(clip, 48, stride, 32, fps=30.0)]
    assert got == want and len(want) > 3


@pytest.mark.parametrize("name,dataset,kind,group", [
    ("upfall-A11-S01-T2-C1", "upfall", "negative", "upfall-A11-S01-T2"),
    ("ntu-S001C001P003R001A001", "ntu", "negative", "ntu-P003"),
    ("walking", "other", "negative", "walking"),
])
def test_clips_are_labelled_by_their_camera_id(name, dataset, kind, group):
    from workers.offline.stgcn.fallsources import label_clip
    from workers.offline.stgcn.upfall import UpFallClip

    upfall = {"A11-S01-T2-C1": UpFallClip("A11-S01-T2-C1", 11, "laying", 18.0)}
    clip = label_clip(Clip(name, [], 30.0, group=name), {}, upfall)
    assert (clip.dataset, clip.kind, clip.group, clip.fall) == (dataset, kind, group, None)


def test_a_camera_without_a_found_fall_takes_its_trials_other_camera():
    from workers.offline.stgcn.fallsources import fill_from_trial

    a = Clip("upfall-A04-S01-T2-C1", [], 18.0, (15, 21), "fall", "upfall-A04-S01-T2", dataset="upfall")
    b = Clip("upfall-A04-S01-T2-C2", [], 18.0, None, "fall", "upfall-A04-S01-T2", dataset="upfall")
    fill_from_trial([a, b])
    assert b.fall == (15, 21)


# -- augmentation --------------------------------------------------------------------------
def _window(rng, t=48, length=40):
    x = np.zeros((3, t, 18, 2), np.float32)
    x[0, :length, :, 0] = rng.uniform(-0.1, 0.1, (length, 18))
    x[1, :length, :, 0] = rng.uniform(-0.3, 0.3, (length, 18))
    x[2, :length, :, 0] = rng.uniform(0.3, 1.0, (length, 18))
    x[:, :length, 0, 0] = 0.0  # the nose (its own mirror image) never seen
    return x


@pytest.mark.parametrize("seed", range(5))
def test_augmentation_keeps_unseen_joints_and_padding_at_zero(seed):
    rng = np.random.default_rng(seed)
    x = _window(rng)
    out, length = A.augment_window(x, 40, (640, 480), rng)
    assert out.shape == x.shape and 32 <= length <= 48
    assert not out[:, length:].any()  # padding
    assert not out[:, :, 0].any() and not out[:, :, :, 1].any()  # unseen joint, empty slot
    seen = out[2] > 0
    assert (out[2][seen] > 0.29).all()  # confidences kept, not invented


@pytest.mark.parametrize("factor,want", [(1.25, 32), (0.8, 48), (1.0, 40)])
def test_speed_resampling_plays_the_window_faster_or_slower(factor, want):
    x = np.zeros((3, 48, 18, 2), np.float32)
    x[2, :40] = 1.0
    x[0, :40] = np.arange(40, dtype=np.float32)[:, None, None]
    out, length = A.resample_speed(x, 40, factor, 48)
    assert length == want
    assert out[0, length - 1, 0, 0] == pytest.approx(min(39, int((round(40 / factor) - 1) * factor)))


def test_mirror_swaps_left_and_right_and_flips_x():
    assert (A.MIRROR[A.MIRROR] == np.arange(18)).all()
    cfg = A.AugmentConfig(mirror=1.0, scale=(1, 1), rotation_deg=0, camera_height=(1, 1), shift=0,
                          speed=(1, 1), drop_joint=0, noise=0)
    rng = np.random.default_rng(0)
    x = _window(rng)
    out, _ = A.augment_window(x, 40, (640, 480), rng, cfg)
    cx = x[0, :40, :, 0][x[2, :40, :, 0] > 0].mean()
    # right shoulder (2) of the mirror image is the left shoulder (5) flipped about the centre
    np.testing.assert_allclose(out[0, :40, 2, 0], 2 * cx - x[0, :40, 5, 0], atol=1e-5)
    np.testing.assert_allclose(out[1, :40, 2, 0], x[1, :40, 5, 0], atol=1e-6)


def test_window_dataset_normalises_as_the_classifier_does():
    from workers.action.classifier import body_normalise

    rng = np.random.default_rng(1)
    data = np.stack([_window(rng), _window(rng)])
    ds = A.WindowDataset(data, [0, 1], [40, 40], [(640, 480), (320, 240)], "body")
    x, label, length = ds[1]
    np.testing.assert_allclose(x, body_normalise(data[1:], [40], [(320, 240)])[0])
    assert (label, length) == (1, 40)
    np.testing.assert_allclose(ds.normalised().data[0], body_normalise(data[:1], [40], [(640, 480)])[0])


# -- metrics -------------------------------------------------------------------------------
class _Event:
    def __init__(self, frame_end, track_id=1, ts_end=None):
        self.frame_end, self.track_id = frame_end, track_id
        self.ts_end = frame_end / 30.0 if ts_end is None else ts_end


def _posed_frames(postures: str, fps: float = 30.0) -> list:
    """One tracked person per frame, ``postures`` a character per frame: l lying, u upright."""
    from shared.schemas import Skeletons
    from shared.skeleton import Person

    def person(kind: str) -> Person:
        kp = np.zeros((18, 3), np.float32)
        # shoulders (2, 5) above or beside the hips (8, 11); head (0) and ankles (10, 13)
        pts = ({0: (100, 20), 2: (90, 50), 5: (110, 50), 8: (92, 110), 11: (108, 110),
                10: (92, 190), 13: (108, 190)} if kind == "u" else
               {0: (20, 100), 2: (50, 90), 5: (50, 110), 8: (110, 92), 11: (110, 108),
                10: (190, 92), 13: (190, 108)})
        for j, (x, y) in pts.items():
            kp[j] = (x, y, 0.9)
        return Person(kp, np.array([0, 0, 200, 200], np.float32), 0.9, track_id=1)

    return [Skeletons(camera="c", seq=i, ts=i / fps, width=320, height=240, people=(person(k),),
                      model="movenet") for i, k in enumerate(postures)]


@pytest.mark.parametrize("postures,fallen,still_open", [
    ("u" * 30 + "l" * 400, 1, 0),   # down for 13 s after the alert: fallen
    ("u" * 30 + "l" * 100, 0, 1),   # the clip ends 3 s after it, the person still down
    ("u" * 30 + "l" * 30 + "u" * 70, 0, 0),  # up again within the clip
])
def test_fallen_simulation_counts_watches_a_short_clip_leaves_open(postures, fallen, still_open):
    neg = Clip("upfall-A11-S01-T1-C1", _posed_frames(postures), 30.0, None, "negative", dataset="upfall")
    down, left = MX.clip_fallen(neg, [_Event(30)])
    assert (len(down), left) == (fallen, still_open)
    s = MX.summarise({"n": MX.clip_outcome(neg, [_Event(30)], down, left)})
    hours = round(len(postures) / 30.0, 2) / 3600  # as clip_outcome counts seconds
    assert s["open_watches"] == still_open
    assert s["false_fallen_bound_per_hour"] == round((fallen + still_open) / hours, 3)


def test_metrics_count_recall_latency_and_false_alerts_per_hour():
    fall = Clip("urfd-fall-01", [None] * 300, 30.0, (100, 120), "fall", dataset="urfd")
    neg = Clip("upfall-A11-S01-T1-C1", [None] * 18 * 1800, 18.0, None, "negative", dataset="upfall")
    out = {"f": MX.clip_outcome(fall, [_Event(90), _Event(135)]),
           "n": MX.clip_outcome(neg, [_Event(10)])}
    assert out["f"] == {"dataset": "urfd", "kind": "fall", "seconds": 10.0, "detected": True,
                        "false": 1, "latency_s": 0.5}
    s = MX.summarise(out)
    assert (s["recall"], s["false_alerts"], s["false_per_hour"], s["false_before_fall"]) == (1.0, 1, 2.0, 1)
    assert s["by_dataset"]["upfall"]["false_per_hour"] == 2.0 and s["by_dataset"]["urfd"]["falls"] == 1


@pytest.mark.parametrize("argv,error", [
    ([], None),
    (["--rule", "0.5", "2"], None),
    (["--score-stride", "4"], "must divide --stride"),
])
def test_fall_eval_reads_scores_kept_every_5_steps_as_the_worker_stride_scores_them(
        upfall_cache, tmp_path, argv, error):
    """fall-eval with --scores kept at --score-stride 5 reports what scoring at the worker's
    stride reports (the shipped model on a real UP-Fall fall)."""
    import json

    from workers.offline.stgcn.falleval import eval_main

    base = ["--model", "workers/action/models/fall.onnx", "--detections", str(upfall_cache.parent),
            "--upfall-labels", str(shared_path("data", "upfall", "labels.csv")), "--no-progress"]
    if error:
        assert eval_main(base + argv) == 2
        return
    direct, kept = tmp_path / "direct.json", tmp_path / "kept.json"
    assert eval_main(base + argv + ["--report", str(direct)]) == 0
    pickle = str(tmp_path / "scores.pkl")
    assert eval_main(base + argv + ["--scores", pickle, "--score-stride", "5", "--report", str(kept)]) == 0
    assert eval_main(base + argv + ["--scores", pickle, "--score-stride", "5", "--report", str(kept)]) == 0
    a, b = (json.loads(p.read_text())["with confirmation"] for p in (direct, kept))
    assert a["falls"] == 1 and a == b
