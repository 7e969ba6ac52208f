"""Helpers of the history tests: events, and the two databases the history is tested
against: SQLite in a temporary folder, and the local PostgreSQL (``ACTIONSTREAM_TEST_PG_URL``,
default postgresql://postgres@127.0.0.1:5432/test) in a schema of its own per test, dropped
afterwards; skipped with the reason when unreachable."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from shared.schemas import Event
from workers.history.store import normalise_url

PG_URL = os.environ.get("ACTIONSTREAM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A URL whose connections see only a fresh schema (search_path); the schema is dropped after."""
    engine = sa.create_engine(normalise_url(PG_URL), connect_args={"connect_timeout": 3})
    schema = f"actionstream_test_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable ({str(exc.orig).strip().splitlines()[0]}); "
                    "set ACTIONSTREAM_TEST_PG_URL to a server that trusts this user")
    try:
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@contextmanager
def database_url(backend: str, tmp: Path) -> Iterator[str]:
    """A URL of an empty history on ``backend`` (``sqlite`` or ``postgresql``)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'history.db'}"
        return
    with pg_schema_url() as url:
        yield url


def make_event(camera="cam-1", track=1, label="falling", frame_end=100, emitted_at=1_800_000_000.0,
               score=0.9) -> Event:
    return Event(camera=camera, track_id=track, label=label, label_index=1, score=score,
                 frame_start=max(0, frame_end - 60), frame_end=frame_end, ts_start=10.0, ts_end=12.0,
                 model="fall-stgcn", emitted_at=emitted_at)
