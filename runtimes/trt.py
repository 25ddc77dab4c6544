"""TrtRuntime: TensorRT 10 engines built from the ONNX file, cached on disk, run with ``execute_async_v3``.

Options: ``device`` ``"cuda"`` | ``"cuda:N"``; ``precision`` ``"fp32"`` | ``"fp16"`` | ``"int8"`` (int8 needs
the option ``calibration_data``: a ``.npy`` of float32 inputs shaped like the model input); ``batch`` is the
profile's opt batch and ``max_batch`` its upper bound. Other options (:class:`TrtOptions`):
``engine_cache_dir`` (default: the cache root's ``trt-engines``), ``rebuild`` (ignore the cache),
``workspace_mb``, ``tf32`` (default False: fp32 means IEEE fp32, not TensorRT's default TF32 matmuls).

``load()`` includes the engine build, or the deserialisation on a cache hit; ``effective`` says which.
Inputs are copied to device memory in ``prepare()``; ``run()`` is ``execute_async_v3`` + stream synchronise,
bracketed by CUDA events whose elapsed time ``device_time_ms()`` returns. Device memory comes from
``cuda-python``.

Throughput scenario: ``requests`` execution contexts (default 2), each with its own CUDA stream and device
buffers, on their own threads (``runtimes/trt_requests.py``).

tensorrt and cuda-python are imported inside the methods that need them, so this module and its pure helpers
(:func:`profile_shapes`, :func:`validate_precision`, :func:`engine_cache_key`) work without them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np

from core.artifact import Artifact
from core.files import sha256_of
from runtimes.base import Availability, OptionError, Requests, Runtime, RuntimeOptions, RuntimeUnavailable
from runtimes.cuda import cuda_call as _cuda
from runtimes.cuda import cudart as _cudart
from runtimes.cuda import error_code as _code
from runtimes.cuda import gpu_identity
from runtimes.deps import is_installed, require
from runtimes.engine_cache import EngineCache, engine_key
from runtimes.host import feed_batch, parse_device
from runtimes.trt_requests import ContextRequests, throughput_plan

log = logging.getLogger(__name__)

TRT_MISSING = (
    "tensorrt is not installed; pip install -e .[trt] (needs an NVIDIA GPU and NVIDIA's package index)"
)
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class TrtOptions:
    calibration_data: str | None = None  # .npy of float32 inputs (N, C, H, W), needed for int8
    engine_cache_dir: str | None = None
    rebuild: bool = False
    workspace_mb: int | None = None
    tf32: bool = False


# --- pure helpers (no TensorRT needed) -------------------------------------------------------------------
class ProfileShapes(NamedTuple):
    """One TensorRT optimisation profile for the model's input."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profile_shapes(input_shape: list, batch: int, max_batch: int | None = None) -> ProfileShapes:
    """min = batch 1, opt = ``batch``, max = ``max(batch, max_batch)``; a fixed-batch model pins all three.

    Raises:
        ValueError: batch < 1, a fixed batch other than ``batch``, or a dynamic non-batch dimension.
    """
    if batch < 1 or (max_batch is not None and max_batch < 1):
        raise ValueError(f"batch and max_batch must be >= 1, got batch={batch}, max_batch={max_batch}")
    lead, rest = input_shape[0], tuple(input_shape[1:])
    if any(not (isinstance(d, int) and d > 0) for d in rest):
        raise ValueError(f"only the batch dimension may be dynamic, got {input_shape}")
    if isinstance(lead, int) and lead > 0:
        if lead != batch:
            raise ValueError(f"the model has a fixed batch of {lead}; batch {batch} was asked")
        fixed = (lead, *rest)
        return ProfileShapes(fixed, fixed, fixed)
    top = max(batch, max_batch or batch)
    return ProfileShapes((1, *rest), (batch, *rest), (top, *rest))


def validate_precision(precision: str, options: TrtOptions) -> None:
    """Reject precisions TensorRT cannot build honestly here (int8 without calibration data)."""
    if precision not in PRECISIONS:
        raise OptionError(f"runtime 'trt' does not support precision {precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")
    if precision == "int8":
        data = options.calibration_data
        if not data:
            raise OptionError("trt int8 needs calibration data: set the option calibration_data to a .npy of "
                             "representative float32 inputs (N, C, H, W); without it int8 scales are guesses")
        if not Path(data).is_file():
            raise OptionError(f"calibration data {data} does not exist")


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str,
                     precision: str, profile: ProfileShapes, flags: dict | None = None) -> str:
    """sha256 over everything that makes an engine valid: model, TensorRT, GPU, precision, shapes, flags."""
    return engine_key({
        "onnx_sha256": onnx_sha256,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "compute_capability": compute_capability,
        "precision": precision,
        "profile": {"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
        "flags": flags or {},
    })


def _python_logger(trt):
    """A TensorRT logger that writes to Python logging instead of stderr."""
    levels = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,  # INFO is chatty (per-layer build notes)
        trt.ILogger.Severity.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)  # pybind11 trampoline: the base __init__ must run explicitly

        def log(self, severity, msg):
            log.log(levels.get(severity, logging.INFO), "tensorrt: %s", msg)

    return _Logger()


