"""Raw MoveNet output cached per clip: the pose stage's detections before any threshold or
tracking, so that trackers, thresholds and training sets can be tried offline on exactly
what the pose worker sees (the same crop, resize and JPEG round trip as the producer).

``actionstream pose detections --config deploy/fall-training.yaml --out out/detections``
writes one ``<camera>.npz`` per camera: ``rows`` float32 ``(frames, 6, 56)`` (the model's
output), ``ts`` float64 ``(frames,)``, ``width``, ``height``, ``fps`` and the letterbox
(``scale``, ``resized``, ``tensor``). :func:`load_people` turns it back into the per-frame
:class:`~shared.skeleton.Person` lists the worker's decoder makes at a given threshold.
Existing files are kept (delete one to redo it).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from producer.sources import crop_and_resize, open_source
from workers.offline.posetrain import conditions
from shared.settings import Camera, load_camera_file, load_settings
from shared.skeleton import Person
from workers.pose.movenet import (DEFAULT_KEYPOINT_THRESHOLD, DEFAULT_PERSON_THRESHOLD, Letterbox,
                                  MoveNetModel, decode_rows)

log = logging.getLogger(__name__)


def producer_jpegs(camera: Camera, jpeg_quality: int = 90, max_frames: Optional[int] = None,
                   condition: Optional[str] = None):
    """``(seq, the source's fps, JPEG buffer)`` of every frame of ``camera``'s (finite) source,
    through the producer's crop, resize and JPEG encoding (what the pose worker receives);
    ``condition``: a simulated one (:mod:`workers.offline.posetrain.conditions`) before the JPEG."""
    source = open_source(camera.source, camera.fps)
    try:
        for seq, image in enumerate(source.frames()):
            if max_frames is not None and seq >= max_frames:
                break
            image = crop_and_resize(image, camera.crop, camera.width)
            if condition:
                image = conditions.apply(condition, image, seq)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            yield seq, source.fps, buf
    finally:
        source.close()


def detect_camera(camera: Camera, model: MoveNetModel, jpeg_quality: int = 90,
                  max_frames: Optional[int] = None, condition: Optional[str] = None) -> dict:
    """Every frame of ``camera``'s (finite) source through the producer's crop, resize and JPEG
    round trip (under ``condition``, a simulated one), then MoveNet: the raw rows and their
    placement."""
    rows, ts, box, size, fps = [], [], None, None, None
    for seq, fps, buf in producer_jpegs(camera, jpeg_quality, max_frames, condition):
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        out, box = model.run(image)
        rows.append(out.astype(np.float32))
        ts.append(seq / fps)
        size = (image.shape[1], image.shape[0])
    if box is None:
        raise ValueError(f"camera {camera.id}: source {camera.source} gave no frames")
    return {"rows": np.stack(rows), "ts": np.asarray(ts, np.float64), "width": size[0],
            "height": size[1], "fps": fps, "scale": box.scale,
            "resized": np.asarray(box.resized), "tensor": np.asarray(box.tensor)}


def motion_runs(camera: Camera, config, jpeg_quality: int = 90) -> list[bool]:
    """Per frame of ``camera``'s (finite) source, as :func:`detect_camera` sees it, whether the
    pose worker with motion gating (``config``: a :class:`~workers.pose.motion.MotionConfig`)
    would run the model on it."""
    from workers.pose.motion import MotionGate, small_grey

    gate = MotionGate(config)
    return [gate.observe(small_grey(buf.tobytes()), seq / fps)
            for seq, fps, buf in producer_jpegs(camera, jpeg_quality)]


def load_people(path: str | Path, person_threshold: float = DEFAULT_PERSON_THRESHOLD,
                keypoint_threshold: float = DEFAULT_KEYPOINT_THRESHOLD):
    """A cached clip -> (``people`` per frame, ``ts``, width, height, fps), decoded as the
    worker decodes at these thresholds."""
    z = np.load(path)
    box = Letterbox(float(z["scale"]), tuple(int(v) for v in z["resized"]),
                    tuple(int(v) for v in z["tensor"]))
    w, h = int(z["width"]), int(z["height"])
    people: list[list[Person]] = [decode_rows(rows, box, w, h, person_threshold, keypoint_threshold)
                                  for rows in z["rows"]]
    return people, z["ts"], w, h, float(z["fps"])


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="actionstream pose detections",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="camera YAML file (finite sources)")
    p.add_argument("--out", required=True, help="folder for <camera>.npz")
    p.add_argument("--only", nargs="*", help="camera ids (default: all)")
    p.add_argument("--condition", choices=sorted(conditions.CONDITIONS),
                   help="simulate a condition on every frame (workers/offline/posetrain/conditions.py)")
    p.add_argument("--pose-model", default="movenet", choices=("movenet", "movenet_int8"),
                   help="the MoveNet to run (movenet_int8: actionstream models quantize)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from workers.pose.adapters import load_pose_model
    from shared.modelpaths import resolve_pose_model

    settings = load_settings()
    path = resolve_pose_model(args.pose_model, settings)
    model = load_pose_model(args.pose_model, path, settings.providers, settings.threads,
                            input_size=settings.pose_input_size)  # ACTIONSTREAM_POSE_INPUT_SIZE
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for camera in load_camera_file(args.config):
        if args.only and camera.id not in args.only:
            continue
        target = out / f"{camera.id}.npz"
        if target.exists():
            continue
        t0 = time.perf_counter()
        data = detect_camera(camera, model, settings.jpeg_quality, condition=args.condition)
        np.savez_compressed(target.with_suffix(".tmp.npz"), **data)
        target.with_suffix(".tmp.npz").rename(target)
        log.info("camera %s: %d frames in %.1f s", camera.id, len(data["rows"]), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
