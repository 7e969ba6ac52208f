"""Motion gating's core on real footage: a person moving is motion; JPEG compression, a
light going up and a masked region are not; a still camera still gets a keyframe."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import shared_path
from workers.pose.motion import MotionConfig, MotionGate, small_grey


def _frames(clip: str, n: int, step: int = 1) -> list[np.ndarray]:
    path = shared_path("data", "upfall", clip)
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/data holds the UP-Fall clips)")
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
        for _ in range(step - 1):
            cap.read()
    cap.release()
    return out


def _jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _moving_share(gate: MotionGate, jpegs: list[bytes]) -> float:
    moved = [gate.moved(small_grey(j)) for j in jpegs]
    return float(np.mean(moved[1:]))  # the first frame only starts the background


@pytest.mark.parametrize("kwargs, error", [
    ({}, None),
    ({"threshold": 0.01, "keyframe_s": 2.0, "masks": (((0, 0), (0.5, 0), (0.5, 1)),)}, None),
    ({"threshold": 1.0}, "threshold"),
    ({"threshold": -0.1}, "threshold"),
    ({"pixel_delta": 0}, "pixel_delta"),
    ({"keyframe_s": 0}, "keyframe_s"),
    ({"alpha": 0}, "alpha"),
    ({"masks": (((0, 0), (1, 1)),)}, "mask 0"),
    ({"masks": (((0, 0), (1.5, 0), (1, 1)),)}, "mask 0"),
])
def test_config_is_checked(kwargs, error):
    if error is None:
        MotionConfig(**kwargs)
    else:
        with pytest.raises(ValueError, match=error):
            MotionConfig(**kwargs)


def test_a_person_walking_is_motion():
    walk = [_jpeg(f) for f in _frames("A06-S01-T1-C1.mp4", 60)]
    assert _moving_share(MotionGate(), walk) > 0.9


def test_compression_noise_is_not_motion():
    """One real frame, its JPEG alternating between quality 95 and 55: blocks and ringing
    change every frame, nothing in the room does."""
    still = _frames("A07-S01-T1-C1.mp4", 1)[0]
    jpegs = [_jpeg(still, 95 if i % 2 else 55) for i in range(40)]
    assert _moving_share(MotionGate(), jpegs) == 0.0


def test_a_light_going_up_is_not_motion_but_a_person_is():
    """The room brightening by 2 grey levels a frame (a dimmer, the camera's exposure) for
    40 frames (80 levels in all) is not motion; a walking person in the same frames is."""
    still = _frames("A07-S01-T1-C1.mp4", 1)[0].astype(np.int16)
    brighter = [_jpeg(np.clip(still + 2 * i, 0, 255).astype(np.uint8)) for i in range(40)]
    assert _moving_share(MotionGate(), brighter) == 0.0
    walk = _frames("A06-S01-T1-C1.mp4", 40)
    both = [_jpeg(np.clip(f.astype(np.int16) + 2 * i, 0, 255).astype(np.uint8)) for i, f in enumerate(walk)]
    assert _moving_share(MotionGate(), both) > 0.9


def test_motion_inside_a_mask_is_ignored():
    walk = [_jpeg(f) for f in _frames("A06-S01-T1-C1.mp4", 40)]
    everywhere = MotionConfig(masks=(((0, 0), (1, 0), (1, 1), (0, 1)),))
    assert _moving_share(MotionGate(everywhere), walk) == 0.0
    left_strip = MotionConfig(masks=(((0, 0), (0.05, 0), (0.05, 1), (0, 1)),))
    assert _moving_share(MotionGate(left_strip), walk) > 0.8  # motion outside a mask still counts


def test_a_still_camera_runs_the_model_every_keyframe():
    """18 fps of a still room for 5 s: the model runs on the first frame, then once a second."""
    still = _frames("A07-S01-T1-C1.mp4", 1)[0]
    gate = MotionGate(MotionConfig(keyframe_s=1.0))
    jpegs = [_jpeg(still, 95 if i % 2 else 60) for i in range(90)]
    runs = [i / 18 for i, jpeg in enumerate(jpegs) if gate.observe(small_grey(jpeg), i / 18)]
    assert runs == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0], abs=1 / 18)


def test_an_undecodable_frame_is_never_gated():
    gate = MotionGate()
    still = _jpeg(_frames("A07-S01-T1-C1.mp4", 1)[0])
    assert gate.observe(small_grey(still), 0.0)
    assert not gate.observe(small_grey(still), 0.05)
    assert small_grey(b"\xff\xd8\xff\xe0garbage") is None
    assert gate.observe(small_grey(b"\xff\xd8\xff\xe0garbage"), 0.1)
