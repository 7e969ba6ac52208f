"""Skeleton files as a replay source (:mod:`workers.jobs.skeleton_files`): a genuine
Kinetics-skeleton clip, actionstream's own export, folders played back to back, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared import codec
from tests.conftest import shared_path
from workers.jobs.replay import JobSpec, ReplayError
from workers.jobs.skeleton_files import (DEFAULT_SIZE, SkeletonFileError, check_skeletons, parse_size,
                                         read_clip, skeleton_items)


def _spec(path, **kw) -> JobSpec:
    return JobSpec(job="j1", camera="clip", source="skeletons", target="action", path=str(path), fps=30.0,
                   t0=1000.0, **kw)


def _frames(spec) -> list:
    bad: list = []
    return [codec.decode_skeletons(item.fields) for item in skeleton_items(spec, None, bad)], bad


def test_a_genuine_kinetics_clip_keeps_its_frame_numbers_and_tracks_people_by_their_place():
    path = shared_path("data", "kinetics", "skeleton_json", "--33Lscn6sk.json")
    doc = json.loads(path.read_text())
    msgs, bad = _frames(_spec(path))
    assert not bad and len(msgs) == len(doc["data"]) == check_skeletons(_spec(path))
    assert [m.seq for m in msgs] == [f["frame_index"] for f in doc["data"]]  # 1-based, as the file has it
    first = doc["data"][0]
    assert msgs[0].ts == 1000.0 and msgs[1].ts == pytest.approx(1000.0 + 1 / 30)
    assert (msgs[0].width, msgs[0].height) == DEFAULT_SIZE and msgs[0].camera == "clip~j1"
    assert [p.track_id for p in msgs[0].people] == list(range(len(first["skeleton"])))
    person, given = msgs[0].people[0], first["skeleton"][0]
    pose = np.asarray(given["pose"]).reshape(18, 2)
    seen = np.asarray(given["score"]) > 0
    np.testing.assert_allclose(person.keypoints[seen, 0], pose[seen, 0] * 340, atol=0.01)
    np.testing.assert_allclose(person.keypoints[seen, 1], pose[seen, 1] * 256, atol=0.01)
    assert (person.keypoints[~seen] == 0).all()
    wide, _ = _frames(_spec(path, size="640x480"))
    assert (wide[0].width, wide[0].height) == (640, 480)


def test_an_export_gives_its_own_size_fps_and_tracks_and_a_folder_plays_on(tmp_path):
    pose = [0.5, 0.5] * 18
    clip = {"camera": "cam-x", "width": 320, "height": 240, "fps": 15.0, "label": "unknown",
            "data": [{"frame_index": i, "skeleton": [{"pose": pose, "score": [0.9] * 18, "track_id": 7}]}
                     for i in range(3)]}
    (tmp_path / "a.json").write_text(json.dumps(clip))
    (tmp_path / "b.json").write_text(json.dumps(clip))
    (tmp_path / "notes.txt").write_text("not a clip")
    assert read_clip(tmp_path / "a.json").camera == "cam-x"
    msgs, bad = _frames(_spec(tmp_path))
    assert not bad
    assert [m.seq for m in msgs] == [0, 1, 2, 3, 4, 5]  # seq goes on from file to file
    assert [m.ts - 1000.0 for m in msgs] == pytest.approx([i / 15 for i in range(6)])
    assert [m.people[0].track_id for m in msgs] == [7, 7, 7, 15, 15, 15]  # no track spans two files
    assert (msgs[0].width, msgs[0].height) == (320, 240)
    np.testing.assert_allclose(msgs[0].people[0].keypoints[0], (160.0, 120.0, 0.9), atol=1e-4)
    resumed = [codec.decode_skeletons(i.fields).seq for i in skeleton_items(_spec(tmp_path), 3, [])]
    assert resumed == [4, 5]


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not JSON"),
    (json.dumps([1, 2]), "no \"data\" list"),
    (json.dumps({"data": []}), "holds no frames"),
    (json.dumps({"data": [{"frame_index": -1, "skeleton": []}]}), "frame_index is -1"),
    (json.dumps({"data": [{"frame_index": 0, "skeleton": [{"pose": [0.1] * 30, "score": [1] * 18}]}]}),
     "frame_index 0, person 0: expected \"pose\" of 36 numbers"),
])
def test_a_bad_file_is_one_reason_naming_it(tmp_path, text, reason):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SkeletonFileError, match="bad.json") as exc:
        read_clip(path)
    assert reason in str(exc.value)


def test_a_folder_replays_its_good_files_and_names_each_bad_one(tmp_path, caplog):
    (tmp_path / "a.json").write_text("{")
    good = {"data": [{"frame_index": 0, "skeleton": []}]}
    (tmp_path / "b.json").write_text(json.dumps(good))
    msgs, bad = _frames(_spec(tmp_path))
    assert [m.seq for m in msgs] == [0] and [f for f, _ in bad] == [str(tmp_path / "a.json")]
    assert sum("a.json" in r.getMessage() for r in caplog.records) == 1
    assert check_skeletons(_spec(tmp_path)) == 1
    (tmp_path / "b.json").unlink()
    with pytest.raises(ReplayError, match="holds no readable skeleton file: skeleton file .*a.json: not"):
        check_skeletons(_spec(tmp_path))
    with pytest.raises(ReplayError, match="^skeleton file .*a.json: not JSON"):  # one file: its reason
        check_skeletons(_spec(tmp_path / "a.json"))
    with pytest.raises(ReplayError, match="does not exist"):
        check_skeletons(_spec(tmp_path / "none.json"))
    assert parse_size("") == DEFAULT_SIZE and parse_size("320x240") == (320, 240)
    with pytest.raises(ReplayError, match="WIDTHxHEIGHT"):
        parse_size("wide")
