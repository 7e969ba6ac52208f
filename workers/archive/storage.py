"""Where the archive's files live: one small interface, :class:`Storage`, and a local directory.

Names are relative, ``/``-separated paths (``cam-7/frames/1700000000-1700000060.seg``).
The archiver only appends, syncs, reads, lists, truncates and deletes; an object store
(S3/MinIO through boto3) fits behind the same methods with a local spool for the
segment being written and an upload once a segment is closed (see the README).

:class:`LocalStorage` appends with plain ``os.write`` calls; :meth:`LocalStorage.sync`
fsyncs the file and, the first time, every directory the file created, so a record is
on disk (and findable) when ``sync`` returns. A failed append is cut back to where it
began (``ftruncate``), so a full disk leaves no torn record behind.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from shared.errors import UserError

log = logging.getLogger(__name__)

MAX_OPEN = 128  # append handles kept open (least recently used ones are closed)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class ArchiveError(UserError, RuntimeError):
    """The archive cannot be used as asked (a second writer, a bad name, no such data)."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int


class Storage(Protocol):
    """What the archive needs from a store of files."""

    def append(self, name: str, data: bytes) -> int:
        """Append ``data`` to ``name`` (created when absent); the offset it starts at."""

    def sync(self, name: str) -> None:
        """Return once everything appended to ``name`` is durable."""

    def read(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        """``length`` bytes of ``name`` from ``offset`` (all to its end when None);
        FileNotFoundError when ``name`` is absent."""

    def size(self, name: str) -> int:
        """The size of ``name``; 0 when absent."""

    def list(self, prefix: str = "") -> list[StoredFile]:
        """Every file whose name starts with ``prefix``, sorted by name."""

    def truncate(self, name: str, size: int) -> None:
        """Cut ``name`` to ``size`` bytes (a torn tail after a crash)."""

    def delete(self, name: str) -> None:
        """Remove ``name`` (no error when absent)."""

    def close(self) -> None:
        """Release what is held (open files, the writer's lock)."""


def check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ArchiveError(f"archive file name {name!r} is not a plain relative path")
    return name


class LocalStorage:
    """:class:`Storage` in a local directory. ``writer``: take the directory's lock, so
    that two archivers never write the same files (:class:`ArchiveError` when held)."""

    def __init__(self, root: str | os.PathLike, writer: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._new_dirs: dict[str, list[Path]] = {}  # file -> directories to fsync at its first sync
        self._lock_fd: Optional[int] = None
        if writer:
            self._lock()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _lock(self) -> None:
        fd = os.open(self.root / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ArchiveError(f"another archiver writes to {self.root} (its lock is held); run one "
                               "archiver per archive directory") from None
        self._lock_fd = fd

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is not None:
            self._fds.move_to_end(name)
            return fd
        path = self.path(name)
        made = _missing_dirs(path.parent, self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        dirs = ([] if existed else [path.parent]) + made  # their entries must reach the disk too
        if dirs:
            self._new_dirs.setdefault(name, []).extend(dirs)
        self._fds[name] = fd
        while len(self._fds) > MAX_OPEN:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def append(self, name: str, data: bytes) -> int:
        fd = self._fd(name)
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            try:
                os.ftruncate(fd, start)  # no torn record left behind
            except OSError as cut:
                log.warning("archive %s: could not cut %s back after a failed write: %s", self.root, name,
                            cut)
            raise
        return start

    def sync(self, name: str) -> None:
        fd = self._fds.get(name)
        if fd is not None:
            os.fsync(fd)
        else:  # closed since (least recently used): fsync reaches the file's pages all the same
            own = os.open(self.path(name), os.O_RDONLY)
            try:
                os.fsync(own)
            finally:
                os.close(own)
        for directory in dict.fromkeys(self._new_dirs.pop(name, [])):
            _fsync_dir(directory)

    def read(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        with open(self.path(name), "rb") as fh:
            fh.seek(offset)
            return fh.read() if length is None else fh.read(length)

    def size(self, name: str) -> int:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return 0

    def list(self, prefix: str = "") -> list[StoredFile]:
        out = []
        top = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root  # only under it
        for dirpath, _dirs, files in os.walk(top):
            rel = os.path.relpath(dirpath, self.root)
            for f in files:
                name = f if rel == "." else f"{rel}/{f}"
                if name.startswith(prefix) and not f.startswith("."):
                    try:
                        out.append(StoredFile(name, os.stat(os.path.join(dirpath, f)).st_size))
                    except FileNotFoundError:  # deleted meanwhile
                        continue
        return sorted(out, key=lambda s: s.name)

    def truncate(self, name: str, size: int) -> None:
        os.truncate(self.path(name), size)

    def delete(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)
        self._new_dirs.pop(name, None)
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _missing_dirs(directory: Path, root: Path) -> list[Path]:
    """The parents of each directory of ``directory`` (up to ``root``) that does not exist yet:
    an entry in each must be made durable."""
    out = []
    while directory != root and not directory.exists():
        out.append(directory.parent)
        directory = directory.parent
    return out


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def archive_dir(settings) -> Path:
    if settings.archive_dir is not None:
        return Path(settings.archive_dir)
    return Path(settings.data_dir) / "archive"


def open_storage(settings, writer: bool = False) -> Storage:
    """The archive's storage per ``settings`` (a local directory: ``archive_dir``, by default
    ``<data_dir>/archive``). ``writer``: the archiver's, holding the directory's lock."""
    return LocalStorage(archive_dir(settings), writer=writer)
