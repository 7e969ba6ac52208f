"""The Celery app of replay jobs: ``actionstream jobs-worker`` (or ``celery -A
workers.jobs.celery_app worker -Q actionstream-jobs``) runs :data:`REPLAY_TASK`.

JSON only, late acks (:mod:`shared.celeryconf`), a JSON result backend on the same Redis
for the task's PROGRESS meta ``{done, total, eta_s, phase}``. A worker killed mid-replay
leaves the job's message unacked; the Redis broker hands it to another worker after
``jobs_visibility_timeout_s`` (``ACTIONSTREAM_JOBS_VISIBILITY_TIMEOUT_S``), and that worker
resumes from the job's checkpoint. The trade-off of that timeout: the broker also hands out
again a message whose task is *still running* after that long, so a short one (seconds,
for a fast failover) means many redeliveries of long replays; each finds the job's lease
held by the running copy (:class:`workers.jobs.runner.Busy`) and is retried one lease TTL
later, until the job has ended. Keep it above the lease TTL (``lease_ttl_s``), and long
(the default, an hour) unless a fast failover matters more than those retries.
"""

from __future__ import annotations

import logging
from typing import Optional

import threading

from celery import Celery, signals
from celery.exceptions import Reject

from shared.redisio import connect
from shared.settings import Settings, load_settings
from shared.celeryconf import celery_config
from workers.jobs.replay import JobSpec
from workers.jobs.runner import Busy, JobRunner, Stopping

log = logging.getLogger(__name__)

QUEUE = "actionstream-jobs"
REPLAY_TASK = "actionstream.replay"
RESULT_EXPIRES_S = 7 * 24 * 3600
STOPPING = threading.Event()  # set when this worker shuts down: running replays hand over


@signals.worker_shutting_down.connect(weak=False)
def _stopping(**_) -> None:
    STOPPING.set()


def jobs_config(settings: Settings) -> dict:
    """:func:`celery_config` on the jobs queue, with results (progress) and the visibility timeout."""
    visibility = settings.jobs_visibility_timeout_s
    config = celery_config(settings, QUEUE)
    config.update({
        "result_backend": config["broker_url"], "task_ignore_result": False,
        "result_expires": RESULT_EXPIRES_S,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            # look for messages of dead workers often enough to meet the timeout
            "unacked_restore_interval": max(1, min(10, int(visibility / 4))),
            "unacked_restore_throttle": 1,
        },
    })
    if "broker_use_ssl" in config:
        config["redis_backend_use_ssl"] = config["broker_use_ssl"]
    return config


def make_app(settings: Optional[Settings] = None) -> Celery:
    """The jobs app with :data:`REPLAY_TASK` registered."""
    settings = settings or load_settings()
    celery = Celery("actionstream-jobs")
    celery.conf.update(jobs_config(settings))
    url = settings.redis_target

    def replay(self, spec: dict) -> dict:
        job = JobSpec.from_dict(spec)

        def report(meta: dict) -> None:
            self.update_state(task_id=job.job, state="PROGRESS", meta=meta)

        r = connect(url)
        try:
            return JobRunner(r, settings, job, report, stopping=STOPPING.is_set).run()
        except Stopping:  # back on the queue: another worker resumes it from its checkpoint
            log.info("camera %s: replay %s requeued (this worker stops)", job.replay_camera, job.job)
            raise Reject("the worker is shutting down", requeue=True) from None
        except Busy as exc:
            log.info("camera %s: %s; retried in %.0f s", job.replay_camera, exc, settings.lease_ttl_s)
            raise self.retry(countdown=settings.lease_ttl_s, max_retries=None) from None
        finally:
            r.close()

    celery.task(name=REPLAY_TASK, bind=True)(replay)
    return celery


def __getattr__(name: str):
    """``app``, made on first use (``celery -A workers.jobs.celery_app worker`` finds it here)."""
    if name == "app":
        globals()["app"] = make_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
