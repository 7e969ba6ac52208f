"""ActionClassifier on real exported ST-GCN models (see conftest.py for how they are made)."""

import math

import numpy as np
import pytest

from workers.action.card import CardError
from workers.action.classifier import ActionClassifier, softmax, voted_positions
from workers.inference.sessions import ModelError

CPU = ["CPUExecutionProvider"]
T = 300


def windows(lengths, t=T, seed=0) -> np.ndarray:
    """Random windows ``(N, 3, t, 18, 2)``, each zero after its length (as stacking pads
    them): per row a random pose (x, y ~ N(0, 0.3)) drifting over time, plus jitter, and
    confidences in 0..1 — rows differ as different people's windows do."""
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), 3, t, 18, 2), np.float32)
    for i, n in enumerate(lengths):
        pose = rng.standard_normal((2, 1, 18, 2)) * 0.3
        drift = rng.standard_normal((2, 1, 1, 2)) * np.linspace(0, 0.3, n)[None, :, None, None]
        x[i, :2, :n] = pose + drift + rng.standard_normal((2, n, 18, 2)) * 0.05
        x[i, 2, :n] = rng.random((n, 18, 2))
    return x


@pytest.fixture(scope="module")
def clf(sharp_models):
    return {kind: ActionClassifier(path, providers=CPU, threads=2)
            for kind, path in sharp_models.items()}


class RecordingSession:
    """An onnxruntime session that records the T of every call."""

    def __init__(self, session):
        self.session, self.ts = session, []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feeds):
        self.ts.append(next(iter(feeds.values())).shape[2])
        return self.session.run(names, feeds)


@pytest.mark.parametrize("kind", ["dynamic", "fixed"])
def test_a_full_window_gets_the_models_own_probabilities(clf, kind):
    c = clf[kind]
    x = windows([T, T])
    (logits,) = c.session.run(["logits"], {"data": x})
    probs = c.classify(x)
    assert probs.shape == (2, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, softmax(logits.astype(np.float64)), atol=2e-6)
    assert np.abs(probs[0] - probs[1]).max() > 1e-3  # the model is input-sensitive


@pytest.mark.parametrize("kind", ["dynamic", "fixed"])
def test_a_batch_of_three_equals_three_single_calls(clf, kind):
    c = clf[kind]
    lengths = [T, 64, 37]
    x = windows(lengths)
    together = c.classify(x, lengths)
    for i, n in enumerate(lengths):
        alone = c.classify(x[i:i + 1, :, :n], [n])
        np.testing.assert_allclose(together[i], alone[0], atol=1e-6)
    rows = [(i, j) for i in range(3) for j in range(i)]
    assert min(np.abs(together[i] - together[j]).max() for i, j in rows) > 1e-3


@pytest.mark.parametrize("kind", ["dynamic", "fixed"])
@pytest.mark.parametrize("n, pads", [(37, [37, 40, 64, 300]), (64, [64, 65, 300]), (T, [T])])
def test_padding_does_not_change_the_voted_result(clf, kind, n, pads):
    """However far the batch pads a window, it is classified the same."""
    c = clf[kind]
    x = windows([n], t=max(pads))
    results = [c.classify(x[:, :, :t], [n]) for t in pads]
    results += [c.classify(x, None)]  # valid length inferred from the trailing zeros
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-6)


@pytest.mark.parametrize("kind, n, vote_last", [
    ("dynamic", 37, 0), ("dynamic", T, 5), ("dynamic", 64, 3),
    ("fixed", 37, 0), ("fixed", 64, 4), ("fixed", 150, 0), ("fixed", T, 0),
])
def test_only_valid_positions_vote(sharp_models, card_variant, kind, n, vote_last):
    """classify == softmax of the model's scores averaged over V, M and the voted positions
    (computed here by hand); padding positions would have changed it."""
    c = ActionClassifier(card_variant(sharp_models[kind], vote_last=vote_last), providers=CPU,
                         threads=2)
    t = c.t_for(n)
    assert t == (T if kind == "fixed" else 4 * math.ceil(n / 4))
    x = windows([n], t=t)
    (scores,) = c.session.run(["scores"], {"data": x})  # (1, classes, t/4, 18, 2)
    valid = math.ceil(n / 4)
    first = valid - vote_last if vote_last else 0
    want = softmax(scores[:, :, first:valid].mean(axis=(2, 3, 4), dtype=np.float64))
    np.testing.assert_allclose(c.classify(x, [n]), want, atol=1e-6)
    every = softmax(scores.mean(axis=(2, 3, 4), dtype=np.float64))
    if first > 0 or scores.shape[2] > valid:  # there were positions to leave out
        assert np.abs(every - want).max() > 1e-3


@pytest.mark.parametrize("kind, bucket, lengths, want_ts", [
    ("dynamic", 4, [T, 64, T, 62, 37, 64], [T, 64, 40]),
    ("dynamic", 64, [T, 64, 62, 37, 100, 290], [T, 128, 64]),
    ("fixed", 4, [T, 64, 37], [T]),
])
def test_one_model_call_per_t_bucket(clf, monkeypatch, kind, bucket, lengths, want_ts):
    c = clf[kind]
    monkeypatch.setattr(c, "bucket", bucket)
    monkeypatch.setattr(c, "session", RecordingSession(c.session))
    probs = c.classify(windows(lengths), lengths)
    assert sorted(c.session.ts, reverse=True) == want_ts
    assert probs.shape == (len(lengths), 4)


