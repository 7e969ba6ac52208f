"""Settings: ``ACTIONSTREAM_*`` environment variables plus a YAML camera file.

Both are validated with pydantic; an error names the field (and the file) at fault.
"""

from __future__ import annotations

import json

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Optional
from urllib.parse import quote, urlencode, urlsplit

import yaml
from pydantic import (AfterValidator, BaseModel, Field, SecretStr, ValidationError, field_validator,
                      model_validator)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParseError

from shared.errors import UserError
from shared.keys import check_camera_id
from shared.posemodels import PoseModelName

Mode = Literal["live", "replay"]

# the Redis a process connects to when ACTIONSTREAM_REDIS_URL (--redis) is unset: Settings.redis_target
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SettingsError(UserError, ValueError):
    """Settings or a camera file are invalid; the text names the field."""


def check_redis_url(url: Optional[str]) -> Optional[str]:
    """``url`` when it is a Redis URL (``redis://``, ``rediss://``, ``unix://``) with a host
    and a numeric port, or a Redis Cluster's (``redis+cluster://HOST:PORT[,HOST:PORT...]``,
    ``rediss+cluster://`` for TLS); ValueError saying what is expected otherwise."""
    if url is None:
        return url
    expected = ("expected redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS), unix:///PATH "
                "or redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...] (a Redis Cluster)")
    if url.split("://", 1)[0] in ("redis+cluster", "rediss+cluster"):
        from shared.redisio import parse_cluster_url  # redis-py is imported only here

        try:
            parse_cluster_url(url)
        except ValueError as exc:
            raise ValueError(f"not a Redis Cluster URL: {exc} ({expected})") from None
        return url
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in range
    except ValueError:
        raise ValueError(f"not a Redis URL ({expected})") from None
    if parts.scheme == "unix" and parts.path:
        return url
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or port == 0:
        raise ValueError(f"not a Redis URL ({expected})")
    return url


def read_secret(path: Path, what: str) -> str:
    """The secret in the file ``path`` (a Docker or Kubernetes secret: surrounding whitespace
    dropped); ValueError naming ``what`` when it cannot be read or is empty."""
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from None
    if not secret:
        raise ValueError(f"{what} {path} is empty")
    return secret


def with_credentials(url: Optional[str], username: Optional[str], password: Optional[str],
                     ca_file: Optional[Path] = None) -> Optional[str]:
    """``url`` with the ACL user and password put in (unless it names a user or password
    itself) and, for ``rediss://``, the CA file that signs the server's certificate (pure)."""
    if url is None:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    query = {}
    if scheme == "unix":
        query.update({k: v for k, v in (("username", username), ("password", password)) if v})
    elif (username or password) and "@" not in rest.split("/", 1)[0].split("?", 1)[0]:
        creds = quote(username or "", safe="") + (f":{quote(password, safe='')}" if password else "")
        rest = f"{creds}@{rest}"
    if ca_file is not None and scheme.startswith("rediss") and "ssl_ca_certs=" not in rest:
        query["ssl_ca_certs"] = str(ca_file)
    if query:
        rest += ("&" if "?" in rest else "?") + urlencode(query)
    return f"{scheme}://{rest}"


def _user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "actionstream"


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "actionstream" / "models"


class _Group(BaseSettings):
    """A group of :class:`Settings` fields (one service's); alone it reads the same
    ``ACTIONSTREAM_<FIELD>`` variables."""

    model_config = SettingsConfigDict(env_prefix="ACTIONSTREAM_", extra="ignore")


