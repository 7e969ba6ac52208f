"""Metrics (shared/metrics.py): bounded labels, the stage loop's counters on a real Redis,
/metrics over real HTTP, and the deploy files that use the metric names."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared import keys, metrics
from shared.ops import status
from tests.shared.echo_stage import EchoWorker, Running, publish, register, settings, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("reason,kind", [
    ("undecodable frame: field 'seq' is missing", "undecodable"),
    ("undecodable skeletons: person 0: 'kp' is not finite", "undecodable"),
    ("undecodable event: event is not JSON", "undecodable"),
    ("failed 3 times: ValueError: entry 1-0 is poison", "processing_failed"),
    ("delivered 11 times without being acked (it may crash workers)", "redelivered"),
    ("camera cam-x frame 100: JPEG cannot be decoded", "bad_image"),
    ("camera cam-x frame 3: JPEG is 10x10, message says 320x240", "bad_image"),
    ("something nobody foresaw", "other"),
])
def test_dead_letter_reasons_become_a_few_kinds(reason, kind):
    assert metrics.reason_kind(reason) == kind


def test_parse_keeps_counts_and_sums_and_leaves_buckets_out():
    metrics.BATCH_SIZE.labels("parse-test").observe(3)
    metrics.FRAMES_IN.labels("parse-test", "cam-p").inc(5)
    got = metrics.parse(generate_latest().decode())
    assert got['actionstream_frames_in_total{camera="cam-p",stage="parse-test"}'] >= 5
    assert got['actionstream_batch_size_count{stage="parse-test"}'] >= 1
    assert not [k for k in got if "_bucket" in k or "_created" in k or not k.startswith("actionstream_")]


def test_sample_names_are_those_exposed():
    exposed = {s.name for fam in text_string_to_metric_families(generate_latest().decode())
               for s in fam.samples if s.name.startswith("actionstream_")}
    assert exposed <= metrics.sample_names()
    assert {"actionstream_frames_out_total", "actionstream_inference_seconds_bucket",
            "actionstream_leases_held"} <= metrics.sample_names()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_over_http_and_a_taken_port_is_a_clear_error():
    port = _free_port()
    url = metrics.serve(port)
    assert url == f"http://127.0.0.1:{port}/metrics"
    metrics.EVENTS.labels("served-test").inc(2)
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
    assert metrics.scrape(url)['actionstream_events_total{label="served-test"}'] == 2
    with pytest.raises(metrics.MetricsError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
        metrics.serve(port)
    assert metrics.serve(0) is None


def test_the_loop_counts_frames_batches_dead_letters_and_forgets_released_cameras(r, redis_url):
    """Through a real Redis: frames in/out per camera equal what was published (a poison
    entry dead-lettered, counted by kind), leases held; on stop the camera's series go."""
    cam, stage = "m-loop-1", keys.POSE_GROUP
    register(r, [cam])
    publish(r, cam, 12, **{"4": {"fail": "always"}})
    dead0 = value("actionstream_dead_letters_total", stage=stage, reason="processing_failed")
    batches0 = value("actionstream_batch_size_count", stage=stage)
    w = EchoWorker(settings(redis_url, batch_per_camera=4), "m-w1", cameras=[cam])
    running = Running(w)
    try:
        wait_for(lambda: value("actionstream_frames_out_total", stage=stage, camera=cam) == 11,
                 what="11 entries processed")
        wait_for(lambda: value("actionstream_dead_letters_total", stage=stage,
                               reason="processing_failed") == dead0 + 1, what="one dead letter")
        assert value("actionstream_frames_in_total", stage=stage, camera=cam) >= 12
        assert value("actionstream_leases_held", stage=stage) == 1
        assert value("actionstream_batch_size_count", stage=stage) >= batches0 + 3
        assert value("actionstream_entry_age_seconds", stage=stage, camera=cam) >= 0
        wait_for(lambda: REGISTRY.get_sample_value("actionstream_stream_lag_entries",
                                                   {"stage": stage, "camera": cam}) == 0,
                 what="the lag measured")
    finally:
        running.stop()
    for name in ("actionstream_frames_in_total", "actionstream_frames_out_total",
                 "actionstream_stream_lag_entries", "actionstream_entry_age_seconds"):
        assert REGISTRY.get_sample_value(name, {"stage": stage, "camera": cam}) is None, name
    assert value("actionstream_leases_held", stage=stage) == 0


def test_status_reads_the_metrics_of_processes_with_a_heartbeat(r):
    port = _free_port()
    url = metrics.serve(port)
    metrics.FRAMES_OUT.labels("status-test", "cam-s").inc(7)
    r.set(keys.worker_key("pose-x"), json.dumps({"worker": "pose-x", "stage": "pose", "metrics_url": url}))
    r.set(keys.worker_key("producer-gone"), json.dumps({"stage": "producer", "camera": "gone",
                                                       "metrics_url": "http://127.0.0.1:1/metrics"}))
    got = status(r)["metrics"]
    assert got["pose-x"]["samples"]['actionstream_frames_out_total{camera="cam-s",stage="status-test"}'] == 7
    assert "error" in got["producer-gone"]


# ---------------------------------------------------------------- deploy files

def _dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "actionstream.json").read_text())


def _queries(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_use_only_metrics_that_exist():
    queries = _queries(_dashboard())
    assert len(queries) >= 10
    used = {name for q in queries for name in re.findall(r"\b(actionstream_\w+)", q)}
    assert used and used <= metrics.sample_names(), used - metrics.sample_names()
    families = {m.describe()[0].name for m in metrics.ALL}
    shown = {n for n in families if any(n in u for u in used)}
    assert shown == families, f"metrics with no panel: {families - shown}"


def test_compose_has_every_service_and_provisions_the_dashboard():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "producer", "pose-worker", "action-worker", "alerts", "alerts-worker", "history", "web",
            "prometheus", "grafana", "flower"} <= set(services)
    assert services["history"]["command"][0] == "history"
    assert services["web"]["command"][:3] == ["web", "--port", "8080"]
    for name in ("producer", "pose-worker", "action-worker", "alerts", "alerts-worker", "history", "web"):
        env = services[name]["environment"]
        assert env["ACTIONSTREAM_METRICS_PORT"] == "9100" and env["ACTIONSTREAM_METRICS_HOST"] == "0.0.0.0"
    mounts = " ".join(services["grafana"]["volumes"])
    assert "grafana/provisioning" in mounts and "grafana/dashboards" in mounts
    for mount in [*services["grafana"]["volumes"], *services["prometheus"]["volumes"]]:
        if mount.startswith("./"):  # a file of deploy/ (the others are named volumes)
            assert (DEPLOY / mount.split(":")[0]).exists(), mount
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prom["scrape_configs"]}
    assert {"producer", "pose-worker", "action-worker", "alerts", "alerts-worker"} <= jobs
    for provisioning in (DEPLOY / "grafana" / "provisioning").rglob("*.yaml"):
        assert yaml.safe_load(provisioning.read_text())["apiVersion"] == 1
