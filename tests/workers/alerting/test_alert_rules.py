"""Alert rules: labels, minimum score, cameras, quiet hours (local time), cooldown; bad
configs fail with one error naming the field."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from shared.schemas import Event
from shared.settings import SettingsError
from workers.alerting.routing import AlertRules, load_config, parse_config

BERLIN = ZoneInfo("Europe/Berlin")
TARGETS = {"hook": {"webhook": "http://127.0.0.1:9/x"}, "home": {"mqtt": "mqtt://127.0.0.1:1883"}}


def at(hhmm: str) -> float:
    """Unix time of 2026-11-30 HH:MM in Berlin."""
    h, m = map(int, hhmm.split(":"))
    return datetime(2026, 11, 30, h, m, tzinfo=BERLIN).timestamp()


def ev(camera="cam-1", label="falling", score=0.9, track=1) -> Event:
    return Event(camera=camera, track_id=track, label=label, label_index=1, score=score, frame_start=0,
                 frame_end=47, ts_start=0.0, ts_end=1.6, model="fall", emitted_at=0.0)


def rules(*rule_list) -> AlertRules:
    raw = {"timezone": "Europe/Berlin", "targets": TARGETS, "rules": list(rule_list)}
    return AlertRules(parse_config(raw))


@pytest.mark.parametrize("rule,event,when,want", [
    ({"targets": ["hook"]}, ev(), "12:00", ["hook"]),                                   # no filter
    ({"labels": ["fallen"], "targets": ["hook"]}, ev(label="falling"), "12:00", []),
    ({"labels": ["fallen"], "targets": ["hook"]}, ev(label="fallen"), "12:00", ["hook"]),
    ({"min_score": 0.8, "targets": ["hook"]}, ev(score=0.79), "12:00", []),
    ({"min_score": 0.8, "targets": ["hook"]}, ev(score=0.8), "12:00", ["hook"]),
    ({"cameras": ["cam-2"], "targets": ["hook"]}, ev(camera="cam-1"), "12:00", []),
    ({"cameras": ["cam-2"], "targets": ["hook"]}, ev(camera="cam-2"), "12:00", ["hook"]),
    ({"quiet_hours": ["22:00-06:00"], "targets": ["hook"]}, ev(), "23:30", []),        # wraps midnight
    ({"quiet_hours": ["22:00-06:00"], "targets": ["hook"]}, ev(), "05:59", []),
    ({"quiet_hours": ["22:00-06:00"], "targets": ["hook"]}, ev(), "06:00", ["hook"]),  # end excluded
    ({"quiet_hours": ["22:00-06:00"], "targets": ["hook"]}, ev(), "21:59", ["hook"]),
    ({"quiet_hours": ["12:00-13:00", "01:00-02:00"], "targets": ["hook"]}, ev(), "12:30", []),
    ({"targets": ["hook", "home"]}, ev(), "12:00", ["hook", "home"]),
])
def test_a_rule_filters(rule, event, when, want):
    assert rules(rule).match(event, at(when)) == want


def test_quiet_hours_are_local_time():
    """22:00-06:00 in Berlin: 22:30 UTC is 23:30 in Berlin (quiet), 20:30 UTC is 21:30 (not)."""
    r = rules({"quiet_hours": ["22:00-06:00"], "targets": ["hook"]})
    utc = ZoneInfo("UTC")
    assert r.match(ev(), datetime(2026, 11, 30, 22, 30, tzinfo=utc).timestamp()) == []
    assert r.match(ev(), datetime(2026, 11, 30, 20, 30, tzinfo=utc).timestamp()) == ["hook"]


def test_cooldown_per_rule_and_camera():
    r = rules({"cooldown_s": 60, "targets": ["hook"]}, {"labels": ["fallen"], "targets": ["home"]})
    t = at("12:00")
    assert r.match(ev(), t) == ["hook"]
    assert r.match(ev(track=2), t + 59) == []                       # same camera, within 60 s
    assert r.match(ev(camera="cam-2"), t + 59) == ["hook"]          # another camera has its own
    assert r.match(ev(label="fallen"), t + 30) == ["home"]          # the other rule has no cooldown
    assert r.match(ev(), t + 60) == ["hook"]                        # cooldown over
    saved = r.state()
    assert r.match(ev(), t + 200) == ["hook"]
    r.restore(saved)                                                # a match that was not carried out
    assert r.match(ev(), t + 200) == ["hook"]


def test_quiet_hours_do_not_start_a_cooldown():
    r = rules({"quiet_hours": ["12:00-13:00"], "cooldown_s": 600, "targets": ["hook"]})
    assert r.match(ev(), at("12:59")) == []
    assert r.match(ev(), at("13:00")) == ["hook"]


@pytest.mark.parametrize("change,field,words", [
    ({"rules": [{"targets": ["nope"]}]}, "rules", "'nope'"),
    ({"rules": [{"targets": ["hook"], "min_score": 1.5}]}, "rules.0.min_score", "less than or equal to 1"),
    ({"rules": [{"targets": ["hook"], "quiet_hours": ["22-06"]}]}, "rules.0.quiet_hours", "HH:MM-HH:MM"),
    ({"rules": [{"targets": ["hook"], "quiet_hours": ["25:00-06:00"]}]}, "rules.0.quiet_hours", "HH:MM"),
    ({"rules": [{"targets": ["hook"], "quiet_hours": ["06:00-06:00"]}]}, "rules.0.quiet_hours", "empty"),
    ({"rules": [{"targets": ["hook"], "cooldown_s": -1}]}, "rules.0.cooldown_s", "greater than or equal"),
    ({"rules": [{"targets": ["hook"], "cameras": ["a b"]}]}, "rules.0.cameras", "camera"),
    ({"rules": [{"targets": ["hook"], "lables": ["x"]}]}, "rules.0.lables", "Extra inputs"),
    ({"rules": [{"targets": []}]}, "rules.0.targets", "at least 1"),
    ({"rules": []}, "rules", "at least 1"),
    ({"timezone": "Mars/Olympus"}, "timezone", "unknown timezone"),
    ({"targets": {"hook": {"webhook": "ftp://x/y"}}}, "targets.hook.webhook", "http(s)"),
    ({"targets": {"hook": {"webhook": "http://x/y", "secret": "hunter2"}}}, "targets.hook.secret", "whsec_"),
    ({"targets": {"hook": {"webhook": "http://x/y", "secret": "whsec_!!"}}}, "targets.hook.secret", "base64"),
    ({"targets": {"hook": {"mqtt": "http://broker"}}}, "targets.hook.mqtt", "MQTT URL"),
    ({"targets": {"hook": {"mqtt": "mqtt://b", "topic_prefix": "a/#"}}}, "targets.hook.topic_prefix", "#"),
    ({"targets": {"hook": {}}}, "targets.hook", "exactly one of"),
    ({"targets": {"hook": {"webhook": "http://x", "mqtt": "mqtt://b"}}}, "targets.hook", "exactly one of"),
])
def test_a_bad_config_names_the_field(change, field, words):
    raw = {"timezone": "UTC", "targets": {"hook": {"webhook": "http://127.0.0.1:9/x"}},
           "rules": [{"targets": ["hook"]}]}
    raw.update(change)
    with pytest.raises(SettingsError) as err:
        parse_config(raw)
    text = str(err.value)
    assert f"{field}:" in text and words in text, text
    assert text.count(":") >= 1 and "\n" not in text


def test_a_config_file(tmp_path):
    path = tmp_path / "alerts.yaml"
    path.write_text("timezone: Europe/Berlin\ntargets:\n  hook: {webhook: 'http://127.0.0.1:9/x'}\n"
                    "rules:\n  - {labels: [falling], min_score: 0.7, targets: [hook]}\n")
    config = load_config(path)
    assert config.rules[0].min_score == 0.7 and config.targets["hook"].webhook.endswith("/x")
    path.write_text("rules: [\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(SettingsError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_the_shipped_example_is_valid():
    from tests.conftest import ROOT

    config = load_config(ROOT / "deploy" / "alerts.example.yaml")
    assert config.rules and config.targets


@pytest.mark.parametrize("argv,words", [
    ([], "no alert target"),
    (["--mqtt", "http://broker:1883"], "not an MQTT URL"),
    (["--alerts-config", "/nonexistent/alerts.yaml"], "alerts config /nonexistent/alerts.yaml"),
])
def test_the_alerts_command_refuses_bad_targets(argv, words, capsys):
    from workers.console.cli import main

    assert main(["alerts", "--redis", "redis://127.0.0.1:9/0", "--burst", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("actionstream alerts: error:") and words in err and "\n" not in err, err
