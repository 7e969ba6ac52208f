"""``actionstream replay purge``: delete what a finished replay job left in Redis.

A job that ended (DONE, CANCELLED, FAILED) unregisters its replay camera, but the camera's
keys (its streams, up to ``snapshot_frames`` JPEGs in recent-frames, tracker and action
state, leases' fences, the producer and checkpoint hashes), its done marks, its registry
entries and its events in the replay events stream would stay forever. A purge removes them
all: the camera's registration first (no worker takes it up again), its per-camera keys
(``keys.camera_keys``: all on one Cluster slot), its done marks and events (each global key
its own single-key command: no transaction spans slots), the job's registry entries last,
so that a purge cut short can be run again.

:func:`select_finished` (pure, clock injected) picks the jobs ``--finished --older-than``
names; :func:`purge` does the I/O.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import redis

from shared import keys
from workers.jobs import registry
from workers.jobs.replay import JobSpec, ReplayError

log = logging.getLogger(__name__)

EVENTS_BATCH = 1000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Purged:
    """What a purge removed of one job."""

    job: str
    camera: str
    keys: tuple[str, ...]  # the per-camera keys that existed
    fields: tuple[str, ...]  # the global hashes that held a field of the camera or job
    events: int  # entries deleted from the replay events stream

    def lines(self) -> list[str]:
        head = (f"job {self.job}: purged camera {self.camera}: {len(self.keys)} keys, "
                f"{self.events} events, fields of {', '.join(self.fields) or 'no hash'}")
        return [head, *(f"  {key}" for key in self.keys)]


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``2h``, ``7d``, ``1w`` as seconds (ReplayError otherwise)."""
    m = _DURATION.match(text or "")
    if not m:
        raise ReplayError(f"--older-than {text!r}: expected a duration such as 30s, 15m, 2h, 7d or 1w")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def ended_at(spec: JobSpec, state: dict) -> float:
    """When the job reached its state (``updated``), else when it was created."""
    updated = state.get("updated")
    return float(updated) if isinstance(updated, (int, float)) else spec.created


def select_finished(jobs: Iterable[tuple[JobSpec, dict]], now: float,
                    older_than_s: Optional[float] = None) -> list[str]:
    """The ids of the finished jobs (DONE, CANCELLED, FAILED) among ``jobs`` (spec, state),
    ended at least ``older_than_s`` before ``now`` (any age when None), in their order."""
    if older_than_s is not None and older_than_s < 0:
        raise ReplayError(f"--older-than {older_than_s}: a duration cannot be negative")
    return [spec.job for spec, state in jobs
            if registry.is_final(state.get("state"))
            and (older_than_s is None or now - ended_at(spec, state) >= older_than_s)]


def check_purgeable(r: redis.Redis, job_ids: Sequence[str]) -> list[JobSpec]:
    """The specs of ``job_ids``; ReplayError (nothing purged) for an unknown job or one not
    finished."""
    specs = []
    for job in dict.fromkeys(job_ids):
        spec = registry.spec_of(r, job)
        state = registry.state_of(r, job).get("state")
        if not registry.is_final(state):
            raise ReplayError(f"job {job} is {state}, not finished: cancel it first "
                              f"(actionstream replay cancel {job}), then purge it")
        specs.append(spec)
    return specs


def purge(r: redis.Redis, spec: JobSpec) -> Purged:
    """Delete everything of finished job ``spec`` in Redis (the caller checked it is finished)."""
    camera = spec.replay_camera
    fields = []
    if r.hdel(keys.CAMERAS_KEY, camera):  # unregistered first: no worker takes it up again
        fields.append(keys.CAMERAS_KEY)
    removed = _delete(r, keys.camera_keys(camera))
    for stage in keys.DONE_STAGES:
        if r.hdel(keys.done_key(stage), camera):
            fields.append(keys.done_key(stage))
    events = delete_events(r, camera)
    for key in (keys.JOBS_KEY, keys.JOB_STATES_KEY):  # the spec first: a listed job has its state
        if r.hdel(key, spec.job):
            fields.append(key)
    log.info("camera %s: replay %s purged: %d keys, %d events", camera, spec.job, len(removed), events)
    return Purged(spec.job, camera, tuple(removed), tuple(fields), events)


def _delete(r: redis.Redis, names: Sequence[str]) -> list[str]:
    """Delete ``names`` one DEL each (pipelined, no transaction); the ones that existed."""
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.delete(name)
    return [name for name, n in zip(names, pipe.execute()) if n]


def delete_events(r: redis.Redis, camera: str) -> int:
    """XDEL the replay events stream's entries of ``camera``, and their write guards
    (``keys.event_guard_key``, which would expire); how many entries."""
    n, start = 0, "-"
    while True:
        batch = r.xrange(keys.REPLAY_EVENTS_STREAM, min=start, count=EVENTS_BATCH)
        docs = {eid: _event_of(fields) for eid, fields in batch}
        ids = [eid for eid, doc in docs.items() if doc.get("camera") == camera]
        if ids:
            n += r.xdel(keys.REPLAY_EVENTS_STREAM, *ids)
            _delete(r, [keys.event_guard_key(docs[eid]["id"]) for eid in ids if docs[eid].get("id")])
        if len(batch) < EVENTS_BATCH:
            return n
        start = "(" + batch[-1][0].decode()


def _event_of(fields: dict) -> dict:
    """An entry's event as a dict; empty when it does not decode (it belongs to no camera)."""
    try:
        doc = json.loads(fields.get(b"event", b"{}"))
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