def test_predict_gives_the_argmax_labels(clf):
    c = clf["dynamic"]
    probs, labels = c.predict(windows([T, 80, 33], seed=5), [T, 80, 33])
    assert labels == [c.card.labels[i] for i in probs.argmax(axis=1)]
    assert c.labels == c.card.labels


@pytest.mark.parametrize("kind, shape, lengths, error", [
    ("dynamic", (1, 3, 40, 25, 2), None, "shape"),
    ("dynamic", (1, 2, 40, 18, 2), None, "shape"),
    ("dynamic", (1, 3, 40, 18, 1), None, "shape"),
    ("dynamic", (0, 3, 40, 18, 2), None, "shape"),
    ("dynamic", (2, 3, 40, 18, 2), [40], "lengths"),
    ("dynamic", (1, 3, 40, 18, 2), [41], "lengths"),
    ("dynamic", (1, 3, 40, 18, 2), [0], "lengths"),
    ("fixed", (1, 3, 304, 18, 2), None, "exceed"),
])
def test_bad_batches_are_refused(clf, kind, shape, lengths, error):
    with pytest.raises(ValueError, match=error):
        clf[kind].classify(np.zeros(shape, np.float32), lengths)


def test_a_cli_exported_model_classifies(stgcn_export):
    c = ActionClassifier(stgcn_export(seed=1, num_class=4), providers=CPU, threads=2)
    probs, labels = c.predict(windows([T, 48]), [T, 48])
    assert probs.shape == (2, 4) and len(labels) == 2 and c.card.dynamic_t
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("layout, changes, error", [
    ("ntu-rgb+d", dict(layout="openpose"), r"V \(layout openpose\) is 25, expected 18"),
    ("ntu-rgb+d", dict(), r"card layout 'ntu-rgb\+d'"),  # right card, but windows are OpenPose-18
    ("openpose", dict(labels=("a", "b", "c")), "3 labels"),
    ("openpose", dict(num_person=1), r"M \(card num_person\) is 2, expected 1"),
    ("openpose", dict(input_name="x"), "one input named 'x'"),
    ("openpose", dict(outputs=("logits",)), "'scores'"),
    ("openpose", dict(normalisation="minmax"), "normalisation"),
])
def test_a_model_that_does_not_match_its_card_is_refused(stgcn_export, card_variant, layout,
                                                         changes, error):
    path = card_variant(stgcn_export(seed=1, layout=layout, num_class=4), **changes)
    with pytest.raises(ModelError, match=error):
        ActionClassifier(path, providers=CPU, threads=2)


@pytest.mark.parametrize("changes, error", [
    (dict(dynamic_t=True), "fixed at 300"),
    (dict(window=200), "T is 300, the card's window 200"),
])
def test_a_fixed_t_model_must_match_the_cards_window(sharp_models, card_variant, changes, error):
    with pytest.raises(ModelError, match=error):
        ActionClassifier(card_variant(sharp_models["fixed"], **changes), providers=CPU, threads=2)


def test_a_pose_model_with_a_fake_card_is_refused(card_variant):
    from tests.conftest import shared_path

    path = card_variant(shared_path("models", "movenet_multipose.onnx"))
    with pytest.raises(ModelError, match="input"):
        ActionClassifier(path, providers=CPU, threads=2)


def test_a_missing_card_is_a_card_error(stgcn_export, tmp_path):
    link = tmp_path / "no-card.onnx"
    link.symlink_to(stgcn_export())
    with pytest.raises(CardError, match="missing"):
        ActionClassifier(link, providers=CPU)


def test_an_unknown_layout_is_a_card_error(stgcn_export, card_variant):
    with pytest.raises(CardError, match="layout"):
        ActionClassifier(card_variant(stgcn_export(), layout="kinect"), providers=CPU)


def test_a_missing_model_file_is_a_model_error(stgcn_export, card_variant):
    path = card_variant(stgcn_export())
    path.unlink()  # the card stays
    with pytest.raises(ModelError, match="does not exist"):
        ActionClassifier(path, providers=CPU)


@pytest.mark.parametrize("bucket", [0, 6, -4])
def test_bucket_must_be_a_multiple_of_4(stgcn_export, bucket):
    with pytest.raises(ValueError, match="bucket"):
        ActionClassifier(stgcn_export(), providers=CPU, bucket=bucket)


@pytest.mark.parametrize("frames, positions, vote_last, want", [
    (37, 75, 0, (0, 10)),
    (36, 75, 0, (0, 9)),
    (300, 75, 0, (0, 75)),
    (300, 75, 5, (70, 75)),
    (37, 10, 4, (6, 10)),
    (1, 75, 0, (0, 1)),
    (3, 75, 10, (0, 1)),
    (400, 75, 0, (0, 75)),
])
def test_voted_positions(frames, positions, vote_last, want):
    s = voted_positions(frames, positions, vote_last)
    assert (s.start, s.stop) == want


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p[1], 1 / 3, atol=1e-7)
    assert np.isfinite(p).all()