class RedisSettings(_Group):
    """Where Redis is, as whom, and how durable a write must be before it counts."""

    redis_url: Annotated[Optional[str], AfterValidator(check_redis_url)] = None  # None: `up` embeds one
    # after each batch's fenced writes: WAIT for this many replicas (at most redis_wait_ms);
    # narrows what a failover can lose (replication is asynchronous), costs a round trip; 0: off
    redis_wait_replicas: int = Field(0, ge=0, le=16)
    redis_wait_ms: int = Field(100, ge=1, le=60000)
    # events are acknowledged (their skeletons acked) only once durable (shared/durability.py):
    # WAIT for redis_wait_replicas and, with redis_wait_aof, WAITAOF (fsynced to the server's
    # append-only file; Valkey / Redis >= 7.2, appendonly yes); unconfirmed: retried, never dropped
    redis_wait_aof: bool = False
    # Celery's broker (alerts): a plain Redis; None: redis_url (which must then not be a cluster)
    broker_url: Annotated[Optional[str], AfterValidator(check_redis_url)] = None
    # this process's Redis ACL user (deploy/redis/users.acl: one per role) and its password (or a
    # file holding it: a secret), put into redis_url and broker_url unless they name a user
    # themselves; the CA that signs a rediss:// server's certificate
    redis_username: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    redis_password: Optional[SecretStr] = None
    redis_password_file: Optional[Path] = None
    redis_ca_file: Optional[Path] = None

    @model_validator(mode="after")
    def _redis_credentials(self) -> "RedisSettings":
        """The ACL user and password (and CA) of the settings put into the Redis URLs."""
        password = self.redis_password.get_secret_value() if self.redis_password else None
        if password is None and self.redis_password_file is not None:
            password = read_secret(self.redis_password_file, "ACTIONSTREAM_REDIS_PASSWORD_FILE")
        for field in ("redis_url", "broker_url"):
            setattr(self, field, with_credentials(getattr(self, field), self.redis_username, password,
                                                  self.redis_ca_file))
        return self

    @property
    def redis_target(self) -> str:
        """The Redis to connect to: ``redis_url``, else :data:`DEFAULT_REDIS_URL` (``redis_url``
        stays None then, which tells ``up`` to embed a server)."""
        return self.redis_url or DEFAULT_REDIS_URL


class ProcessSettings(_Group):
    """What every process has: its folders, mode, log level and metrics endpoint."""

    models_dir: Path = Field(default_factory=_user_cache_dir)
    shared_dir: Optional[Path] = None  # ../shared beside the checkout, when present
    # event history and archive: data_dir holds the SQLite file, snapshots and segments by default
    data_dir: Path = Field(default_factory=_user_data_dir)
    mode: Mode = "live"
    log_level: str = "INFO"
    metrics_port: int = Field(0, ge=0, le=65535)  # Prometheus /metrics on this port; 0: off
    metrics_host: str = "127.0.0.1"  # where /metrics listens (0.0.0.0 in containers)


class ProducerSettings(_Group):
    """The producer (producer/): the frames it writes and how far it lets readers fall behind."""

    frame_width: int = Field(0, ge=0, le=8192)  # 0: keep the source width
    jpeg_quality: int = Field(90, ge=10, le=100)
    live_maxlen: int = Field(500, ge=10)  # frame stream length in live mode (MAXLEN ~)
    replay_max_lag: int = Field(120, ge=1)  # replay: producer waits beyond this many unread
    # the producer's frames confirmed durable as the events are (redis_wait_replicas, redis_wait_aof,
    # redis_wait_ms); unconfirmed: written again and confirmed again, never skipped
    durable_frames: bool = False


class WorkerSettings(_Group):
    """The stream-consumer loop of the stages (shared/worker.py): batches, leases, dead letters."""

    batch_per_camera: int = Field(8, ge=1, le=1000)
    max_batch: int = Field(64, ge=1, le=10000)  # entries per batch over all cameras
    block_ms: int = Field(200, ge=1, le=60000)
    lease_ttl_s: float = Field(10.0, gt=0.5)
    max_cameras: int = Field(64, ge=1)
    deadletter_maxlen: int = Field(10000, ge=10)


