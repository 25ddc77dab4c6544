"""What every runtime's capture offers the comparison: run a model with its intermediate tensors visible, run
it as deployed, and measure a tensor of the deployed run with a model cut after it. Plus the time budget an
explain runs under."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class NameMap:
    """How a candidate's tensors correspond to reference tensors.

    ``values``: candidate tensor -> reference tensor holding the same float value (the op's own output).
    ``quantized``: candidate tensor -> reference tensor whose *quantised-then-dequantised* value it is
    (ORT DequantizeLinear output, OpenVINO FakeQuantize output). ``reads_quantized``: (consumer node,
    reference tensor) pairs where the node reads the quantised view.
    """

    values: dict[str, str] = field(default_factory=dict)
    quantized: dict[str, str] = field(default_factory=dict)
    reads_quantized: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class Captured:
    """One batch of a capture, keyed by reference tensor name."""

    values: dict[str, np.ndarray]
    quantized: dict[str, np.ndarray]
    logits: np.ndarray


class Capture(Protocol):
    """A way to run one model with its intermediate tensors visible (``ort.OrtCapture``, ``ov.OvCapture``)."""

    label: str
    precision: str
    names: NameMap

    def run(self, batch: np.ndarray) -> Captured:
        """Every matched tensor, all at once (one instrumented compile)."""

    def deployed(self, images: np.ndarray) -> np.ndarray:
        """Final logits as the benchmark runs the model: its settings and batch, no extra outputs."""

    def deploy_batch(self) -> int | None:
        """The batch the deployed model is compiled for (None: any)."""

    def values(self, names: Sequence[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        """Just ``names`` from the instrumented model (the reference's side of the deployed-run search)."""

    def probeable(self) -> set[str]:
        """Reference tensors ``probe`` can return."""

    def probe(self, names: Sequence[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        """Only ``names``, from a model cut after them and run as deployed (see ``search``)."""

    def runtime_layer(self, node: str) -> dict[str, Any] | None:
        """Which layer of the compiled graph runs ``node`` (fused with what, in which precision), if known."""

    def describe(self) -> dict[str, Any]:
        """Settings, and what the runtime reports about the instrumented and deployed compiles."""


class ExplainTimeout(RuntimeError):
    """The explain's time budget ran out; what was measured so far is kept and the record says where it
    stopped."""


class Deadline:
    """A wall-clock budget checked between steps (a compile already started is never interrupted)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else time.perf_counter() + seconds

    def check(self, step: str) -> None:
        if self._end is not None and time.perf_counter() > self._end:
            raise ExplainTimeout(f"time limit of {self.seconds:g} s reached before {step}")

    def left(self) -> float | None:
        return None if self._end is None else self._end - time.perf_counter()
