"""Google MoveNet MultiPose Lightning adapter: frames -> :class:`Person` lists.

The ONNX graph takes uint8 RGB ``(1, H, W, 3)`` with H and W multiples of 32 and returns
``(1, 6, 56)``: per candidate 17 COCO keypoints as (y, x, score) normalised to the input
tensor, a box (ymin, xmin, ymax, xmax) normalised the same way, and a person score.

**Batch is fixed at 1 in this graph** (a hard-coded Reshape; the original .tflite refuses
batch 2 as well), so :meth:`MoveNetModel.infer` makes one ``session.run`` per frame. The pose
worker still reads and decodes frames in batches; only the model call is per frame.

Preprocessing keeps the aspect ratio: the frame is scaled so its longer side is
``input_size`` (default 256), then zero-padded at the right/bottom up to multiples of 32
(a 320x240 frame becomes 256x192 with no padding). A fixed ``(width, height)`` letterboxes
every frame into that size instead. The padding is undone exactly on the way out.
"""

from __future__ import annotations

import logging
from typing import Iterable, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from shared.skeleton import Person, coco17_to_openpose18
from workers.pose.openpose import check_image
from workers.pose.netrun import Prepared, SessionRunner

log = logging.getLogger(__name__)

MULTIPLE = 32
MAX_PEOPLE = 6
ROW = 56  # 17 * 3 keypoint values + 4 box values + 1 score
DEFAULT_INPUT_SIZE = 256  # longer side; the packaging library's choice
# People are decoded down to the floor DEFAULT_PERSON_THRESHOLD; the tracker lets only those
# scoring TRACK_HIGH or more start a track, weaker ones only extend one (a person lying on the
# floor scores 0.05-0.2). Measured: tests/benchmarks/track_coverage.py (README: Benchmarks).
DEFAULT_PERSON_THRESHOLD = 0.05
TRACK_HIGH = 0.2
DEFAULT_KEYPOINT_THRESHOLD = 0.1


class Letterbox(NamedTuple):
    """How a frame was placed in the input tensor: ``scale`` (input px per source px),
    the scaled size ``(w, h)`` at the top-left, and the tensor size ``(W, H)``."""

    scale: float
    resized: tuple[int, int]
    tensor: tuple[int, int]


