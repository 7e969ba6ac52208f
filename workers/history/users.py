"""The web page's users, in the event-history database beside the events.

Three tables: ``web_users`` (name, role, an argon2 password hash), ``web_credentials``
(sessions and bearer tokens, each stored as the SHA-256 of its random secret, so a copy of
the database opens no session) and ``web_keys`` (the key that signs the session cookie,
made once, shared by every web process on the same database).

Roles: ``admin`` (everything) and ``viewer`` (the page, events, snapshots).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Optional

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared import errors
from workers.history.store import HistoryError, history_location, normalise_url, redacted, sqlite_path

log = logging.getLogger(__name__)

ROLES = ("admin", "viewer")
MIN_PASSWORD = 8
SESSION_TTL_S = 7 * 86400.0
TOKEN_PREFIX = "ast_"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("not a password of anyone")  # a missing user costs a verify too


class UserError(errors.UserError, ValueError):
    """A user name, role or password that cannot be used (the text says why)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"user name {str(name)[:80]!r} is not 1-64 letters, digits or '_.@-'")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def new_password() -> str:
    """A random password (20 URL-safe characters, 120 bits)."""
    return secrets.token_urlsafe(15)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def _tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    users = sa.Table(
        "web_users", metadata,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("changed", sa.Float, nullable=False))
    creds = sa.Table(
        "web_credentials", metadata,
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False, index=True),
        sa.Column("kind", sa.String(8), nullable=False),  # session | token
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=True))  # None: until revoked (tokens)
    keys = sa.Table(
        "web_keys", metadata,
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False))
    return users, creds, keys


