"""NullRuntime: does no inference at all, so a benchmark of it measures the harness's own overhead.

A test runtime: hidden from ``list_runtimes()`` unless ``include_test=True``. Its outputs are zeros of the
shape the manifest declares, so the harness's checking code runs too (and reports a large difference).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from core.artifact import Artifact, static_shape
from core.cores import default_threads
from runtimes.base import Availability, Requests, Runtime
from runtimes.concurrent import ThreadedRequests, plan_requests, throughput_effective
from runtimes.host import feed_batch


class NullRuntime(Runtime):
    """Lifecycle as every runtime; ``run()`` returns immediately."""

    name: ClassVar[str] = "null"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "bf16", "int8")
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda", "gpu", "auto")

    @classmethod
    def probe(cls, device: str | None = None) -> Availability:
        return Availability(cls.name, True, detail="test runtime: measures harness overhead only")

    formats: ClassVar[tuple[str, ...]] = ("onnx", "openvino-ir")

    def _load(self, artifact: Artifact) -> None:
        output = artifact.output
        self._output_spec = (output.name, output.shape, output.dtype)
        self._input_name = artifact.input_name
        self.effective = {"device": "none", "precision": "none"}
        self.notes.append("null runtime: no inference ran; timings are harness overhead")
        if self.throughput:
            requests, source = plan_requests(self.options.requests, default_threads(), "one per core")
            self.effective.update(throughput_effective(requests, source, 1, "threads (no inference)"))

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        _, batch = feed_batch(feeds, self._input_name)
        name, shape, dtype = self._output_spec
        self._outputs_cache = {name: np.zeros(static_shape(shape, batch), dtype=dtype)}

    def _run(self) -> None:
        pass

    def _outputs(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._outputs_cache.items()}

    def _requests(self, end2end: bool) -> Requests:
        return ThreadedRequests([self._outputs if end2end else _nothing] * self.effective["requests"], "null")

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}


def _nothing() -> None:
    pass
