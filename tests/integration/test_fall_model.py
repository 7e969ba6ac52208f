"""The shipped fall model, as a user runs it: `actionstream up` with every default on a URFD
fall that was held out of its training raises a `falling` event during or after the fall."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from workers.inference.sessions import default_action_model
from workers.action.card import load_card
from workers.offline.stgcn.fall import read_urfd_labels
from tests.conftest import ROOT, shared_path

pytestmark = pytest.mark.integration


def held_out_urfd() -> list[str]:
    """The URFD clips the shipped card says were kept out of training (``urfd-fall-NN``)."""
    card = load_card(default_action_model())
    return sorted(c for c in card.metrics.get("held_out", {}) if c.startswith("urfd-"))


def test_the_shipped_card_names_its_held_out_clips():
    card = load_card(default_action_model())
    held = held_out_urfd()
    assert held, "the shipped fall model must keep at least one URFD fall out of training"
    for clip in held:
        assert clip in card.training_data  # "held out of training: ..."


@pytest.mark.parametrize("clip", held_out_urfd())
def test_up_raises_falling_on_a_held_out_clip(tmp_path, clip):
    name = clip[len("urfd-"):]
    video = shared_path("data", "urfd", f"{name}-cam0.mp4")
    fall_start, _ = read_urfd_labels(shared_path("data", "urfd", "labels.csv"))[name]
    events_out = tmp_path / "ev.jsonl"
    # every default, whatever the caller's shell holds
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env["ACTIONSTREAM_SHARED_DIR"] = str(shared_path())
    proc = subprocess.run(
        [sys.executable, "-m", "workers", "up", "--no-progress", "--source", str(video),
         "--camera", clip, "--crop", "320,0,320,240", "--events-out", str(events_out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in events_out.read_text().splitlines()]
    falls = [e for e in events if e["label"] == "falling" and e["camera"] == clip]
    assert falls, f"no falling event on held-out {clip}: {events}"
    assert any(e["frame_end"] >= fall_start for e in falls), (fall_start, falls)


def test_a_camera_file_rule_is_the_camera_own(tmp_path):
    """``rules:`` in the camera file reaches the action worker through the camera's
    registration: the same held-out fall with its camera's threshold at 1.0 raises nothing,
    beside a camera at the defaults that raises its `falling`."""
    import yaml

    video = shared_path("data", "urfd", "fall-05-cam0.mp4")
    cams = [{"id": "strict", "source": str(video), "crop": [320, 0, 320, 240],
             "rules": {"threshold": 1.0}},
            {"id": "default", "source": str(video), "crop": [320, 0, 320, 240]}]
    config = tmp_path / "cams.yaml"
    config.write_text(yaml.safe_dump({"cameras": cams}))
    events_out = tmp_path / "ev.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env["ACTIONSTREAM_SHARED_DIR"] = str(shared_path())
    env["ACTIONSTREAM_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run([sys.executable, "-m", "workers", "up", "--no-progress", "--config",
                           str(config), "--events-out", str(events_out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in events_out.read_text().splitlines()]
    assert [e["camera"] for e in events if e["label"] == "falling"] == ["default"], events
    assert "camera strict: its own rules {'threshold': 1.0}" in proc.stderr
