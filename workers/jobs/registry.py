"""The job registry in Redis: each job's spec (``keys.JOBS_KEY``) and state
(``keys.JOB_STATES_KEY``: state, reason, events, updated), and the cancel flag."""

from __future__ import annotations

import json
import logging
import time
from typing import Optional

import redis

from shared import keys
from workers.jobs.replay import FINAL_STATES, JobSpec, ReplayError

log = logging.getLogger(__name__)

CANCEL_TTL_S = 7 * 24 * 3600


def register(r: redis.Redis, spec: JobSpec, clock=time.time) -> None:
    """The job's state (QUEUED), then its spec: the two hashes sit on two Redis Cluster slots
    (no transaction spans them), and a job is listed by its spec, so a listed job always has
    its state; a state left alone (a crash in between) names no job anyone can see."""
    r.hset(keys.JOB_STATES_KEY, spec.job, json.dumps({"state": "QUEUED", "updated": clock()}))
    r.hset(keys.JOBS_KEY, spec.job, json.dumps(spec.to_dict()))


def spec_of(r: redis.Redis, job: str) -> JobSpec:
    raw = r.hget(keys.JOBS_KEY, job)
    if raw is None:
        raise ReplayError(f"no replay job {job!r} (actionstream replay list shows the jobs)")
    return JobSpec.from_dict(json.loads(raw))


def state_of(r: redis.Redis, job: str) -> dict:
    raw = r.hget(keys.JOB_STATES_KEY, job)
    return json.loads(raw) if raw else {"state": "UNKNOWN"}


def set_state(r: redis.Redis, job: str, state: str, clock=time.time, **extra) -> None:
    doc = {k: v for k, v in state_of(r, job).items() if k not in ("state", "updated")}
    doc.update(extra, state=state, updated=clock())
    r.hset(keys.JOB_STATES_KEY, job, json.dumps(doc))


def jobs(r: redis.Redis) -> list[tuple[JobSpec, dict]]:
    """Every job with its state, oldest first; an entry that is no job spec (written by hand,
    or by another version) is left out with a warning, not let hide the others."""
    specs, states = {}, {}
    for key, raw in r.hgetall(keys.JOBS_KEY).items():
        try:
            specs[key.decode()] = JobSpec.from_dict(json.loads(raw))
        except (ReplayError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("job %s: its spec is not readable (%s); not listed", key.decode(errors="replace"),
                        exc)
    for key, raw in r.hgetall(keys.JOB_STATES_KEY).items():
        try:
            states[key.decode()] = json.loads(raw)
        except ValueError:
            states[key.decode()] = {"state": "UNKNOWN"}
    return sorted(((s, states.get(j, {"state": "UNKNOWN"})) for j, s in specs.items()),
                  key=lambda x: (x[0].created, x[0].job))


def request_cancel(r: redis.Redis, spec: JobSpec) -> str:
    """Set the job's cancel flag (its task stops within a second); a job still queued is
    cancelled at once. The state now."""
    r.set(keys.job_cancel_key(spec.replay_camera), "1", ex=CANCEL_TTL_S)
    state = state_of(r, spec.job)["state"]
    if state == "QUEUED":
        set_state(r, spec.job, "CANCELLED", reason="cancelled before it started")
        return "CANCELLED"
    return state


def cancelled(r: redis.Redis, spec: JobSpec) -> bool:
    return bool(r.exists(keys.job_cancel_key(spec.replay_camera)))


def is_final(state: Optional[str]) -> bool:
    return state in FINAL_STATES
