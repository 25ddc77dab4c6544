"""The TensorRT throughput scenario: one execution context, one CUDA stream and one set of device buffers per
request, all over the one engine (and its one optimisation profile: TensorRT 10 lets contexts share a
profile; 8.6 needed the preview feature PROFILE_SHARING_0806 for it).

Each request runs ``execute_async_v3`` on its own stream and synchronises that stream, on its own worker
thread (:class:`runtimes.concurrent.ThreadedRequests`), so requests overlap on the GPU while the harness reads
the clock around each one. ``end2end`` adds the host-to-device copy of the input and the device-to-host copy
of the outputs, on the request's stream.

Written against the TensorRT 10 Python API and cuda-python; it has not run yet (no GPU was available), which
``tests/test_throughput.py`` states when it skips.
"""

from __future__ import annotations

import numpy as np

from runtimes.concurrent import ThreadedRequests, plan_requests, throughput_effective
from runtimes.cuda import cuda_call as _cuda

DEFAULT_REQUESTS = 2  # two contexts let one's launches and copies overlap the other's kernels


def throughput_plan(asked: int | None) -> dict:
    """The ``effective`` entries of the throughput scenario: requests as asked, else two contexts."""
    requests, source = plan_requests(asked, DEFAULT_REQUESTS, f"default: {DEFAULT_REQUESTS} contexts")
    return throughput_effective(requests, source, None, "an execution context and CUDA stream per request")


class ContextRequest:
    """One request: its own execution context, stream and device buffers; the input copied in once."""

    def __init__(self, trt, cudart, engine, input_name: str, array: np.ndarray) -> None:
        self._cudart = cudart
        self._buffers: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {input_name: array}
        self._input_name = input_name
        self.context = None
        self.stream = _cuda(cudart.cudaStreamCreate())
        try:
            self._bind(trt, engine, array)
        except BaseException:
            self.close()  # what was allocated before the failure
            raise

    def _bind(self, trt, engine, array: np.ndarray) -> None:
        cudart, input_name = self._cudart, self._input_name
        self.context = engine.create_execution_context()
        if not self.context.set_optimization_profile_async(0, int(self.stream)):
            raise RuntimeError("trt: a second execution context could not use the engine's optimisation "
                               "profile (TensorRT < 10 needs the preview feature PROFILE_SHARING_0806)")
        self.context.set_input_shape(input_name, array.shape)
        for name in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors)):
            if name != input_name:
                shape = tuple(self.context.get_tensor_shape(name))
                self._host[name] = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
            self._buffers[name] = _cuda(cudart.cudaMalloc(max(self._host[name].nbytes, 1)))
            self.context.set_tensor_address(name, int(self._buffers[name]))
        self._copy_in()
        _cuda(cudart.cudaStreamSynchronize(self.stream))

    def _copy_in(self) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        host = self._host[self._input_name]
        _cuda(self._cudart.cudaMemcpyAsync(self._buffers[self._input_name], host.ctypes.data, host.nbytes, kind,
                                           self.stream))

    def _copy_out(self) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, host in self._host.items():
            if name != self._input_name:
                _cuda(self._cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name], host.nbytes, kind,
                                                   self.stream))

    def run(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("trt: execute_async_v3 failed (see the tensorrt log)")
        _cuda(self._cudart.cudaStreamSynchronize(self.stream))

    def run_end2end(self) -> None:
        self._copy_in()
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("trt: execute_async_v3 failed (see the tensorrt log)")
        self._copy_out()
        _cuda(self._cudart.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        for pointer in self._buffers.values():
            _cuda(self._cudart.cudaFree(pointer))
        self._buffers.clear()
        if self.stream is not None:
            _cuda(self._cudart.cudaStreamDestroy(self.stream))
            self.stream = None
        self.context = None


class ContextRequests(ThreadedRequests):
    """``size`` :class:`ContextRequest` objects, each on its own worker thread (which first selects the
    engine's CUDA device: the current device is per thread); closing frees them."""

    def __init__(self, trt, cudart, engine, input_name: str, array: np.ndarray, size: int, end2end: bool,
                 device_index: int = 0) -> None:
        self._requests: list[ContextRequest] = []
        try:
            for _ in range(size):
                self._requests.append(ContextRequest(trt, cudart, engine, input_name, array))
        except BaseException:
            self._free()
            raise
        super().__init__([r.run_end2end if end2end else r.run for r in self._requests], "trt",
                         setup=lambda: _cuda(cudart.cudaSetDevice(device_index)))

    def _free(self) -> None:
        for request in self._requests:
            request.close()
        self._requests.clear()

    def close(self) -> None:
        super().close()
        self._free()
