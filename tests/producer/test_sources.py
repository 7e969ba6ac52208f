import cv2
import numpy as np
import pytest

from producer.sources import SourceError, classify, crop_and_resize, open_source
from tests.conftest import shared_path


@pytest.mark.parametrize("spec, kind", [
    ("0", "webcam"), ("rtsp://cam/stream", "url"), ("http://x/mjpg", "url"), ("a.mp4", "file"),
])
def test_classify(spec, kind):
    assert classify(spec) == kind


def test_video_file_frames_and_fps():
    src = open_source(str(shared_path("data", "urfd", "fall-01-cam0.mp4")))
    assert src.kind == "file" and src.finite and abs(src.fps - 30) < 1
    frames = [f for _, f in zip(range(5), src.frames())]
    assert frames[0].shape == (240, 640, 3)
    assert src.frame_count > 50
    src.close()


@pytest.mark.parametrize("make, error", [
    (lambda p: p / "missing.mp4", "does not exist"),
    (lambda p: (p / "junk.mp4").write_bytes(b"not a video") and p / "junk.mp4", "cannot open|no decodable"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no images"),
])
def test_bad_sources_are_clear_errors(tmp_path, make, error):
    with pytest.raises(SourceError, match=error):
        open_source(str(make(tmp_path)))


def test_folder_source_skips_unreadable_images(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:03d}.jpg"), np.full((20, 30, 3), i * 50, np.uint8))
    (tmp_path / "004.jpg").write_bytes(b"\xff\xd8broken")
    src = open_source(str(tmp_path), fps=5)
    frames = list(src.frames())
    assert len(frames) == 3 and src.fps == 5
    assert [int(f[0, 0, 0]) for f in frames] == [0, 50, 100]


def test_crop_and_resize():
    img = np.zeros((240, 640, 3), np.uint8)
    img[:, 320:] = 255
    out = crop_and_resize(img, (320, 0, 320, 240), None)
    assert out.shape == (240, 320, 3) and out.min() == 255
    assert crop_and_resize(img, (320, 0, 320, 240), 160).shape == (120, 160, 3)
    with pytest.raises(SourceError, match="outside"):
        crop_and_resize(img, (700, 0, 10, 10), None)
