"""``actionstream replay``: bad input is one line and exit code 2 at submit, nothing queued."""

from __future__ import annotations

import pytest

from shared import keys
from tests.conftest import shared_path
from workers.console.cli import main
from workers.jobs.celery_app import QUEUE


@pytest.mark.parametrize("args,error", [
    ([], "give --camera CAM"),
    (["--source", "/nope/missing.mp4"], "does not exist"),
    (["--source", "EMPTY"], "holds no videos"),
    (["--source", "CLIP", "--start", "5"], "replay the archive"),
    # skeleton files: a video is none, a folder with none readable, a bad --size
    (["--source", "CLIP", "--skeletons"], "fall-16-cam0.mp4: not JSON (binary, not UTF-8 text)"),
    (["--source", "EMPTY", "--skeletons"], "holds no skeleton files (*.json)"),
    (["--source", "/nope/clip.json", "--skeletons"], "skeleton file /nope/clip.json does not exist"),
    (["--source", "KINETICS", "--skeletons", "--size", "big"], "--size 'big'"),
    (["--camera", "cam-1", "--size", "320x240"], "--size is the frame of --source skeleton files"),
    (["--camera", "cam-1", "--start", "5", "--end", "3"], "is not before"),
    (["--camera", "cam-1", "--start", "soon"], "neither seconds"),
    (["--camera", "nobody"], "nothing archived"),
    (["--camera", "cam-1", "--speed", "0"], "--speed"),
    (["--camera", "cam-1", "--threshold", "2"], "--threshold"),
    (["--camera", "cam~1"], "neither may hold"),
    # the times as typed (not epoch seconds), the directory looked in
    (["--camera", "cam-1", "--start", "2026-11-30T08:05", "--end", "2026-11-30T08:00"],
     "--start 2026-11-30T08:05 is not before --end 2026-11-30T08:00"),
    (["--camera", "nobody"], "camera nobody has nothing archived in ARCHIVE (archived cameras there: none)"),
])
def test_bad_input_is_one_line_and_nothing_is_queued(r, redis_url, tmp_path, monkeypatch, capsys, args,
                                                      error):
    monkeypatch.setenv("ACTIONSTREAM_DATA_DIR", str(tmp_path / "data"))  # an empty archive
    (tmp_path / "empty").mkdir()
    clip = str(shared_path("data", "urfd", "fall-16-cam0.mp4"))
    kinetics = str(shared_path("data", "kinetics", "skeleton_json", "--33Lscn6sk.json"))
    args = [{"EMPTY": str(tmp_path / "empty"), "CLIP": clip, "KINETICS": kinetics}.get(a, a) for a in args]
    error = error.replace("ARCHIVE", str(tmp_path / "data" / "archive"))
    assert main(["replay", "submit", "--redis", redis_url, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert error in err and len(err.splitlines()) == 1, err
    assert r.llen(QUEUE) == 0 and not r.exists(keys.JOBS_KEY)


def test_a_video_replay_is_queued_as_json_and_listed(r, redis_url, capsys):
    import json

    clip = str(shared_path("data", "urfd", "fall-16-cam0.mp4"))
    assert main(["replay", "submit", "--redis", redis_url, "--source", clip, "--speed", "2x"]) == 0
    job = capsys.readouterr().out.strip()
    (raw,) = r.lrange(QUEUE, 0, -1)
    message = json.loads(raw)
    assert message["content-type"] == "application/json" and message["headers"]["id"] == job
    assert main(["replay", "list", "--redis", redis_url]) == 0
    table = capsys.readouterr().out
    assert job in table and f"fall-16-cam0~{job}" in table and "QUEUED" in table
    assert main(["replay", "status", "--redis", redis_url, job]) == 0
    assert f"job {job}: QUEUED" in capsys.readouterr().out
    assert main(["replay", "cancel", "--redis", redis_url, job]) == 0
    assert "CANCELLED" in capsys.readouterr().out
    assert main(["replay", "status", "--redis", redis_url, "nope"]) == 2
    assert "no replay job 'nope'" in capsys.readouterr().err
