"""Frame sources: a video file, an RTSP/HTTP URL, a webcam index, a folder of images.

``open_source(spec)`` returns a :class:`Source`; iterating it yields BGR images. Files and
folders are finite; URLs and webcams are live and may be reopened after a loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from shared.errors import UserError
from shared.schemas import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


class SourceError(UserError, RuntimeError):
    """A source cannot be opened or read; the text names it."""


@dataclass
class Source:
    spec: str
    kind: str  # "file" | "url" | "webcam" | "folder"
    fps: float
    finite: bool
    frame_count: int = 0  # 0 when unknown
    _cap: Optional[cv2.VideoCapture] = None
    _images: Optional[list[Path]] = None

    def frames(self) -> Iterator[np.ndarray]:
        """BGR images until the source ends; raises SourceError when a live one is lost."""
        if self._images is not None:
            yield from self._folder_frames()
            return
        if self._cap is None:
            self.reopen()
        while True:
            ok, image = self._cap.read()
            if not ok or image is None:
                if self.finite:
                    return
                raise SourceError(f"source {self.spec} stopped delivering frames")
            yield image

    def _folder_frames(self) -> Iterator[np.ndarray]:
        for path in self._images:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("folder %s: %s is not a readable image; skipped", self.spec, path.name)
                continue
            yield image

    def reopen(self) -> None:
        self.close()
        self._cap = _open_capture(self.spec, self.kind)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _open_capture(spec: str, kind: str) -> cv2.VideoCapture:
    target: int | str = int(spec) if kind == "webcam" else spec
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open {kind} source {spec!r}")
    return cap


def classify(spec: str) -> str:
    if spec.isdigit():
        return "webcam"
    if spec.lower().startswith(URL_SCHEMES):
        return "url"
    if Path(spec).is_dir():
        return "folder"
    return "file"


def open_source(spec: str, fps: Optional[float] = None) -> Source:
    """Open ``spec``; raises SourceError with a clear reason when it cannot be read."""
    kind = classify(spec)
    if kind == "folder":
        images = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SourceError(f"folder {spec} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Source(spec, kind, fps or 30.0, True, len(images), _images=images)
    if kind == "file" and not Path(spec).is_file():
        raise SourceError(f"video file {spec} does not exist")
    cap = _open_capture(spec, kind)
    if kind == "file":
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError(f"video file {spec} has no decodable frames")
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    native = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "file" else 0
    rate = fps or (native if 1.0 <= native <= 240.0 else 30.0)
    return Source(spec, kind, rate, kind == "file", max(count, 0), _cap=cap)


def identity(source: Source) -> str:
    """What tells this source's content apart: a file's resolved path, size and modification
    time; a folder's path and each image's name, size and time; a URL or webcam its spec."""
    if source.kind == "file":
        path = Path(source.spec).resolve()
        st = path.stat()
        return f"file|{path}|{st.st_size}|{st.st_mtime_ns}"
    if source.kind == "folder":
        stats = [(p.name, p.stat()) for p in source._images or []]
        items = ";".join(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats)
        return f"folder|{Path(source.spec).resolve()}|{items}"
    return f"{source.kind}|{source.spec}"


def jpeg_frame(camera: str, seq: int, ts: float, image: np.ndarray, quality: int,
               run: str = "") -> Frame:
    """``image`` (already cropped and resized) as a :class:`Frame` of JPEG bytes at ``quality``;
    SourceError when OpenCV cannot encode it."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SourceError(f"camera {camera}: frame {seq} cannot be JPEG-encoded")
    return Frame(camera, seq, ts, image.shape[1], image.shape[0], buf.tobytes(), run)


def crop_and_resize(image: np.ndarray, crop: Optional[tuple[int, int, int, int]],
                    width: Optional[int]) -> np.ndarray:
    """Crop ``(x, y, w, h)`` (clipped to the image) then resize to ``width`` keeping aspect."""
    if crop is not None:
        x, y, w, h = crop
        ih, iw = image.shape[:2]
        if x >= iw or y >= ih:
            raise SourceError(f"crop {crop} lies outside the {iw}x{ih} frame")
        image = image[y:min(y + h, ih), x:min(x + w, iw)]
    if width and image.shape[1] != width:
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _check_crop(cam, image) -> None:
    x, y, w, h = cam.crop
    height, width = image.shape[:2]
    if x >= width or y >= height:
        raise SourceError(f"camera {cam.id}: --crop {x},{y},{w},{h} lies outside the source's "
                          f"{width}x{height} frame; give X < {width} and Y < {height}")
    if x + w > width or y + h > height:
        raise SourceError(f"camera {cam.id}: --crop {x},{y},{w},{h} runs past the edge of the source's "
                          f"{width}x{height} frame (X+W = {x + w}, Y+H = {y + h}); give X+W <= {width} "
                          f"and Y+H <= {height}")


def check_source(cam) -> int:
    """Open the camera's source (a :class:`shared.settings.Camera`; for a file, check that its
    crop lies inside the frame); its frame count (0: unknown). SourceError saying what is wrong."""
    source = open_source(cam.source, cam.fps)
    try:
        if cam.crop and source.finite:
            first = next(iter(source.frames()), None)
            if first is not None:
                _check_crop(cam, first)
        return source.frame_count
    finally:
        source.close()
