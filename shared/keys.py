"""Every Redis key, stream, group and channel name actionstream uses, in one place.

Per-camera keys carry the camera id as a hash tag (``{cam-7}``) so that all keys of a
camera land on one Redis Cluster slot while many cameras spread over many nodes.
"""

from __future__ import annotations

import re

PREFIX = "actionstream"

POSE_GROUP = "pose"
ACTION_GROUP = "action"
ARCHIVE_GROUP = "archive"  # the archiver (workers/archive) on the frame, skeleton and events streams

# The events stream and the idempotency guards share the hash tag {events}, so the
# guarded write (one Lua script) touches a single Cluster slot.
EVENTS_STREAM = f"{PREFIX}:{{events}}"
EVENTS_CHANNEL = f"{PREFIX}:events:live"
DEADLETTER_STREAM = f"{PREFIX}:deadletter"
CAMERAS_KEY = f"{PREFIX}:cameras"  # hash: camera id -> JSON description (source, mode, size)
# webhook delivery (workers/alerting/delivery.py): retries due (sorted set, score = due time),
# and per endpoint its failing-since time or why it was disabled (hash: target -> JSON)
WEBHOOK_RETRIES_KEY = f"{PREFIX}:webhooks:retries"
WEBHOOK_ENDPOINTS_KEY = f"{PREFIX}:webhooks:endpoints"


def mqtt_incidents_key(target: str) -> str:
    """Hash: the open MQTT incidents of alert target ``target`` ("camera|track" -> JSON)."""
    return f"{PREFIX}:mqtt:incidents:{target}"

_CAMERA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_camera_id(camera: str) -> str:
    """Return ``camera`` if it is a valid id (letters, digits, ``_.-``, at most 64; or a
    replay camera ``<camera>~<job>``: two such ids joined by one ``~``), else raise."""
    parts = camera.split(REPLAY_SEP) if isinstance(camera, str) else [None]
    if len(parts) > 2 or not all(isinstance(p, str) and _CAMERA_RE.match(p) for p in parts):
        raise ValueError(
            f"camera id {camera!r} is invalid: use 1-64 letters, digits, '_', '.', '-' "
            "starting with a letter or digit (a replay camera: two such ids joined by one '~')"
        )
    return camera


# Replays (workers/jobs): each replay job is a camera of its own, ``<camera>~<job id>``;
# its events go to their own stream (same {events} hash tag as the live one, so the
# guarded write stays on one slot), never to the live stream or channel.
REPLAY_SEP = "~"
REPLAY_EVENTS_STREAM = f"{PREFIX}:{{events}}:replay"
JOBS_KEY = f"{PREFIX}:jobs"  # hash: job id -> its spec (JSON)
JOB_STATES_KEY = f"{PREFIX}:job-states"  # hash: job id -> its state (JSON: state, reason, ...)
JOB_STAGE = "job"  # the lease of the task running a replay: lease_key(JOB_STAGE, replay camera)


def replay_camera(camera: str, job: str) -> str:
    """The camera id of replay ``job`` of ``camera`` (both plain ids)."""
    if REPLAY_SEP in camera or REPLAY_SEP in job:
        raise ValueError(f"a replay of {camera!r} by job {job!r}: neither may hold {REPLAY_SEP!r}")
    return check_camera_id(f"{camera}{REPLAY_SEP}{job}")


def split_replay(camera: str) -> tuple[str, str | None]:
    """``(camera, job)`` of a replay camera; ``(camera, None)`` for a live one."""
    base, sep, job = check_camera_id(camera).partition(REPLAY_SEP)
    return (base, job) if sep else (camera, None)


def is_replay(camera: str | bytes) -> bool:
    if isinstance(camera, bytes):
        camera = camera.decode("utf-8", "replace")
    return REPLAY_SEP in camera


def job_checkpoint_key(camera: str) -> str:
    """Hash of replay camera ``camera``: the last published source ``seq``, frames ``published``,
    ``eos`` once the end was published; written with each frame in one script (same slot)."""
    return f"{PREFIX}:job-checkpoint:{{{check_camera_id(camera)}}}"


def job_cancel_key(camera: str) -> str:
    """Set when replay camera ``camera``'s job is cancelled."""
    return f"{PREFIX}:job-cancel:{{{check_camera_id(camera)}}}"


def frames_stream(camera: str) -> str:
    return f"{PREFIX}:frames:{{{check_camera_id(camera)}}}"


def skeletons_stream(camera: str) -> str:
    return f"{PREFIX}:skeletons:{{{check_camera_id(camera)}}}"


