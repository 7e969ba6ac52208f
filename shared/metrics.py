"""Prometheus metrics of every long-running process (``prometheus-client``), in one place.

Each process serves them on ``/metrics`` when ``metrics_port`` is set
(``ACTIONSTREAM_METRICS_PORT`` or ``--metrics-port``; 0 = off) on ``metrics_host``
(``ACTIONSTREAM_METRICS_HOST``, 127.0.0.1 by default; 0.0.0.0 in containers). A process
counts only what it did itself; Prometheus adds the processes up.

Per-camera series stay bounded: a stage worker has series only for the cameras it holds,
and :func:`forget_camera` removes a camera's series when it lets the camera go (its new
owner starts them again; Prometheus's ``rate`` and ``increase`` handle the reset).
Dead-letter reasons are reduced to a few kinds (:func:`reason_kind`).

``actionstream status`` reads the same numbers over HTTP (:func:`scrape`) from every
process whose heartbeat names its metrics address.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from typing import Iterable, Optional

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import UserError

log = logging.getLogger(__name__)

_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

FRAMES_IN = Counter("actionstream_frames_in_total", "Entries a stage read from a camera's input "
                    "stream (producer: frames read from the source)", ["stage", "camera"])
FRAMES_OUT = Counter("actionstream_frames_out_total", "Entries a stage processed, wrote and acked for a "
                     "camera, skipped ones included (producer: frames published)", ["stage", "camera"])
FRAMES_SKIPPED = Counter("actionstream_frames_skipped_total", "Frames not processed: stale in live mode "
                         "(pose) or not written while Redis was away (producer)",
                         ["stage", "camera", "reason"])
POSE_FRAMES_GATED = Counter("actionstream_pose_frames_gated_total", "Frames the pose model did not run "
                            "on because nothing moved (their skeletons repeat the camera's last ones)",
                            ["camera"])
BATCH_SIZE = Histogram("actionstream_batch_size", "Entries in one batch a stage worker handled",
                       ["stage"], buckets=_SIZES)
INFERENCE_SECONDS = Histogram("actionstream_inference_seconds", "Time of one model call (a whole batch)",
                              ["stage", "model"], buckets=_SECONDS)
INFERENCE_ITEMS = Histogram("actionstream_inference_batch_size", "Items (frames, windows) in one model call",
                            ["stage", "model"], buckets=_SIZES)
STREAM_LAG = Gauge("actionstream_stream_lag_entries", "Entries of a camera's input stream the stage has "
                   "not yet acked (undelivered plus pending), measured every lease period",
                   ["stage", "camera"])
ENTRY_AGE = Gauge("actionstream_entry_age_seconds", "How long the oldest entry of the last batch read for "
                  "a camera waited in its stream (Redis server clock)", ["stage", "camera"])
LEASES_HELD = Gauge("actionstream_leases_held", "Cameras this worker holds a lease on", ["stage"])
LEASE_CHANGES = Counter("actionstream_lease_changes_total", "Leases taken, given back, or lost (expired or "
                        "fenced)", ["stage", "change"])
EVENTS = Counter("actionstream_events_total", "Action events written (each event id once)", ["label"])
EVENT_DUPLICATES = Counter("actionstream_event_duplicates_total", "Events not written again because their "
                           "id was written before (a redelivered window)")
DEAD_LETTERS = Counter("actionstream_dead_letters_total", "Entries put on the dead-letter stream, by kind of "
                       "reason", ["stage", "reason"])
RECONNECTS = Counter("actionstream_reconnects_total", "Times a process lost what it needs (target redis, "
                     "database, mqtt, or a producer's live source) and tried again", ["component", "target"])
ALERT_TASKS = Counter("actionstream_alert_tasks_queued_total", "Delivery tasks the alert forwarder queued")
CELERY_TASKS = Counter("actionstream_celery_tasks_total", "Celery task outcomes in this worker: success, "
                       "retry, failure", ["task", "outcome"])

WEBHOOK_DELIVERIES = Counter("actionstream_webhook_deliveries_total", "Webhook delivery attempts by outcome: "
                             "delivered (2xx), retry (failed, retried later), dead_letter (given up, or the "
                             "endpoint disabled)", ["target", "outcome"])
WEBHOOK_DISABLED = Gauge("actionstream_webhook_endpoint_disabled", "1 while a webhook endpoint is disabled "
                         "(it answered 410 Gone, or failed for webhook_disable_after_s)", ["target"])
DURABLE_WAITS = Counter("actionstream_durable_waits_total", "Durability confirmations of written events or "
                        "frames (WAIT / WAITAOF): confirmed, or unconfirmed (not acknowledged, retried)",
                        ["stream", "outcome"])
STREAM_BEHIND = Gauge("actionstream_stream_group_behind_entries", "Entries of a bounded stream that a "
                      "consumer group has not read yet, when near the bound (the writer then holds back)",
                      ["stream", "group"])

ALL = (FRAMES_IN, FRAMES_OUT, FRAMES_SKIPPED, POSE_FRAMES_GATED, BATCH_SIZE, INFERENCE_SECONDS,
       INFERENCE_ITEMS, STREAM_LAG, ENTRY_AGE, LEASES_HELD, LEASE_CHANGES, EVENTS, EVENT_DUPLICATES,
       DEAD_LETTERS, RECONNECTS,
       ALERT_TASKS, CELERY_TASKS, WEBHOOK_DELIVERIES, WEBHOOK_DISABLED, DURABLE_WAITS, STREAM_BEHIND)
SKIP_REASONS = ("stale", "redis_unreachable")
PER_CAMERA = (FRAMES_IN, FRAMES_OUT, STREAM_LAG, ENTRY_AGE)  # labels (stage, camera)

# (how the reason starts, kind); then a reason about a JPEG is a bad image, others "other"
REASON_KINDS = (("undecodable", "undecodable"), ("failed ", "processing_failed"),
                ("delivered ", "redelivered"))


class MetricsError(UserError, ValueError):
    """The metrics port cannot be served (taken, not allowed)."""


def reason_kind(reason: str) -> str:
    """A dead-letter reason reduced to one of a few kinds (a bounded label)."""
    for start, kind in REASON_KINDS:
        if reason.startswith(start):
            return kind
    return "bad_image" if "jpeg" in reason.lower() else "other"


def sample_names() -> set[str]:
    """The sample names this module's metrics expose (``_total``, ``_bucket`` ... included)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",)}
    names = set()
    for metric in ALL:
        for family in metric.describe():
            names |= {family.name + s for s in suffixes[family.type]}
    return names