# -- body normalisation (card field 'normalisation': "body") --------------------------------
def _frame_windows(pixels: np.ndarray, sizes) -> np.ndarray:
    """Windows in the worker's form from keypoints in pixels ``(N, 2, T, V, M)``."""
    x = np.zeros((pixels.shape[0], 3, *pixels.shape[2:]), np.float32)
    for i, (w, h) in enumerate(sizes):
        x[i, 0] = pixels[i, 0] / w - 0.5
        x[i, 1] = pixels[i, 1] / h - 0.5
        x[i, 2] = 0.8
    return x


def _people(seed=0, n=2, t=40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    body = rng.uniform(-40, 40, (n, 2, 1, 18, 2)) + np.array([300, 200])[None, :, None, None, None]
    return body + rng.uniform(-3, 3, (n, 2, t, 18, 2)) + np.linspace(0, 30, t)[None, None, :, None, None]


@pytest.mark.parametrize("shift, scale", [((0, 0), 1.0), ((120, -60), 1.0), ((-80, 40), 0.5),
                                          ((10, 10), 1.7)])
def test_body_normalisation_ignores_where_and_how_big_the_person_is(shift, scale):
    from workers.action.classifier import body_normalise

    px = _people()
    moved = (px - 300) * scale + 300 + np.array(shift)[None, :, None, None, None]
    a = body_normalise(_frame_windows(px, [(640, 480)] * 2), sizes=[(640, 480)] * 2)
    b = body_normalise(_frame_windows(moved, [(640, 480)] * 2), sizes=[(640, 480)] * 2)
    np.testing.assert_allclose(a, b, atol=2e-4)
    assert np.abs(a[:, :2]).max() < 6 and np.abs(a[:, :2]).max() > 0.3  # body units


def test_body_normalisation_brings_frames_of_any_aspect_to_square_pixels():
    from workers.action.classifier import body_normalise

    px = _people()
    a = body_normalise(_frame_windows(px, [(640, 480)] * 2), sizes=[(640, 480)] * 2)
    b = body_normalise(_frame_windows(px, [(1280, 480)] * 2), sizes=[(1280, 480)] * 2)
    np.testing.assert_allclose(a, b, atol=2e-4)  # the same pixels in a wider frame
    c = body_normalise(_frame_windows(px, [(1280, 480)] * 2))  # sizes unknown: square assumed
    assert np.abs(c - a).max() > 0.1


def test_body_normalisation_keeps_unseen_joints_padding_and_confidence():
    from workers.action.classifier import body_normalise

    x = _frame_windows(_people(t=48), [(640, 480)] * 2)
    x[:, :, 30:] = 0.0  # padding after 30 valid frames
    x[0, :, :, 4, 0] = 0.0  # a joint never seen
    x[1, :, :, :, 0] = 0.0  # no track at all in row 1
    out = body_normalise(x, lengths=[30, 30], sizes=[(640, 480)] * 2)
    assert not out[:, :, 30:].any() and not out[0, :, :, 4, 0].any()
    np.testing.assert_array_equal(out[:, 2], x[:, 2])
    assert not out[1, :2].any()
    with pytest.raises(ValueError, match="sizes"):
        body_normalise(x, sizes=[(640, 480)])


def test_a_body_card_normalises_and_a_stgcn_card_does_not(stgcn_export, card_variant):
    from workers.action.classifier import body_normalise

    path = stgcn_export(seed=1, num_class=4)
    plain = ActionClassifier(path, providers=CPU, threads=2)
    body = ActionClassifier(card_variant(path, normalisation="body"), providers=CPU, threads=2)
    x = _frame_windows(_people(t=64), [(320, 240)] * 2)
    sizes = [(320, 240)] * 2
    np.testing.assert_allclose(body.classify(x, sizes=sizes),
                               plain.classify(body_normalise(x, sizes=sizes), sizes=sizes), atol=1e-6)
    shifted = _frame_windows(_people(t=64) + 50, [(320, 240)] * 2)
    np.testing.assert_allclose(body.classify(x, sizes=sizes), body.classify(shifted, sizes=sizes), atol=1e-4)
    assert np.abs(plain.classify(x) - plain.classify(shifted)).max() > 1e-4


def test_windows_with_more_people_than_the_card_keep_the_track_and_its_nearest(tmp_path):
    """An M = 1 model fed the worker's M = 2 windows classifies slot 0 (the track) alone."""
    from workers.offline.stgcn.stgcncli import export_main

    path = tmp_path / "m1.onnx"
    assert export_main(["--seed", "1", "--num-class", "4", "--num-person", "1", "--out", str(path)]) == 0
    one = ActionClassifier(path, providers=CPU, threads=2)
    x = windows([64, 40], t=64)
    np.testing.assert_allclose(one.classify(x), one.classify(x[..., :1].copy()), atol=1e-6)
    assert np.abs(one.classify(x) - one.classify(x[..., ::-1].copy())).max() > 1e-4
