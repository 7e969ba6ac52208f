"""`actionstream archive export`: a stretch of archived skeletons, read back by the ST-GCN
trainer's own readers; `actionstream archive`: runs, stops cleanly on SIGTERM; bad input is
one clear line and exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from shared import keys
from shared.redisio import group_lag
from tests.workers.archive.archive_helpers import T0, Clock, publish_skeletons, settings, skeletons
from workers.offline.stgcn.datasets import read_kinetics_json
from shared.kinetics import read_exported_skeletons
from workers.archive.archiver import Archiver
from workers.archive.storage import LocalStorage
from workers.console.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def archived(r, redis_url, tmp_path):
    """50 frames of cam-1 (tracks 1 and 2) archived in tmp_path/archive."""
    publish_skeletons(r, "cam-1", range(50))
    storage = LocalStorage(tmp_path / "archive", writer=True)
    Archiver(r, storage, settings(redis_url, storage.root), block_ms=50, clock=Clock()).run(burst=True)
    storage.close()
    return storage.root


def _export(archive, out, *extra) -> int:
    return main(["archive", "export", "--dir", str(archive), "--camera", "cam-1", "--out", str(out), *extra])


def test_an_export_is_read_back_by_the_trainers_readers(archived, tmp_path, capsys):
    out = tmp_path / "cam-1.json"
    assert _export(archived, out, "--start", "2027-01-15T08:00:01+00:00", "--end", str(T0 + 3.0)) == 0
    assert "20 frames of camera cam-1" in capsys.readouterr().out
    camera, frames = read_exported_skeletons(out)  # what `stgcn fall-model --skeletons` reads
    assert camera == "cam-1" and [f.seq for f in frames] == list(range(10, 30))
    for got in frames:
        want = skeletons("cam-1", got.seq)
        assert [p.track_id for p in got.people] == [1, 2]
        for g, w in zip(got.people, want.people):
            scaled = w.keypoints[:, :2] / [want.width, want.height] * got.width  # the export's 0..1, rescaled
            seen = np.where(w.keypoints[:, 2:] > 0, scaled, 0)
            np.testing.assert_allclose(g.keypoints[:, :2], seen, atol=0.1)
    data, label = read_kinetics_json(out)  # the Kinetics feeder: frames 10..29 of its 300
    assert label == -1 and data.shape == (3, 300, 18, 2)
    filled = np.flatnonzero(np.abs(data).sum(axis=(0, 2, 3)))
    assert filled.tolist() == list(range(10, 30))


def test_an_export_of_one_track(archived, tmp_path):
    out = tmp_path / "track.json"
    assert _export(archived, out, "--track", "2") == 0
    _, frames = read_exported_skeletons(out)
    assert len(frames) == 50 and {p.track_id for f in frames for p in f.people} == {2}


@pytest.mark.parametrize("extra, error", [
    (["--start", "yesterday"], "--start 'yesterday' is neither seconds since the epoch nor an ISO time"),
    (["--camera", "cam-9"], "holds no skeletons of camera 'cam-9'"),
    (["--start", str(T0 + 100)], "holds no skeletons of camera 'cam-1' between"),
])
def test_bad_export_input_is_one_line_and_exit_2(archived, tmp_path, capsys, extra, error):
    out = tmp_path / "bad.json"
    args = ["archive", "export", "--dir", str(archived), "--camera", "cam-1", "--out", str(out)]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert error in err and err.count("\n") == 1 and not out.exists()


def test_the_archiver_stops_cleanly_on_sigterm(r, redis_url, tmp_path):
    publish_skeletons(r, "cam-1", range(5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    proc = subprocess.Popen([sys.executable, "-m", "workers", "archive", "--redis", redis_url,
                             "--dir", str(tmp_path / "archive")], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while group_lag(r, keys.skeletons_stream("cam-1"), keys.ARCHIVE_GROUP) != 0 \
            or not r.exists(keys.worker_key("archive-1")):
        assert proc.poll() is None and time.monotonic() < deadline, "the archiver did not archive"
        time.sleep(0.1)
    info = r.xinfo_groups(keys.skeletons_stream("cam-1"))
    assert [g["name"] for g in info if g["lag"] == 0 and g["pending"] == 0] == [keys.ARCHIVE_GROUP.encode()]
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "5 stored" in err and not r.exists(keys.worker_key("archive-1"))  # its heartbeat is gone


def test_a_second_archiver_on_one_directory_is_refused(r, redis_url, tmp_path, capsys):
    first = LocalStorage(tmp_path / "archive", writer=True)
    try:
        code = main(["archive", "--redis", redis_url, "--dir", str(tmp_path / "archive"), "--burst"])
    finally:
        first.close()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"another archiver writes to {tmp_path / 'archive'}" in err