def _calibrator(trt, cudart, data: np.ndarray, batch: int, cache_file: Path):
    """An entropy calibrator feeding ``data`` in chunks of ``batch`` from one device buffer."""

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.pointer = _cuda(cudart.cudaMalloc(data[:batch].nbytes))

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.index + batch > len(data):
                return None
            chunk = np.ascontiguousarray(data[self.index : self.index + batch])
            self.index += batch
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _cuda(cudart.cudaMemcpy(self.pointer, chunk.ctypes.data, chunk.nbytes, kind))
            return [int(self.pointer)]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.exists() else None

        def write_calibration_cache(self, cache):
            cache_file.write_bytes(bytes(cache))

        def free(self):
            _cuda(cudart.cudaFree(self.pointer))

    return _Calibrator()


# --- the adapter -----------------------------------------------------------------------------------------
class TrtRuntime(Runtime):
    """TensorRT engine + one execution context + one CUDA stream; see the module docstring for options."""

    name: ClassVar[str] = "trt"
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    Options: ClassVar[type] = TrtOptions

    def __init__(self, options: RuntimeOptions) -> None:
        super().__init__(options)
        _, self._device_index = parse_device(self.name, options.device, self.devices)
        validate_precision(options.precision, self.own)
        self._buffers: dict[str, int] = {}
        self._host_outputs: dict[str, np.ndarray] = {}
        self._stream = self._events = self._context = self._engine = self._trt_runtime = None

    @classmethod
    def probe(cls, device: str | None = None) -> Availability:
        if not is_installed("tensorrt"):
            return Availability(cls.name, False, TRT_MISSING)
        try:
            index = parse_device(cls.name, device, cls.devices)[1] if device else 0
            trt = require("tensorrt", "trt")
            cudart = _cudart()
            err, count = cudart.cudaGetDeviceCount()
            if _code(err) != 0 or count == 0:
                return Availability(cls.name, False, f"no CUDA device visible ({getattr(err, 'name', err)})")
            if index >= count:
                return Availability(cls.name, False, f"cuda:{index} asked but {count} CUDA device(s) visible")
            gpu, cc = gpu_identity(cudart, index)
        except Exception as exc:
            return Availability(cls.name, False, f"{type(exc).__name__}: {exc}")
        return Availability(cls.name, True, detail=f"tensorrt {trt.__version__}; {gpu} (sm {cc})")

    # --- load: build or deserialise ----------------------------------------------------------------------
    def _load(self, artifact: Artifact) -> None:
        if not is_installed("tensorrt"):
            raise RuntimeUnavailable(TRT_MISSING)
        trt = require("tensorrt", "trt")
        self._cudart = cudart = _cudart()
        _cuda(cudart.cudaSetDevice(self._device_index))
        gpu, cc = gpu_identity(cudart, self._device_index)
        own = self.own
        profile = profile_shapes(artifact.input_shape, self.options.batch, self.options.max_batch)
        flags = {"tf32": own.tf32, "workspace_mb": own.workspace_mb}
        if self.options.precision == "int8":
            flags["calibration_sha256"] = sha256_of(Path(own.calibration_data))
        precision = self.options.precision
        key = engine_cache_key(artifact.sha256, trt.__version__, gpu, cc, precision, profile, flags)
        cache = EngineCache("trt", Path(own.engine_cache_dir) if own.engine_cache_dir else None)
        path = cache.path(f"{artifact.model}-{precision}", key)

        self._logger = _python_logger(trt)
        self._trt_runtime = trt.Runtime(self._logger)
        start = time.perf_counter()
        engine = None
        blob = None if own.rebuild else cache.get(path)
        if blob is not None:
            engine = self._trt_runtime.deserialize_cuda_engine(blob)
            if engine is None:  # truncated file or a TensorRT that cannot read it: rebuild
                log.warning("trt: cached engine %s is unreadable; rebuilding", path)
        hit = engine is not None
        if engine is None:
            blob = self._build(trt, artifact, profile, flags, path.with_suffix(".calib"))
            cache.put(path, blob, {
                "key": key, "onnx_sha256": artifact.sha256, "tensorrt": trt.__version__, "gpu": gpu,
                "compute_capability": cc, "precision": self.options.precision, "profile": profile._asdict(),
                "flags": flags})
            engine = self._trt_runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialise the engine it built for {artifact.model}")
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = _cuda(cudart.cudaStreamCreate())
        self._events = (_cuda(cudart.cudaEventCreate()), _cuda(cudart.cudaEventCreate()))
        self._input_name = artifact.input_name
        self._profile = profile
        self.effective = {
            "device": f"cuda:{self._device_index}",
            "gpu": gpu,
            "compute_capability": cc,
            "precision": self.options.precision,
            "tf32": flags["tf32"],
            "workspace_mb": flags["workspace_mb"],
            "profile": {"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
            "engine_cache_hit": hit,
            "engine_cache_path": str(path),
            ("engine_deserialize_s" if hit else "engine_build_s"): time.perf_counter() - start,
        }
        if self.options.precision == "fp16":
            self.notes.append("fp16 permits fp16 kernels; TensorRT keeps layers that are faster in fp32")
        if self.throughput:
            self.effective.update(throughput_plan(self.options.requests))

    def _build(self, trt, artifact: Artifact, profile: ProfileShapes, flags: dict, calib: Path) -> bytes:
        log.info("trt: building %s engine for %s (can take minutes)", self.options.precision, artifact.model)
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(artifact.onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {artifact.onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        if flags["workspace_mb"]:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(flags["workspace_mb"]) << 20)
        if not flags["tf32"]:
            config.clear_flag(trt.BuilderFlag.TF32)  # on by default; it lowers fp32 matmul/conv precision
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(artifact.input_name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(opt_profile)
        calibrator = None
        if self.options.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif self.options.precision == "int8":
            data = np.load(self.own.calibration_data).astype(np.float32)
            calibrator = _calibrator(trt, self._cudart, data, profile.opt[0], calib)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = calibrator
            config.set_calibration_profile(opt_profile)
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
        if serialized is None:
            raise RuntimeError(f"TensorRT engine build failed for {artifact.model} (see the tensorrt log)")
        return bytes(serialized)

    # --- prepare / run -----------------------------------------------------------------------------------
    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        trt, cudart = require("tensorrt", "trt"), self._cudart
        array, batch = feed_batch(feeds, self._input_name)
        if not self._profile.min[0] <= batch <= self._profile.max[0]:
            raise ValueError(f"trt: batch {batch} is outside the engine profile "
                             f"[{self._profile.min[0]}, {self._profile.max[0]}]; set batch/max_batch")
        array = np.ascontiguousarray(array, dtype=trt.nptype(self._engine.get_tensor_dtype(self._input_name)))
        self._array = array  # the throughput scenario's contexts copy it in too
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        if self._buffers and tuple(self._context.get_tensor_shape(self._input_name)) == array.shape:
            # Same shape: reuse the device buffers, so end2end timing holds a copy, not cudaFree/cudaMalloc.
            _cuda(cudart.cudaMemcpy(self._buffers[self._input_name], array.ctypes.data, array.nbytes, kind))
            return
        self._free_buffers()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [self._input_name]:
            raise ValueError(f"trt: engine inputs {inputs}, expected [{self._input_name!r}]")
        self._context.set_input_shape(self._input_name, array.shape)
        for name in names:
            if name == self._input_name:
                host = array
            else:
                shape = tuple(self._context.get_tensor_shape(name))
                host = np.empty(shape, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
                self._host_outputs[name] = host
            self._buffers[name] = _cuda(cudart.cudaMalloc(max(host.nbytes, 1)))
            self._context.set_tensor_address(name, int(self._buffers[name]))
        # The one host-to-device copy, outside the timed region.
        _cuda(cudart.cudaMemcpy(self._buffers[self._input_name], array.ctypes.data, array.nbytes, kind))

    def _run(self) -> None:
        cudart = self._cudart
        start, end = self._events
        _cuda(cudart.cudaEventRecord(start, self._stream))
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("trt: execute_async_v3 failed (see the tensorrt log)")
        _cuda(cudart.cudaEventRecord(end, self._stream))
        _cuda(cudart.cudaStreamSynchronize(self._stream))

    def device_time_ms(self) -> float | None:
        if self._events is None or self._state != "prepared":
            return None
        return float(_cuda(self._cudart.cudaEventElapsedTime(*self._events)))

    def _outputs(self) -> dict[str, np.ndarray]:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, host in self._host_outputs.items():
            _cuda(self._cudart.cudaMemcpy(host.ctypes.data, self._buffers[name], host.nbytes, kind))
        return {name: host.copy() for name, host in self._host_outputs.items()}

    def _requests(self, end2end: bool) -> Requests:  # the throughput scenario
        return ContextRequests(require("tensorrt", "trt"), self._cudart, self._engine, self._input_name,
                               self._array, self.effective["requests"], end2end, self._device_index)

    # --- teardown ----------------------------------------------------------------------------------------
    def _free_buffers(self) -> None:
        for pointer in self._buffers.values():
            _cuda(self._cudart.cudaFree(pointer))
        self._buffers.clear()
        self._host_outputs.clear()

    def _close(self) -> None:
        if self._engine is None:
            return
        self._free_buffers()
        for event in self._events or ():
            _cuda(self._cudart.cudaEventDestroy(event))
        if self._stream is not None:
            _cuda(self._cudart.cudaStreamDestroy(self._stream))
        # The context must go before the engine, and the engine before the runtime.
        self._context = None
        self._engine = None
        self._trt_runtime = None
        self._stream = self._events = None

    def versions(self) -> dict[str, str]:
        out = {}
        if is_installed("tensorrt"):
            out["tensorrt"] = require("tensorrt", "trt").__version__
        try:
            cudart = _cudart()
            out["cuda_runtime"] = str(_cuda(cudart.cudaRuntimeGetVersion()))
            out["cuda_driver"] = str(_cuda(cudart.cudaDriverGetVersion()))
        except Exception as exc:  # versions are informative; never fail a run over them
            log.debug("trt: CUDA versions unavailable: %s", exc)
        return out
