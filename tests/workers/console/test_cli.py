"""Bad input to `actionstream`: one clear line on stderr, exit code 2, nothing left running.

Each case runs the real command in a subprocess with a marker in its environment; every
process it starts (workers, the embedded Redis and its guard) inherits the marker, so after
the command ends no process may still carry it. Its temporary files go to a folder of
the test, which must hold no Redis data dir afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.redis_server import free_port
from tests.conftest import ROOT, shared_path
from tests.procs import MARKER_VAR, new_marker, wait_gone

LINUX = sys.platform.startswith("linux")

# a sitecustomize that makes importing MODULES fail as it does when they are not installed
BLOCK = '''
import sys
MODULES = %r
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MODULES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Absent())
'''


def run_cli(args: list[str], tmp_path: Path, env: dict[str, str] | None = None,
            absent: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, str]:
    marker = new_marker()
    full = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    full.update(env or {})
    full[MARKER_VAR] = marker
    full["TMPDIR"] = str(tmp_path)
    path = [str(ROOT), *filter(None, [(env or {}).get("PYTHONPATH")])]
    if absent:
        (tmp_path / "sitecustomize.py").write_text(BLOCK % (absent,))
        path.insert(0, str(tmp_path))
    full["PYTHONPATH"] = os.pathsep.join(path)
    proc = subprocess.run([sys.executable, "-m", "workers", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)
    return proc, marker


def _video() -> str:
    return str(shared_path("data", "urfd", "fall-01-cam0.mp4"))


def _models() -> dict[str, str]:
    return {"ACTIONSTREAM_SHARED_DIR": str(shared_path())}


def _up_on_video(*args: str) -> list[str]:
    return ["up", "--no-progress", "--source", _video(), *args]


# (id, argv (a callable: it may need ../shared), environment, words the line must hold
#  [, modules made absent])
CASES = [
    ("crop-outside-frame", lambda: ["up", "--no-progress", "--source", _video(), "--crop", "900,0,100,100"],
     _models, ["--crop 900,0,100,100", "outside", "640x240"]),
    ("produce-crop-outside-frame", lambda: ["produce", "--source", _video(), "--camera", "c1", "--crop",
                                            "0,300,100,100", "--redis", "redis://127.0.0.1:1/0"], dict,
     ["--crop 0,300,100,100", "outside", "640x240"]),
    ("same-camera-twice", lambda: ["up", "--source", "a.mp4", "--source", "b.mp4", "--camera", "c1",
                                   "--camera", "c1"], dict, ["--camera c1", "more than one --source"]),
    ("redis-unreachable", lambda: ["up", "--no-progress", "--source", _video(), "--redis",
                                   f"redis://127.0.0.1:{free_port()}/0"], _models,
     ["cannot reach Redis", "--redis"]),
    ("redis-malformed", lambda: ["up", "--source", "a.mp4", "--redis", "localhost:6379"], dict,
     ["not a Redis URL", "redis://"]),
    ("redis-malformed-status", lambda: ["status", "--redis", "redis://host:port/0"], dict,
     ["not a Redis URL"]),
    ("status-unreachable", lambda: ["status", "--redis", f"redis://127.0.0.1:{free_port()}/0"], dict,
     ["cannot reach Redis"]),
    ("stride-not-a-number", lambda: ["up", "--source", "a.mp4"], lambda: {"ACTIONSTREAM_STRIDE": "abc"},
     ["ACTIONSTREAM_STRIDE", "'abc'", "integer"]),
    ("threshold-out-of-range", lambda: ["events"], lambda: {"ACTIONSTREAM_ALERT_THRESHOLD": "2"},
     ["ACTIONSTREAM_ALERT_THRESHOLD", "less than or equal to 1"]),
    ("pose-model-unknown", lambda: ["pose-worker", "--burst"], lambda: {"ACTIONSTREAM_POSE_MODEL": "yolo"},
     ["ACTIONSTREAM_POSE_MODEL", "movenet"]),
    ("pose-input-size-not-movenet", lambda: ["pose-worker", "--burst"],
     lambda: {"ACTIONSTREAM_POSE_MODEL": "mobilenet_thin", "ACTIONSTREAM_POSE_INPUT_SIZE": "192"},
     ["ACTIONSTREAM_POSE_INPUT_SIZE=192", "movenet only", "mobilenet_thin"]),
    ("providers-not-json", lambda: ["status"], lambda: {"ACTIONSTREAM_PROVIDERS": "CPUExecutionProvider"},
     ["ACTIONSTREAM_PROVIDERS", "JSON list"]),
    ("alerts-with-bad-settings", lambda: ["alerts", "--webhook", "http://x/"],
     lambda: {"ACTIONSTREAM_STRIDE": "abc"}, ["ACTIONSTREAM_STRIDE"]),
    ("log-level-unknown", lambda: ["status"], lambda: {"ACTIONSTREAM_LOG_LEVEL": "chatty"},
     ["log level", "CHATTY"]),
    ("tool-without-command", lambda: ["stgcn"], dict, ["no command", "export, train, fall-model"]),
    # up's outputs and options, checked before anything starts (issue 19)
    ("crop-past-the-edge", lambda: _up_on_video("--crop", "600,0,320,240"), _models,
     ["--crop 600,0,320,240", "runs past the edge", "640x240", "X+W <= 640"]),
    ("events-out-unwritable", lambda: _up_on_video("--events-out", "/proc/x/ev.jsonl"), _models,
     ["--events-out /proc/x/ev.jsonl", "cannot be written", "No such file or directory"]),
    ("skeletons-out-unwritable", lambda: _up_on_video("--skeletons-out", "/proc/x/sk"), _models,
     ["--skeletons-out /proc/x/sk", "cannot be written"]),
    ("annotate-out-unwritable", lambda: _up_on_video("--annotate-out", "/proc/x/a.mp4"), _models,
     ["--annotate-out /proc/x/a.mp4", "cannot be written"]),
    ("events-out-a-folder", lambda: _up_on_video("--events-out", "/"), _models,
     ["--events-out / is a folder"]),
    ("web-port-out-of-range", lambda: _up_on_video("--web-port", "70000"), _models,
     ["--web-port 70000 is not a port"]),
    ("web-host-not-here", lambda: _up_on_video("--web-host", "999.1.1.1"), _models,
     ["999.1.1.1", "--web-port", "--web-host"]),


    ("up-without-onnxruntime", lambda: ["up", "--source", _video()], _models,
     ["no onnxruntime is installed", "actionstream[cpu]", "actionstream[gpu]"], ("onnxruntime",)),
    ("worker-without-onnxruntime", lambda: ["action-worker", "--burst"], dict,
     ["no onnxruntime is installed", "actionstream[cpu]"], ("onnxruntime",)),
]


@pytest.mark.skipif(not LINUX, reason="finds leftover processes through /proc")
@pytest.mark.parametrize("argv, env, words, absent",
                         [pytest.param(*case[1:4], case[4] if len(case) > 4 else (), id=case[0])
                          for case in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_left(tmp_path, argv, env, words, absent):
    proc, marker = run_cli(argv(), tmp_path, env(), absent)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("actionstream"), lines
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert wait_gone(marker) == []
    assert not list(tmp_path.glob("actionstream-*")), list(tmp_path.iterdir())


def test_a_train_command_without_torch_names_the_extra(tmp_path):
    proc, _ = run_cli(["pose", "finetune", "--train", "x.json", "--out", str(tmp_path / "ft")], tmp_path,
                      absent=("torch",))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "actionstream pose: error: torch is not installed; this command needs the train extra: "
        "pip install 'actionstream[train]'"]


@pytest.mark.parametrize("argv", [
    ["stgcn", "--help"], ["stgcn", "export", "--help"], ["stgcn", "train", "--help"],
    ["stgcn", "fall-model", "--help"],
    ["pose", "--help"], ["pose", "finetune", "--help"], ["pose", "eval", "--help"],
    ["models", "--help"], ["models", "fetch", "--help"],
])
def test_help_works_without_torch(tmp_path, argv):
    proc, _ = run_cli(argv, tmp_path, absent=("torch",))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: actionstream"), proc.stdout[:300]


@pytest.mark.parametrize("tool, commands", [
    ("models", ["fetch"]), ("pose", ["eval", "itop2coco", "finetune"]),
    ("stgcn", ["export", "train", "fall-model"]),
])
def test_tool_help_lists_its_commands(tmp_path, tool, commands):
    proc, _ = run_cli([tool, "--help"], tmp_path)
    assert proc.returncode == 0
    listed = proc.stdout.split("commands:", 1)[1]
    for command in commands:
        assert f"\n  {command} " in listed, proc.stdout


def test_both_onnxruntime_builds_installed_is_refused(tmp_path):
    """The two builds share the `onnxruntime` module: with both, one silently shadows the
    other. The install metadata of a second build is put on the path."""
    dist = tmp_path / "site" / "onnxruntime_gpu-1.32.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.32.0\n")
    proc, marker = run_cli(["up", "--source", _video()], tmp_path,
                           {**_models(), "PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.splitlines()
    assert "both onnxruntime and onnxruntime-gpu are installed" in line and "pip uninstall" in line
    assert wait_gone(marker) == []


@pytest.mark.parametrize("text, first, more", [
    ("cameras: [{id: a, fps: -1}]", "is invalid (2 problems):",
     ["- cameras.0.source: Field required", "- cameras.0.fps: Input should be greater than 0"]),
    ("", "is empty; it should contain a `cameras:` list", ["cameras:", "- {id: cam-1, source:"]),
])
def test_a_bad_camera_file_says_each_problem_on_a_line_of_its_own(tmp_path, text, first, more):
    (cams := tmp_path / "cams.yaml").write_text(text)
    proc, marker = run_cli(["up", "--no-progress", "--config", str(cams)], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    head, *rest = proc.stderr.splitlines()
    assert head.startswith(f"actionstream up: error: camera file {cams} ") and first in head, head
    for want in more:  # each on a line of its own, indented under the first
        assert [ln for ln in rest if ln.startswith("    ") and want in ln], proc.stderr
    assert "Traceback" not in proc.stderr and "(root)" not in proc.stderr
    assert wait_gone(marker) == []


@pytest.mark.skipif(not LINUX, reason="finds leftover processes through /proc")
def test_up_with_an_action_model_that_cannot_be_loaded(tmp_path):
    """A model file that is no ONNX, with a valid card beside it: up loads it before anything
    starts, so the run does not start (it hung once the action worker had exited)."""
    from workers.inference.sessions import default_action_model

    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model\n")
    (tmp_path / "junk.json").write_text(default_action_model().with_suffix(".json").read_text())
    proc, marker = run_cli(_up_on_video("--no-web", "--action-model", str(junk)), tmp_path, _models())
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = proc.stderr.splitlines()
    assert line.startswith("actionstream up: error: model file ") and "junk.onnx cannot be loaded" in line
    assert "INVALID_PROTOBUF" in line
    assert wait_gone(marker) == []
    assert not list(tmp_path.glob("actionstream-redis-*")), list(tmp_path.iterdir())


def test_up_knows_which_commands_serve_metrics():
    """``up`` gives a metrics port to exactly the commands whose parser takes --metrics-port."""
    import argparse

    from workers.console.cli import build_parser
    from workers.console.up import METRICS_COMMANDS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serving = {c for c, p in sub.choices.items() if "--metrics-port" in p._option_string_actions}
    assert METRICS_COMMANDS == serving
