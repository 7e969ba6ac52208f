"""Fixtures of the pose stage's tests."""

from __future__ import annotations

import pytest

from shared.modelpaths import resolve_pose_model
from shared.settings import load_settings
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def movenet():
    """The real MoveNet (../shared/models), one onnxruntime thread."""
    from workers.pose.adapters import load_pose_model

    settings = load_settings(shared_dir=shared_path())
    return load_pose_model("movenet", resolve_pose_model("movenet", settings), threads=1)