def _round_up(v: int) -> int:
    return max(MULTIPLE, -(-v // MULTIPLE) * MULTIPLE)


def plan_letterbox(width: int, height: int,
                   input_size: int | Sequence[int] = DEFAULT_INPUT_SIZE) -> Letterbox:
    """Placement of a ``width`` x ``height`` frame: an int ``input_size`` is the longer side
    (tensor = scaled frame rounded up to multiples of 32); ``(W, H)`` is a fixed tensor size."""
    if isinstance(input_size, (int, np.integer)):
        scale = int(input_size) / max(width, height)
        rw, rh = max(1, round(width * scale)), max(1, round(height * scale))
        return Letterbox(scale, (rw, rh), (_round_up(rw), _round_up(rh)))
    tw, th = (int(v) for v in input_size)
    scale = min(tw / width, th / height)
    rw, rh = min(tw, max(1, round(width * scale))), min(th, max(1, round(height * scale)))
    return Letterbox(scale, (rw, rh), (tw, th))


def check_input_size(input_size: int | Sequence[int]) -> int | tuple[int, int]:
    """Validate ``input_size``: a positive int, or (W, H) both positive multiples of 32."""
    if isinstance(input_size, (int, np.integer)):
        if input_size < MULTIPLE:
            raise ValueError(f"movenet input size must be at least {MULTIPLE}, got {input_size}")
        return int(input_size)
    tw, th = (int(v) for v in input_size)
    if tw <= 0 or th <= 0 or tw % MULTIPLE or th % MULTIPLE:
        raise ValueError(f"movenet input (width, height) must be positive multiples of 32, got {tw}x{th}")
    return tw, th


def decode_rows(rows: np.ndarray, box: Letterbox, width: int, height: int,
                person_threshold: float = DEFAULT_PERSON_THRESHOLD,
                keypoint_threshold: float = DEFAULT_KEYPOINT_THRESHOLD) -> list[Person]:
    """Model rows ``(6, 56)`` -> people in pixels of the ``width`` x ``height`` source frame.

    Rows scoring below ``person_threshold`` are dropped; keypoints scoring below
    ``keypoint_threshold`` become (0, 0, 0); COCO-17 becomes OpenPose-18 (neck inserted).
    """
    tw, th = box.tensor
    people = []
    for row in rows[rows[:, 55] >= person_threshold]:
        kp17 = row[:51].reshape(17, 3)
        xy = np.stack([kp17[:, 1] * tw, kp17[:, 0] * th], axis=1) / box.scale - 0.5
        xy[:, 0] = np.clip(xy[:, 0], 0, width - 1)
        xy[:, 1] = np.clip(xy[:, 1], 0, height - 1)
        kp = np.concatenate([xy, kp17[:, 2:3]], axis=1)
        kp[kp[:, 2] < keypoint_threshold] = 0.0
        ymin, xmin, ymax, xmax = row[51:55]
        xyxy = np.array([xmin * tw, ymin * th, xmax * tw, ymax * th]) / box.scale
        xyxy = np.clip(xyxy, 0, [width, height, width, height])
        people.append(Person(coco17_to_openpose18(kp), xyxy, float(row[55])))
    return people


class MoveNetModel:
    """MoveNet MultiPose on an onnxruntime session; see :meth:`infer` (one run per frame)."""

    name = "movenet"
    track_thresholds = (TRACK_HIGH, DEFAULT_PERSON_THRESHOLD)  # (high, low) for the tracker

    def __init__(self, session, input_size: int | Sequence[int] = DEFAULT_INPUT_SIZE,
                 person_threshold: float = DEFAULT_PERSON_THRESHOLD,
                 keypoint_threshold: float = DEFAULT_KEYPOINT_THRESHOLD,
                 io_binding: Optional[bool] = None) -> None:
        self.session = session
        self.runner = SessionRunner(session, io_binding)  # IO binding on CUDA (None: by provider)
        self.input_size = check_input_size(input_size)
        self.person_threshold = float(person_threshold)
        self.track_thresholds = (max(TRACK_HIGH, self.person_threshold), self.person_threshold)
        self.keypoint_threshold = float(keypoint_threshold)
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def preprocess(self, img: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """BGR uint8 ``(h, w, 3)`` -> RGB uint8 tensor ``(1, H, W, 3)`` and its placement."""
        check_image(img)
        box = plan_letterbox(img.shape[1], img.shape[0], self.input_size)
        tensor = np.zeros((1, box.tensor[1], box.tensor[0], 3), np.uint8)
        rw, rh = box.resized
        resized = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR)
        tensor[0, :rh, :rw] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        return tensor, box

    def run(self, img: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """One frame -> raw rows ``(6, 56)`` and the letterbox used."""
        tensor, box = self.preprocess(img)
        return self.runner(tensor)[0], box

    def prepare(self, img: np.ndarray) -> Prepared:
        """One BGR frame -> its network input (the worker calls this in its decoding threads)."""
        tensor, box = self.preprocess(img)
        return Prepared(tensor, box, img.shape[1], img.shape[0])

    def infer_prepared(self, items: Iterable[Prepared]) -> list[list[Person]]:
        """Prepared frames -> one list of :class:`Person` per frame. The graph's batch is fixed
        at 1, so this is one ``session.run`` per frame, taken from ``items`` as it yields them
        (the worker's iterator decodes and prepares the next ones meanwhile)."""
        results = []
        for item in items:
            rows = self.runner(item.tensor)[0]
            results.append(decode_rows(rows, item.placement, item.width, item.height,
                                       self.person_threshold, self.keypoint_threshold))
        log.debug("movenet: %d frames (one run each), %d people", len(results), sum(map(len, results)))
        return results

    def infer(self, images: Iterable[np.ndarray]) -> list[list[Person]]:
        """BGR uint8 frames ``[(h_i, w_i, 3)]`` -> one list of :class:`Person` per frame."""
        return self.infer_prepared(map(self.prepare, images))