def scores_stream(camera: str) -> str:
    """Every classified window's top labels (for overlays and debugging), bounded."""
    return f"{PREFIX}:scores:{{{check_camera_id(camera)}}}"


def next_track_key(camera: str) -> str:
    """The next track id of a camera, so a worker taking it over never reuses an id."""
    return f"{PREFIX}:next-track:{{{check_camera_id(camera)}}}"


def tracker_state_key(camera: str) -> str:
    """The pose tracker's exact state (JSON) after the camera's last written frame, for takeovers."""
    return f"{PREFIX}:tracker-state:{{{check_camera_id(camera)}}}"


def lease_key(stage: str, camera: str) -> str:
    return f"{PREFIX}:lease:{stage}:{{{check_camera_id(camera)}}}"


def fence_key(stage: str, camera: str) -> str:
    """The fencing-token counter of a camera's lease for a stage (INCR'd at each acquisition)."""
    return f"{PREFIX}:fence:{stage}:{{{check_camera_id(camera)}}}"


def producer_key(camera: str) -> str:
    """Hash: the camera's producer ``epoch`` (one more at each start) and next ``seq``."""
    return f"{PREFIX}:producer:{{{check_camera_id(camera)}}}"


def hash_tag(key: str | bytes) -> str | None:
    """The hash tag of ``key`` (the part in the first ``{...}``), or None."""
    if isinstance(key, bytes):
        key = key.decode()
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else None


def event_guard_key(event_id: str) -> str:
    return f"{PREFIX}:{{events}}:seen:{event_id}"


def stage_stream(stage: str, camera: str) -> str:
    """The input stream of a stage for a camera (pose reads frames, action reads skeletons)."""
    if stage == POSE_GROUP:
        return frames_stream(camera)
    if stage == ACTION_GROUP:
        return skeletons_stream(camera)
    raise ValueError(f"unknown stage {stage!r}; expected {POSE_GROUP!r} or {ACTION_GROUP!r}")


def camera_of_stream(stream: str | bytes) -> str:
    """The camera id inside a per-camera stream name (the hash tag)."""
    if isinstance(stream, bytes):
        stream = stream.decode()
    start, end = stream.find("{"), stream.rfind("}")
    if start < 0 or end <= start:
        raise ValueError(f"stream {stream!r} carries no camera hash tag")
    return stream[start + 1 : end]


def done_key(stage: str) -> str:
    """Hash: camera -> number of frames, set when a stage has passed a camera's end of stream."""
    return f"{PREFIX}:done:{stage}"


def worker_key(worker_id: str) -> str:
    """A worker's heartbeat and metrics (JSON, with a TTL)."""
    return f"{PREFIX}:worker:{worker_id}"


def worker_pattern() -> str:
    return f"{PREFIX}:worker:*"


def action_state_key(camera: str) -> str:
    """The action stage's state of a camera (window phase, rule state; JSON), written with
    the acks of each batch so that a worker taking the camera over continues exactly."""
    return f"{PREFIX}:action-state:{{{check_camera_id(camera)}}}"


def archived_streams(camera: str) -> dict[str, str]:
    """The camera's streams the archive keeps, by kind (``frames``, ``skeletons``); the
    archive also keeps :data:`EVENTS_STREAM`, split per camera."""
    return {"frames": frames_stream(camera), "skeletons": skeletons_stream(camera)}


def recent_frames_stream(camera: str) -> str:
    """The last few posed frames of a camera (JPEG with its tracked skeletons), capped by
    ``snapshot_frames``: event snapshots are drawn from it (workers/history)."""
    return f"{PREFIX}:recent-frames:{{{check_camera_id(camera)}}}"


CAMERA_STAGES = (POSE_GROUP, ACTION_GROUP, JOB_STAGE)  # the stages that lease a camera
DONE_STAGES = (POSE_GROUP, ACTION_GROUP)  # the stages that mark a camera done (done_key)


def camera_keys(camera: str) -> tuple[str, ...]:
    """Every per-camera key of ``camera``, for all stages: all carry its hash tag (one Cluster
    slot). Purging a finished replay deletes these; a new per-camera key belongs here too
    (tests/workers/jobs/test_purge.py checks every per-camera function of this module)."""
    return (frames_stream(camera), skeletons_stream(camera), scores_stream(camera),
            recent_frames_stream(camera), next_track_key(camera), tracker_state_key(camera),
            action_state_key(camera), producer_key(camera), job_checkpoint_key(camera),
            job_cancel_key(camera),
            *(lease_key(stage, camera) for stage in CAMERA_STAGES),
            *(fence_key(stage, camera) for stage in CAMERA_STAGES))