class UserStore:
    """Users, sessions and tokens in the SQL database at ``url`` (SQLite or PostgreSQL)."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.url = normalise_url(url)
        path = sqlite_path(self.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        if path is not None:
            sa.event.listen(self.engine, "connect", _sqlite_busy)
        self.metadata = sa.MetaData()
        self.users, self.creds, self.keys = _tables(self.metadata)
        for attempt in (1, 2):  # another process creating the tables at the same moment loses once
            try:
                self.metadata.create_all(self.engine)
                break
            except sa.exc.OperationalError as exc:
                if attempt == 2 or "already exists" not in str(exc):
                    self.engine.dispose()
                    raise HistoryError(f"cannot open the users of {redacted(self.url)}: "
                                       f"{str(exc.orig).strip().splitlines()[0]}") from None
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise

    @classmethod
    def from_settings(cls, settings) -> "UserStore":
        return cls(history_location(settings)[0])

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- users

    def add(self, name: str, role: str, password: str) -> User:
        check_name(name)
        check_role(role)
        check_password(password)
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(self.users).values(name=name, role=role, created=now, changed=now,
                                                          password_hash=_HASHER.hash(password)))
        except sa.exc.IntegrityError:
            raise UserError(f"user {name!r} exists already (actionstream users passwd {name})") from None
        log.info("web users: %s added (%s)", name, role)
        return User(name, role)

    def get(self, name: str) -> Optional[User]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.users.c.role).where(self.users.c.name == name)).first()
        return User(name, row[0]) if row is not None else None

    def set_password(self, name: str, password: str) -> None:
        """A new password for ``name``; its open sessions end (its tokens stay)."""
        check_password(password)
        u, c = self.users, self.creds
        with self.engine.begin() as conn:
            done = conn.execute(sa.update(u).where(u.c.name == name).values(
                password_hash=_HASHER.hash(password), changed=self.clock())).rowcount
            conn.execute(sa.delete(c).where(c.c.user == name, c.c.kind == "session"))
        if not done:
            raise UserError(f"no user {name!r} (actionstream users list)")

    def set_role(self, name: str, role: str) -> None:
        check_role(role)
        with self.engine.begin() as conn:
            if not conn.execute(sa.update(self.users).where(self.users.c.name == name)
                                .values(role=role)).rowcount:
                raise UserError(f"no user {name!r} (actionstream users list)")

    def delete(self, name: str) -> None:
        """Remove ``name`` with its sessions and tokens."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.creds).where(self.creds.c.user == name))
            if not conn.execute(sa.delete(self.users).where(self.users.c.name == name)).rowcount:
                raise UserError(f"no user {name!r} (actionstream users list)")
        log.info("web users: %s deleted", name)

    def list(self) -> list[dict]:
        """Every user: name, role, created, and how many tokens and open sessions it has."""
        u, c = self.users, self.creds
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(u.c.name, u.c.role, u.c.created).order_by(u.c.name)).all()
            held = conn.execute(sa.select(c.c.user, c.c.kind, sa.func.count()).where(
                sa.or_(c.c.expires.is_(None), c.c.expires > now)).group_by(c.c.user, c.c.kind)).all()
        counts = {(user, kind): n for user, kind, n in held}
        return [{"name": n, "role": r, "created": t, "tokens": counts.get((n, "token"), 0),
                 "sessions": counts.get((n, "session"), 0)} for n, r, t in rows]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.users)).scalar())

    def verify(self, name: str, password: str) -> Optional[User]:
        """The user when ``password`` is its password, else None (an unknown name takes as
        long as a wrong password)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.users.c.role, self.users.c.password_hash)
                               .where(self.users.c.name == name)).first()
        try:
            _HASHER.verify(row[1] if row else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if _HASHER.check_needs_rehash(row[1]):
            with self.engine.begin() as conn:
                conn.execute(sa.update(self.users).where(self.users.c.name == name)
                             .values(password_hash=_HASHER.hash(password)))
        return User(name, row[0])

    # ---------------------------------------------------------------- sessions, tokens

    def _credential(self, name: str, kind: str, secret: str, label: Optional[str],
                    ttl_s: Optional[float]) -> str:
        now = self.clock()
        if self.get(name) is None:
            raise UserError(f"no user {name!r} (actionstream users list)")
        with self.engine.begin() as conn:
            conn.execute(sa.insert(self.creds).values(digest=_digest(secret), user=name, kind=kind,
                                                      label=label, created=now,
                                                      expires=now + ttl_s if ttl_s else None))
        return secret

    def new_session(self, name: str, ttl_s: float = SESSION_TTL_S) -> str:
        return self._credential(name, "session", secrets.token_urlsafe(32), None, ttl_s)

    def new_token(self, name: str, label: Optional[str] = None) -> str:
        """A bearer token for ``name`` (shown once; valid until revoked)."""
        return self._credential(name, "token", TOKEN_PREFIX + secrets.token_urlsafe(32), label, None)

    def resolve(self, secret: str) -> Optional[User]:
        """The user of a session id or token still valid, else None."""
        u, c = self.users, self.creds
        stmt = sa.select(u.c.name, u.c.role, c.c.expires).join(c, c.c.user == u.c.name).where(
            c.c.digest == _digest(secret))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None or (row[2] is not None and row[2] <= self.clock()):
            return None
        return User(row[0], row[1])

    def end(self, secret: str) -> None:
        """End a session (or revoke one token)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.creds).where(self.creds.c.digest == _digest(secret)))

    def revoke_tokens(self, name: str) -> int:
        c = self.creds
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(c).where(c.c.user == name, c.c.kind == "token")).rowcount

    def purge_expired(self) -> int:
        c = self.creds
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(c).where(c.c.expires.is_not(None),
                                                   c.c.expires <= self.clock())).rowcount

    # ---------------------------------------------------------------- the cookie key

    def signing_key(self) -> str:
        """The key that signs session cookies: made by the first process to ask, then shared."""
        k = self.keys
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(k.c.value).where(k.c.name == "cookie")).first()
            if row is not None:
                return row[0]
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(k).values(name="cookie", value=secrets.token_urlsafe(48)))
        except sa.exc.IntegrityError:
            pass  # another process made it first: use that one
        with self.engine.connect() as conn:
            return conn.execute(sa.select(k.c.value).where(k.c.name == "cookie")).scalar_one()

    def rotate_signing_key(self) -> None:
        """A new cookie key: every session cookie signed with the old one is refused."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.keys).where(self.keys.c.name == "cookie"))
            conn.execute(sa.delete(self.creds).where(self.creds.c.kind == "session"))


def _sqlite_busy(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
