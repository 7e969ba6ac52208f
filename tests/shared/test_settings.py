import pytest

from shared import keys
from shared.settings import SettingsError, load_camera_file, load_settings, make_camera, parse_crop


def test_env_prefix(monkeypatch):
    monkeypatch.setenv("ACTIONSTREAM_STRIDE", "7")
    monkeypatch.setenv("ACTIONSTREAM_MODE", "replay")
    s = load_settings()
    assert (s.stride, s.mode) == (7, "replay")


def test_bad_env_names_the_field(monkeypatch):
    monkeypatch.setenv("ACTIONSTREAM_STRIDE", "0")
    with pytest.raises(SettingsError, match="ACTIONSTREAM_STRIDE=.0.: Input should be greater"):
        load_settings()


@pytest.mark.parametrize("text, error", [
    ("cameras: []", "cameras"),
    ("cameras: [{id: a}]", "cameras.0.source"),
    ("cameras: [{id: 'bad id', source: x}]", "cameras.0.id"),
    ("cameras: [{id: a, source: x, crop: [0, 0, 0, 5]}]", "cameras.0.crop"),
    ("cameras: [{id: a, source: x, colour: red}]", "cameras.0.colour"),
    ("cameras: [{id: a, source: x}, {id: a, source: y}]", "repeated"),
    ("cameras: [{id: a, source: x, fps: -1}]", "cameras.0.fps"),
    ("{{{", "not valid YAML"),
])
def test_camera_file_errors_name_the_field(tmp_path, text, error):
    path = tmp_path / "cams.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=error):
        load_camera_file(path)


@pytest.mark.parametrize("text, said", [
    ("", "is empty"),                   # an empty file: not pydantic's "(root): Input should be ..."
    ("# only a comment\n", "is empty"),
    ("- {id: a, source: x}", "a list"),  # the cameras without the `cameras:` key
    ("just text", "a string"),
])
def test_a_camera_file_without_a_mapping_says_what_it_should_hold(tmp_path, text, said):
    path = tmp_path / "cams.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_camera_file(path)
    msg = str(err.value)
    assert said in msg and str(path) in msg
    assert "cameras:" in msg and "id:" in msg and "source:" in msg  # what it should contain
    assert "(root)" not in msg and "CameraFile" not in msg


@pytest.mark.parametrize("env, lines", [
    ({"ACTIONSTREAM_STRIDE": "0", "ACTIONSTREAM_THREADS": "-1"},
     ["ACTIONSTREAM_STRIDE='0': Input should be greater",
      "ACTIONSTREAM_THREADS='-1': Input should be greater"]),
    ({"ACTIONSTREAM_MODE": "fast", "ACTIONSTREAM_JPEG_QUALITY": "5"},
     ["ACTIONSTREAM_MODE='fast'", "ACTIONSTREAM_JPEG_QUALITY='5'"]),
    ({"ACTIONSTREAM_POSE_INPUT_SIZE": "16"}, ["ACTIONSTREAM_POSE_INPUT_SIZE='16': Input should be greater"]),
])
def test_each_bad_setting_is_on_its_own_line(monkeypatch, env, lines):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    msg = str(err.value).splitlines()
    for want in lines:  # each bad variable on a line of its own, none run into another
        (line,) = [ln for ln in msg if want in ln]
        assert line.count("ACTIONSTREAM_") == 1, msg


def test_camera_file_ok(tmp_path):
    path = tmp_path / "cams.yaml"
    path.write_text("cameras:\n  - {id: cam-7, source: a.mp4, crop: [320, 0, 320, 240], mode: replay}\n")
    (cam,) = load_camera_file(path)
    assert (cam.id, cam.crop, cam.mode) == ("cam-7", (320, 0, 320, 240), "replay")


def test_missing_camera_file(tmp_path):
    with pytest.raises(SettingsError, match="No such file"):
        load_camera_file(tmp_path / "none.yaml")


@pytest.mark.parametrize("text, result", [
    ("320,0,320,240", (320, 0, 320, 240)), ("1,2,3", SettingsError), ("a,b,c,d", SettingsError),
    ("0,0,0,10", SettingsError), ("-1,0,5,5", SettingsError),
])
def test_parse_crop(text, result):
    if result is SettingsError:
        with pytest.raises(SettingsError):
            parse_crop(text)
    else:
        assert parse_crop(text) == result


def test_make_camera_error():
    with pytest.raises(SettingsError, match="id"):
        make_camera(id="", source="x")


def test_keys_carry_the_camera_hash_tag():
    assert keys.frames_stream("cam-7") == "actionstream:frames:{cam-7}"
    assert keys.camera_of_stream(b"actionstream:skeletons:{cam-7}") == "cam-7"
    with pytest.raises(ValueError, match="invalid"):
        keys.frames_stream("a b")
    assert "{events}" in keys.EVENTS_STREAM and "{events}" in keys.event_guard_key("x")


@pytest.mark.parametrize("name", ["cameras.example.yaml", "fall-training.yaml"])
def test_shipped_camera_files_load(name):
    from tests.conftest import ROOT

    cameras = load_camera_file(ROOT / "deploy" / name)
    assert cameras and len({c.id for c in cameras}) == len(cameras)
    if name == "fall-training.yaml":  # the clips the README's fall-model recipe names
        assert {"urfd-fall-05", "ntu-S001C002P003R001A043"} <= {c.id for c in cameras}
        assert all(c.crop for c in cameras if c.id.startswith("urfd-"))
