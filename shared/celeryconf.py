"""The Celery settings both Celery apps share (alert delivery, replay jobs): JSON only,
late acks, the pipeline's Redis as broker."""

from __future__ import annotations

import ssl
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.settings import Settings, SettingsError

ALERTS_QUEUE = "actionstream"


def broker_url(settings: Settings) -> str:
    """The URL of Celery's broker (and result backend): a plain Redis, never a cluster."""
    url = settings.broker_url or settings.redis_target
    if url.split("://", 1)[0].endswith("+cluster"):
        raise SettingsError("Celery cannot use a Redis Cluster as its broker (kombu has no cluster "
                            "transport): set ACTIONSTREAM_BROKER_URL to a plain redis:// server")
    return url


def celery_config(settings: Settings, queue: str = ALERTS_QUEUE) -> dict:
    """Celery settings: JSON only, late acks, ``queue`` by default, and as broker the pipeline's
    Redis or ACTIONSTREAM_BROKER_URL (required when the streams are on a Redis Cluster: kombu has
    no cluster transport)."""
    url, tls = broker_tls(broker_url(settings))
    config = {
        "broker_url": url, "task_default_queue": queue,
        "task_serializer": "json", "result_serializer": "json", "event_serializer": "json",
        "accept_content": ["json"], "result_accept_content": ["json"],
        "task_acks_late": True, "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1, "broker_connection_retry_on_startup": True,
        "task_ignore_result": True, "worker_hijack_root_logger": False,
        "worker_send_task_events": True,  # Flower shows each task (events are JSON too)
    }
    if tls is not None:
        config["broker_use_ssl"] = tls
    return config


CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def broker_tls(url: str) -> tuple[str, dict | None]:
    """(the URL, Celery's TLS options) of a broker URL: for ``rediss://``, its ``ssl_*`` query
    parameters (the CA file of ACTIONSTREAM_REDIS_CA_FILE among them) moved into the options,
    as kombu reads them there only; the certificate is verified unless ``ssl_cert_reqs=none``."""
    if not url.startswith("rediss://"):
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(query)
    asked = given.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    reqs = CERT_REQS.get(asked, ssl.CERT_REQUIRED)
    tls = {"ssl_cert_reqs": reqs, **{k: given[k] for k in TLS_PARAMS if k in given}}
    rest = [(k, v) for k, v in query if k != "ssl_cert_reqs" and k not in TLS_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(rest))), tls