class PoseSettings(_Group):
    """The pose worker (workers/pose/); ``providers`` and ``threads`` serve every onnxruntime
    session (the action model's too)."""

    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    threads: int = Field(0, ge=0, le=256)
    pose_model: PoseModelName = "movenet"  # the names of shared.posemodels
    # movenet's input, the frame's longer side in pixels (a multiple of 32 is cheapest; None: 256);
    # smaller is faster and finds small people less well (docs/benchmarks.md, input size)
    pose_input_size: Optional[int] = Field(None, ge=64, le=1024)
    max_lag_s: float = Field(2.0, gt=0)  # live: frames older than this are skipped
    skeleton_maxlen: int = Field(3000, ge=300)  # keeps a window for takeovers
    snapshot_frames: int = Field(150, ge=0, le=10000)  # recent frames kept per camera (0: none)
    # motion gating (workers/pose/motion.py): the model runs where something moves, and at least
    # every motion_keyframe_s seconds; a camera file's ``motion:`` overrides these per camera
    motion_gating: bool = False
    motion_threshold: float = Field(0.002, ge=0, lt=1)  # the share of the frame that must change
    motion_keyframe_s: float = Field(1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _input_size_for_movenet(self) -> "PoseSettings":
        if self.pose_input_size is not None and not self.pose_model.startswith("movenet"):
            raise ValueError(f"ACTIONSTREAM_POSE_INPUT_SIZE={self.pose_input_size} applies to movenet "
                             f"only, not ACTIONSTREAM_POSE_MODEL={self.pose_model}")
        return self


class ActionSettings(_Group):
    """The action worker (workers/action/): its model, windows and alert rule."""

    action_model: Optional[Path] = None  # None: the fall model shipped in the package
    stride: int = Field(15, ge=1)  # steps at the model card's fps (30: 0.5 s), not source frames
    min_frames: int = Field(32, ge=4)  # steps at the card's fps
    alert_labels: list[str] = ["falling", "fallen"]
    # chosen on the fall model's cross-validation (README: The fall model): <= 1 false alert/hour
    alert_threshold: float = Field(0.8, ge=0, le=1)
    alert_consecutive: int = Field(3, ge=1)
    alert_cooldown_s: float = Field(10.0, ge=0)
    fallen_after_s: float = Field(10.0, gt=0)  # source seconds down after `falling` -> `fallen`
    # `falling` is raised only when the window ends with the person down (workers.action.confirm)
    confirm_falls: bool = True
    events_maxlen: int = Field(100000, ge=100)


class AlertSettings(_Group):
    """The alert service (workers/alerting/): its consumer, webhooks and MQTT."""

    # alert forwarder: a stable consumer name (a restart finds its own pending events) and
    # the idle time after which another consumer's pending events are claimed
    alerts_consumer: str = Field("alerts-1", min_length=1, max_length=200)
    alerts_claim_idle_s: float = Field(30.0, gt=0)
    # alert targets and rules (workers/alerting): a YAML file; the default webhook secret
    # (whsec_<base64>, Standard Webhooks); MQTT for every event without a file
    alerts_config: Optional[Path] = None
    webhook_secret: Optional[SecretStr] = None
    # webhook delivery (Standard Webhooks): the waits before each retry of a failed delivery
    # (seconds; the spec's schedule, about 27 hours in all), then the dead letters; an endpoint
    # failing that long with no success in between (or answering 410 Gone) is disabled; a
    # Retry-After longer than the schedule's wait is honoured up to webhook_max_retry_after_s
    webhook_retry_schedule_s: list[Annotated[float, Field(ge=0, le=7 * 86400)]] = [
        5, 300, 1800, 7200, 18000, 36000, 36000]
    webhook_disable_after_s: float = Field(86400.0, gt=0)
    webhook_max_retry_after_s: float = Field(86400.0, ge=0)
    mqtt_url: Optional[str] = None  # mqtt://[USER:PASSWORD@]HOST[:PORT], mqtts:// for TLS
    mqtt_topic_prefix: str = "actionstream"
    mqtt_end_after_s: float = Field(30.0, gt=0)  # an MQTT incident ends this long after its last event
    # Home Assistant MQTT discovery (a binary sensor per camera and alert label) and its prefix
    mqtt_discovery: bool = True
    mqtt_discovery_prefix: str = Field("homeassistant", min_length=1, pattern=r"^[^#+\s]+$")


class JobsSettings(_Group):
    """Replay jobs and housekeeping (workers/jobs/)."""

    # replay jobs (workers/jobs): a job whose worker died is handed to another worker after
    # this long (the Redis broker's visibility timeout; a running job keeps it with its lease)
    jobs_visibility_timeout_s: float = Field(3600.0, gt=1)
    # housekeeping (workers/jobs/housekeeping.py, every housekeeping_interval_s in each jobs worker; 0:
    # off): finished replays purged this long after they ended, dead letters older than this
    # trimmed, a consumer idle this long with nothing pending (a dead worker's) removed from its group
    housekeeping_interval_s: float = Field(300.0, ge=0)
    replay_retention_s: float = Field(7 * 86400.0, ge=0)
    deadletter_max_age_s: float = Field(30 * 86400.0, gt=0)
    dead_consumer_idle_s: float = Field(86400.0, gt=0)


class HistorySettings(_Group):
    """The event history (workers/history/)."""

    # event history (workers/history): SQL by URL (None: SQLite at data_dir/actionstream.db),
    # snapshots beside it (None: data_dir/snapshots), retention by age
    history_url: Optional[str] = None  # sqlite:///PATH or postgresql://USER@HOST/DB
    snapshots_dir: Optional[Path] = None
    history_retention_days: float = Field(30.0, gt=0)
    history_consumer: str = Field("history-1", min_length=1, max_length=200)


class ArchiveSettings(_Group):
    """The archive (workers/archive/)."""

    # archive (workers/archive): segment files per camera, kind and slice of capture time under
    # archive_dir (None: data_dir/archive); retention by age and by size per camera
    archive_dir: Optional[Path] = None
    archive_segment_s: int = Field(60, ge=1, le=86400)
    archive_max_age_h: float = Field(168.0, gt=0)
    archive_max_bytes: int = Field(50 * 1024**3, gt=0)  # per camera, all kinds together


class WebSettings(_Group):
    """The web page (workers/web/)."""

    # the web page (workers/web): HTTPS with this certificate and key; a Secure session cookie
    # without them (behind a TLS proxy); failed logins allowed per client address and minute;
    # how long a session lasts; the first admin's password (else a random one, shown once)
    web_tls_cert: Optional[Path] = None
    web_tls_key: Optional[Path] = None
    web_secure_cookie: bool = False
    web_login_attempts: int = Field(5, ge=1, le=1000)
    web_session_hours: float = Field(168.0, gt=0, le=24 * 365)
    web_admin_password: Optional[SecretStr] = None
    web_admin_password_file: Optional[Path] = None


# the groups of Settings, one per service (a field is in exactly one: tests/shared/test_settings.py)
SETTINGS_GROUPS: tuple[type[_Group], ...] = (
    RedisSettings, ProcessSettings, ProducerSettings, WorkerSettings, PoseSettings, ActionSettings,
    AlertSettings, JobsSettings, HistorySettings, ArchiveSettings, WebSettings)


# the bases last group first: pydantic takes the fields from the last base first
class Settings(WebSettings, ArchiveSettings, HistorySettings, JobsSettings, AlertSettings, ActionSettings,
               PoseSettings, WorkerSettings, ProducerSettings, ProcessSettings, RedisSettings):
    """Process-wide settings; every field can be set as ``ACTIONSTREAM_<FIELD>``. The fields
    are grouped by service (:data:`SETTINGS_GROUPS`); ``settings.<field>`` reads any of them."""

    model_config = SettingsConfigDict(env_prefix="ACTIONSTREAM_", extra="ignore")


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides (None values are ignored)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_explain_settings(exc)) from None
    except EnvParseError as exc:  # a list/dict field whose variable is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"ACTIONSTREAM_{field.group(1).upper()}" if field else "an ACTIONSTREAM_* variable"
        raise SettingsError(f"{name} must be a JSON list, e.g. {name}='[\"CPUExecutionProvider\"]' "
                            "(quotes included); fix or unset it") from None


