"""The settings' groups (one per service): together exactly the fields of ``Settings``, each
field in one group, read from the same ``ACTIONSTREAM_<FIELD>`` variable as before."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import (SETTINGS_GROUPS, ActionSettings, AlertSettings, ArchiveSettings, HistorySettings,
                             JobsSettings, PoseSettings, ProcessSettings, ProducerSettings, RedisSettings,
                             Settings, WebSettings, WorkerSettings, load_settings)

ROOT = Path(__file__).resolve().parents[2]
NOT_SETTINGS = {"ACTIONSTREAM_WEB_SHOTS"}  # a test's variable (tests/integration/test_web.py)


def test_every_field_is_in_exactly_one_group():
    owners: dict[str, list[str]] = {}
    for group in SETTINGS_GROUPS:
        assert issubclass(Settings, group)
        for name in group.model_fields:
            owners.setdefault(name, []).append(group.__name__)
    assert set(owners) == set(Settings.model_fields)
    assert {n: g for n, g in owners.items() if len(g) > 1} == {}


def test_env_names_are_the_prefix_and_the_field_name():
    for cls in (Settings, *SETTINGS_GROUPS):
        assert cls.model_config["env_prefix"] == "ACTIONSTREAM_" and cls.model_config["extra"] == "ignore"
    aliased = {n: (f.alias, f.validation_alias) for n, f in Settings.model_fields.items()
               if f.alias is not None or f.validation_alias is not None}
    assert aliased == {}  # so each field's variable is ACTIONSTREAM_<FIELD>


def test_every_documented_variable_is_a_setting():
    names = {f"ACTIONSTREAM_{n.upper()}" for n in Settings.model_fields}
    docs = [ROOT / "README.md", ROOT / "deploy" / "k8s" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    unknown = {}
    for doc in docs:
        if doc.is_file():
            said = {m for m in re.findall(r"ACTIONSTREAM_[A-Z0-9_]+", doc.read_text()) if not m.endswith("_")}
            unknown.update({m: doc.relative_to(ROOT).as_posix() for m in said - names - NOT_SETTINGS})
    assert unknown == {}


@pytest.mark.parametrize("group,field,value,expected", [
    (RedisSettings, "redis_wait_ms", "250", 250),
    (ProcessSettings, "log_level", "DEBUG", "DEBUG"),
    (ProducerSettings, "jpeg_quality", "70", 70),
    (WorkerSettings, "max_batch", "9", 9),
    (PoseSettings, "max_lag_s", "3.5", 3.5),
    (ActionSettings, "alert_consecutive", "4", 4),
    (AlertSettings, "mqtt_topic_prefix", "site-2", "site-2"),
    (JobsSettings, "replay_retention_s", "60", 60.0),
    (HistorySettings, "history_consumer", "history-2", "history-2"),
    (ArchiveSettings, "archive_segment_s", "30", 30),
    (WebSettings, "web_login_attempts", "7", 7),
])
def test_a_group_and_settings_read_the_same_variable(monkeypatch, group, field, value, expected):
    monkeypatch.setenv(f"ACTIONSTREAM_{field.upper()}", value)
    assert getattr(group(), field) == expected
    assert getattr(load_settings(), field) == expected


def test_the_redis_credentials_are_put_into_the_urls_of_settings():
    s = load_settings(redis_url="redis://h:6379/0", broker_url="redis://b:6380/1", redis_username="pose",
                      redis_password="p w")
    assert s.redis_url == "redis://pose:p%20w@h:6379/0" and s.broker_url == "redis://pose:p%20w@b:6380/1"
