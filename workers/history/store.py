"""The event history: events in SQL (SQLAlchemy), their snapshots as JPEG files beside it.

SQLite in a file by default (``sqlite:///PATH``; WAL, so a reader such as the web page
never blocks the writer), PostgreSQL by URL (``postgresql://USER@HOST/DB``, driven by
psycopg 3). One row per event id: :meth:`EventStore.add` is an insert-or-ignore on the
primary key (``ON CONFLICT DO NOTHING`` on both), so a redelivered event never makes a
second row. A snapshot is written (atomically: a temporary file, then a rename) before
its row commits, so a row never names a missing file.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from shared.errors import UserError
from shared.keys import check_camera_id
from shared.schemas import Event

log = logging.getLogger(__name__)

SNAPSHOT_URL = "/snapshots/{id}.jpg"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
EVENT_COLUMNS = ("id", "camera", "track_id", "label", "label_index", "score", "frame_start",
                 "frame_end", "ts_start", "ts_end", "model", "emitted_at", "schema_version")


class HistoryError(UserError, ValueError):
    """A history URL that is not usable, or an event id not fit for a file name."""


def check_event_id(event_id: str) -> str:
    """``event_id`` when it is safe as a file name (letters, digits, ``_-``); else HistoryError."""
    if not isinstance(event_id, str) or not _SAFE_ID.match(event_id):
        raise HistoryError(f"event id {str(event_id)[:80]!r} is not 1-128 letters, digits, '_' or '-'")
    return event_id


INT32 = 2**31 - 1


def check_event(event: Event) -> Event:
    """``event`` when every field fits its column on both databases; HistoryError naming the
    field otherwise (a poison event is dead-lettered, never retried)."""
    check_event_id(event.id)
    try:
        check_camera_id(event.camera)
    except ValueError as exc:
        raise HistoryError(str(exc)) from None
    for name, most in (("label", 128), ("model", 256)):
        value = getattr(event, name)
        if not value or len(value) > most or "\x00" in value:
            raise HistoryError(f"event field {name!r} must be 1-{most} characters without NUL")
    for name in ("track_id", "label_index"):
        if not -INT32 <= getattr(event, name) <= INT32:
            raise HistoryError(f"event field {name!r} is outside the 32-bit range")
    for name in ("frame_start", "frame_end"):
        if not 0 <= getattr(event, name) < 2**63:
            raise HistoryError(f"event field {name!r} is outside 0..2^63")
    return event


def normalise_url(url: str) -> str:
    """``url`` with the driver SQLAlchemy should use: psycopg 3 for plain PostgreSQL URLs."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise HistoryError(f"history URL is not a database URL ({exc}); expected sqlite:///PATH or "
                           "postgresql://USER@HOST/DB") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise HistoryError(f"history URL: backend {parsed.get_backend_name()!r} is not supported; "
                           "use sqlite:///PATH or postgresql://USER@HOST/DB")
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Optional[Path]:
    """The file of a SQLite URL, or None (another backend, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name, metadata,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("camera", sa.String(64), nullable=False),
        sa.Column("track_id", sa.Integer, nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("label_index", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("frame_start", sa.BigInteger, nullable=False),
        sa.Column("frame_end", sa.BigInteger, nullable=False),
        sa.Column("ts_start", sa.Float, nullable=False),
        sa.Column("ts_end", sa.Float, nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("emitted_at", sa.Float, nullable=False, index=True),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("snapshot", sa.Boolean, nullable=False, default=False),
        sa.Column("stored_at", sa.Float, nullable=False),
        sa.Index(f"ix_{name}_camera_label_time", "camera", "label", "emitted_at"),
    )


class EventStore:
    """Events by id in SQL, snapshots in ``snapshots_dir`` (default: beside a SQLite file,
    else ``./snapshots``); ``table``: the table's name."""

    def __init__(self, url: str, snapshots_dir: Optional[Path | str] = None, table: str = "events",
                 clock: Callable[[], float] = time.time, busy_timeout_s: float = 10.0) -> None:
        self.url = normalise_url(url)
        path = sqlite_path(self.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        if snapshots_dir is None:
            snapshots_dir = (path.parent if path is not None else Path.cwd()) / "snapshots"
        self.snapshots_dir = Path(snapshots_dir)
        self.clock = clock
        postgres = make_url(self.url).get_backend_name() == "postgresql"
        connect_args = {"connect_timeout": 10} if postgres else {}
        self.engine = sa.create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
        if path is not None:
            sa.event.listen(self.engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout_s))
        self.metadata = sa.MetaData()
        self.table = _table(self.metadata, table)
        self._create_table()
        log.info("event history in %s (table %s), snapshots in %s", redacted(self.url), table,
                 self.snapshots_dir)

    def _create_table(self) -> None:
        """Create the table when missing; a second process creating it at the same moment (the
        recorder and the web page, first start on PostgreSQL) loses once, then finds it."""
        for attempt in (1, 2):
            try:
                self.metadata.create_all(self.engine)
                return
            except sa.exc.DBAPIError as exc:
                unreachable = isinstance(exc, sa.exc.OperationalError) and "already exists" not in str(exc)
                if attempt == 1 and not unreachable:
                    continue  # the other one created it (PostgreSQL: a unique violation; SQLite: exists)
                if not unreachable:
                    raise
                self.engine.dispose()
                raise HistoryError(f"cannot open the event history at {redacted(self.url)}: "
                                   f"{str(exc.orig).strip().splitlines()[0]}") from None

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "EventStore":
        """The store ``settings`` name (``history_url``, ``snapshots_dir``, ``data_dir``)."""
        url, snaps = history_location(settings)
        return cls(url, snaps, **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- writing

    def add(self, event: Event, snapshot: Optional[bytes] = None) -> bool:
        """Store ``event`` (and its JPEG ``snapshot``); False when its id is already stored."""
        check_event(event)
        if snapshot is not None:
            self._write_snapshot(event.id, snapshot)
        row = {name: getattr(event, name) for name in EVENT_COLUMNS}
        row.update(snapshot=snapshot is not None, stored_at=self.clock())
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(self.table).values(**row).on_conflict_do_nothing(index_elements=["id"])
        stmt = stmt.returning(self.table.c.id)  # a row back only when inserted (rowcount varies by driver)
        t = self.table
        with self.engine.begin() as conn:
            added = conn.execute(stmt).first() is not None
            if not added and snapshot is not None:  # stored before without its picture
                conn.execute(sa.update(t).where(t.c.id == event.id, ~t.c.snapshot).values(snapshot=True))
        if added:
            log.debug("camera %s track %d: event %s stored", event.camera, event.track_id, event.id)
        return added

    def _write_snapshot(self, event_id: str, jpeg: bytes) -> None:
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.snapshots_dir, prefix=f".{event_id}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it 0600; the web page serves it
            with os.fdopen(fd, "wb") as f:
                f.write(jpeg)
            os.replace(tmp, self.snapshots_dir / f"{event_id}.jpg")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def purge(self, older_than_s: float) -> int:
        """Delete events emitted more than ``older_than_s`` ago, and their snapshots; how many."""
        cutoff = self.clock() - older_than_s
        t = self.table
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(sa.select(t.c.id).where(t.c.emitted_at < cutoff,
                                                                       t.c.snapshot))]
            deleted = conn.execute(sa.delete(t).where(t.c.emitted_at < cutoff)).rowcount
        for event_id in ids:
            (self.snapshots_dir / f"{event_id}.jpg").unlink(missing_ok=True)
        if deleted:
            log.info("history: purged %d event(s) older than %.0f s", deleted, older_than_s)
        return deleted

    # ---------------------------------------------------------------- reading

    def query(self, since: Optional[float] = None, camera: Optional[str] = None,
              label: Optional[str] = None, limit: int = 100, until: Optional[float] = None) -> list[dict]:
        """Events newest first (by ``emitted_at``), filtered; dicts of the Event fields plus
        ``snapshot`` (a URL path such as ``/snapshots/<id>.jpg``, or None)."""
        t = self.table
        stmt = sa.select(t).order_by(t.c.emitted_at.desc(), t.c.id).limit(max(0, int(limit)))
        if since is not None:
            stmt = stmt.where(t.c.emitted_at >= since)
        if until is not None:
            stmt = stmt.where(t.c.emitted_at < until)
        if camera is not None:
            stmt = stmt.where(t.c.camera == camera)
        if label is not None:
            stmt = stmt.where(t.c.label == label)
        with self.engine.connect() as conn:
            return [_row_dict(r._mapping) for r in conn.execute(stmt)]

    def get(self, event_id: str) -> Optional[dict]:
        """One event by id (the dict of :meth:`query`), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table).where(self.table.c.id == event_id)).first()
        return _row_dict(row._mapping) if row is not None else None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar())

    def snapshot_path(self, event_id: str) -> Optional[Path]:
        """The snapshot file of ``event_id`` when it exists; None otherwise (an unsafe id too)."""
        try:
            check_event_id(event_id)
        except HistoryError:
            return None
        path = self.snapshots_dir / f"{event_id}.jpg"
        return path if path.is_file() else None

    def drop(self) -> None:
        """Drop the table (tests)."""
        self.table.drop(self.engine, checkfirst=True)


def _row_dict(row: Any) -> dict:
    out = {name: row[name] for name in EVENT_COLUMNS}
    out["snapshot"] = SNAPSHOT_URL.format(id=row["id"]) if row["snapshot"] else None
    return out


def _sqlite_pragmas(busy_timeout_s: float, dbapi_conn, _record) -> None:
    """Busy timeout, then WAL. Switching a new file to WAL can fail "database is locked"
    at once, without waiting, while another process switches it too: tried again."""
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    cur.close()


def history_location(settings) -> tuple[str, Path]:
    """(database URL, snapshots folder) from settings: ``history_url`` or SQLite at
    ``data_dir/actionstream.db``; ``snapshots_dir`` or ``data_dir/snapshots``."""
    data = Path(settings.data_dir).expanduser()
    url = settings.history_url or f"sqlite:///{data / 'actionstream.db'}"
    snaps = Path(settings.snapshots_dir).expanduser() if settings.snapshots_dir else data / "snapshots"
    return url, snaps


def store_exists(settings) -> bool:
    """Whether ``settings`` name a history to read: a server URL, or a SQLite file that exists."""
    url, _ = history_location(settings)
    path = sqlite_path(normalise_url(url))
    return path is None or path.is_file()
