"""Simulated conditions (night, far, hidden) on a real frame: what each does to it, and bad input."""

import numpy as np
import pytest

from tests.conftest import shared_path
from workers.offline.posetrain import conditions


@pytest.fixture(scope="module")
def frame():
    from producer.sources import crop_and_resize, open_source

    path = shared_path("data", "urfd", "fall-01-cam0.mp4")
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/data/urfd)")
    source = open_source(str(path), None)
    try:
        image = next(img for i, img in enumerate(source.frames()) if i == 100)
    finally:
        source.close()
    return crop_and_resize(image, (320, 0, 320, 240), None)


def _grey(image):
    return image.astype(np.float64).mean(axis=2)


@pytest.mark.parametrize("name, check", [
    ("night", lambda a, b: _grey(b).mean() < 0.35 * _grey(a).mean()),  # dark
    ("night-ir", lambda a, b: np.array_equal(b[..., 0], b[..., 2])  # grey
     and _grey(b).std() < _grey(a).std()),  # and flat (noise aside)
    ("far", lambda a, b: (b[:60] == conditions.GREY).all() and (b[:, :80] == conditions.GREY).all()
     and abs(_grey(b[60:180, 80:240]).mean() - _grey(a).mean()) < 3),  # the frame, half size, centred
    ("hidden", lambda a, b: (b[160:] == conditions.GREY).all() and np.array_equal(b[:160], a[:160])),
])
def test_each_condition_does_what_it_says(frame, name, check):
    out = conditions.apply(name, frame, seq=7)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert check(frame, out)
    assert np.array_equal(out, conditions.apply(name, frame, seq=7))  # deterministic per frame


def test_the_noise_changes_from_frame_to_frame(frame):
    assert not np.array_equal(conditions.apply("night", frame, 1), conditions.apply("night", frame, 2))


@pytest.mark.parametrize("name, image, error", [
    ("fog", np.zeros((8, 8, 3), np.uint8), "unknown condition 'fog'"),
    ("night", np.zeros((8, 8), np.uint8), r"BGR uint8 image \(H, W, 3\), got uint8 \(8, 8\)"),
    ("far", np.zeros((8, 8, 3), np.float32), "got float32"),
])
def test_bad_input_is_refused(name, image, error):
    with pytest.raises(ValueError, match=error):
        conditions.apply(name, image, 0)
