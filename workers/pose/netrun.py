"""Running a pose network: frames prepared off the model's thread, and one ``session.run``
of a one-input, one-output network, with IO binding on CUDA.

:class:`Prepared` is a frame made ready for the network (resized, converted, laid out) by
a model's ``prepare``, which the pose worker calls in its decoding threads, so that the
thread calling the model does nothing but run it and decode its outputs.

On the CUDA execution provider a plain ``session.run`` allocates the output on the device
and copies it back through onnxruntime's generic path on every call; with IO binding the
input is bound from host memory (one upload), the output is bound on the device and copied
back once. On the CPU provider IO binding gains nothing, so it is off there (``io_binding``
= None chooses by the session's first provider; True forces it, which the tests use to
check that both paths give the same outputs on the CPU).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

CUDA = "CUDAExecutionProvider"


class Prepared(NamedTuple):
    """One frame's network input and what maps the outputs back to the frame."""

    tensor: np.ndarray
    placement: Any  # MoveNet: its Letterbox; mobilenet_thin: None (stretched to the input)
    width: int  # of the source frame
    height: int


def wants_io_binding(session) -> bool:
    """IO binding pays where the session runs on CUDA."""
    return session.get_providers()[0] == CUDA


class SessionRunner:
    """``runner(x)`` -> the network's one output for input ``x`` (a numpy array)."""

    def __init__(self, session, io_binding: Optional[bool] = None) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.io_binding = wants_io_binding(session) if io_binding is None else bool(io_binding)
        self.device = "cuda" if wants_io_binding(session) else "cpu"
        self._binding = session.io_binding() if self.io_binding else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._binding is None:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        b = self._binding
        b.bind_cpu_input(self.input_name, np.ascontiguousarray(x))
        b.bind_output(self.output_name, self.device)  # shape may change (a batch): bound each call
        self.session.run_with_iobinding(b)
        return b.copy_outputs_to_cpu()[0]