def problems(head: str, items: list[str], tail: str = "") -> str:
    """``head`` and its problems: one problem on one line, ``head: problem tail``; several,
    one per line (``head (N problems tail):`` then ``  - problem`` lines), never run together."""
    if len(items) == 1:
        return f"{head}: {items[0]}" + (f" {tail}" if tail else "")
    inner = f"{len(items)} problems" + (f"; {tail.strip('()')}" if tail else "")
    return "\n".join([f"{head} ({inner}):", *(f"  - {item}" for item in items)])


def _explain_settings(exc: ValidationError) -> str:
    """Each bad field as its ACTIONSTREAM_* variable, its value and the problem; one line
    for one bad field, a line each for several."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if field == "redis_url":  # never echo a password; the option has the same name
            parts.append(f"ACTIONSTREAM_REDIS_URL (or --redis): {msg}")
        elif field == "(root)":  # a check of several fields together: its message names them
            parts.append(msg)
        elif field in ("webhook_secret", "mqtt_url", "redis_password", "web_admin_password",
                       "broker_url"):  # secrets, or URLs that may hold one
            parts.append(f"ACTIONSTREAM_{field.upper()}: {msg}")
        else:
            parts.append(f"ACTIONSTREAM_{field.upper()}={err.get('input')!r}: {msg}")
    return problems("invalid setting" + ("s" if len(parts) > 1 else ""), parts,
                    "(fix the variable or option, or unset it)")


class CameraRules(BaseModel):
    """A camera's own alert rule (camera file ``rules:``), over the settings' defaults: a
    camera that watches a sofa or a bed may want a higher ``threshold``, or no confirmation."""

    model_config = {"extra": "forbid"}

    threshold: Optional[float] = Field(None, ge=0, le=1)
    consecutive: Optional[int] = Field(None, ge=1)
    confirm_falls: Optional[bool] = None


class CameraMotion(BaseModel):
    """A camera's own motion gating (camera file ``motion:``), over the settings' defaults:
    ``masks`` are polygons of ``[x, y]`` points in 0..1 of the frame where motion is ignored
    (a TV, a window with trees)."""

    model_config = {"extra": "forbid"}

    enabled: Optional[bool] = None
    threshold: Optional[float] = Field(None, ge=0, lt=1)
    pixel_delta: Optional[int] = Field(None, ge=1, le=255)
    keyframe_s: Optional[float] = Field(None, gt=0, le=60)
    masks: list[list[tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]]] = []

    @field_validator("masks")
    @classmethod
    def _polygons(cls, masks):
        for i, polygon in enumerate(masks):
            if len(polygon) < 3:
                raise ValueError(f"mask {i} has {len(polygon)} points; a polygon needs at least 3")
        return masks


class Camera(BaseModel):
    """One camera of a camera file."""

    model_config = {"extra": "forbid"}

    id: str
    source: str
    crop: Optional[tuple[int, int, int, int]] = None  # x, y, w, h in source pixels
    fps: Optional[float] = Field(None, gt=0, le=1000)
    width: Optional[int] = Field(None, ge=16, le=8192)
    mode: Optional[Mode] = None
    rules: Optional[CameraRules] = None
    motion: Optional[CameraMotion] = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return check_camera_id(value)

    @field_validator("crop")
    @classmethod
    def _valid_crop(cls, value):
        if value is not None and (value[2] <= 0 or value[3] <= 0 or value[0] < 0 or value[1] < 0):
            raise ValueError("crop must be X,Y,W,H with X,Y >= 0 and W,H > 0")
        return value


class CameraFile(BaseModel):
    model_config = {"extra": "forbid"}

    cameras: list[Camera] = Field(min_length=1)

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cams: list[Camera]) -> list[Camera]:
        ids = [c.id for c in cams]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique; repeated: {dup}")
        return cams


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """``"X,Y,W,H"`` -> a tuple; raises SettingsError naming the problem."""
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise SettingsError(f"--crop must be X,Y,W,H integers, got {text!r}") from None
    if len(parts) != 4 or parts[2] <= 0 or parts[3] <= 0 or min(parts) < 0:
        raise SettingsError(f"--crop must be X,Y,W,H with W,H > 0, got {text!r}")
    return parts  # type: ignore[return-value]


def read_yaml(path: str | Path, what: str):
    """The YAML document in ``path``; :class:`SettingsError` naming ``what`` and the file when
    it cannot be read or parsed."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SettingsError(f"{what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{what} {path} is not valid YAML: {exc}") from None


CAMERA_FILE_SHAPE = ("a `cameras:` list, each camera with at least an `id:` and a `source:`, e.g.\n"
                     "  cameras:\n    - {id: cam-1, source: rtsp://host/stream}\n"
                     "  (deploy/cameras.example.yaml has every field)")


def load_camera_file(path: str | Path) -> list[Camera]:
    path = Path(path)
    raw = read_yaml(path, "camera file")
    if raw is None:
        raise SettingsError(f"camera file {path} is empty; it should contain {CAMERA_FILE_SHAPE}")
    if not isinstance(raw, dict):
        what = {list: "a list", str: "a string"}.get(type(raw), f"a {type(raw).__name__}")
        raise SettingsError(f"camera file {path} holds {what}, not a mapping; it should contain "
                            f"{CAMERA_FILE_SHAPE}")
    try:
        return CameraFile.model_validate(raw).cameras
    except ValidationError as exc:
        raise SettingsError(_explain(exc, f"camera file {path}")) from None


def _explain(exc: ValidationError, where: str) -> str:
    """Each bad field: its dotted location and the problem (:func:`problems`)."""
    items = [f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg'].removeprefix('Value error, ')}"
             for err in exc.errors()]
    return problems(f"{where} is invalid", items)


def find_shared_dir(settings: Settings | None = None) -> Path | None:
    """``../shared`` beside the checkout (or ACTIONSTREAM_SHARED_DIR) when it exists."""
    if settings is not None and settings.shared_dir is not None:
        return settings.shared_dir if settings.shared_dir.is_dir() else None
    here = Path(__file__).resolve().parent.parent  # the repo root in a checkout
    for candidate in (Path.cwd().parent / "shared", here.parent / "shared"):
        if (candidate / "models").is_dir():
            return candidate
    return None


def parse_rules(text: Optional[str], flag: str = "--rules",
                example: str = '{"threshold": 0.7}') -> Optional[dict]:
    """``--rules JSON`` -> the fields of :class:`CameraRules` (validated with the camera); with
    ``flag="--motion"``, those of :class:`CameraMotion`."""
    if not text:
        return None
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"{flag} is not JSON ({exc}): give e.g. '{example}'") from None
    if not isinstance(given, dict):
        raise SettingsError(f"{flag} must be a JSON object, e.g. '{example}'")
    return given


def make_camera(**fields) -> Camera:
    """A validated :class:`Camera` from keyword fields (None values are left out)."""
    try:
        return Camera(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(_explain(exc, f"camera {fields.get('id')!r}")) from None