def forget_camera(stage: str, camera: str) -> None:
    """Remove the camera's series of ``stage`` (the worker let the camera go)."""
    for metric in PER_CAMERA:
        metric.remove(stage, camera)
    for reason in SKIP_REASONS:
        FRAMES_SKIPPED.remove(stage, camera, reason)


def count_dead(stage: str, reasons: Iterable[str]) -> None:
    for reason in reasons:
        DEAD_LETTERS.labels(stage, reason_kind(reason)).inc()


def serve(port: int, host: str = "127.0.0.1") -> Optional[str]:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread; the URL to scrape it (None when
    ``port`` is 0: off). :class:`MetricsError` when the port cannot be bound."""
    if not port:
        return None
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise MetricsError(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); give another "
                           "--metrics-port (or ACTIONSTREAM_METRICS_PORT), or 0 for none") from None
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    url = f"http://{shown}:{port}/metrics"
    log.info("metrics on %s", url)
    return url


def parse(text: str, prefix: str = "actionstream_") -> dict[str, float]:
    """Exposition text -> ``{'name{label="v",...}': value}`` for samples whose name starts
    with ``prefix`` (buckets and ``_created`` left out: the counts and sums stay)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.startswith(prefix) or s.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """GET ``url`` (a process's /metrics) and :func:`parse` it; OSError when unreachable."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode("utf-8"))
