"""The Celery settings both Celery apps share (alert delivery, replay jobs): JSON only,
late acks, the pipeline's Redis as broker."""

from __future__ import annotations

import ssl

from shared.ops import DEFAULT_URL
from shared.settings import Settings

ALERTS_QUEUE = "actionstream"


def celery_config(settings: Settings, queue: str = ALERTS_QUEUE) -> dict:
    """Celery settings: JSON only, late acks, the pipeline's Redis as broker, ``queue`` by default."""
    url = settings.redis_url or DEFAULT_URL
    config = {
        "broker_url": url, "task_default_queue": queue,
        "task_serializer": "json", "result_serializer": "json", "event_serializer": "json",
        "accept_content": ["json"], "result_accept_content": ["json"],
        "task_acks_late": True, "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1, "broker_connection_retry_on_startup": True,
        "task_ignore_result": True, "worker_hijack_root_logger": False,
        "worker_send_task_events": True,  # Flower shows each task (events are JSON too)
    }
    if url.startswith("rediss://") and "ssl_cert_reqs" not in url:
        config["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return config
