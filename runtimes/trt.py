"""TrtRuntime: TensorRT 10 engines built from the ONNX file, cached on disk, run with ``execute_async_v3``.

Options: ``device`` ``"cuda"`` | ``"cuda:N"``; ``precision`` ``"fp32"`` | ``"fp16"`` | ``"int8"``; ``batch`` is
the profile's opt batch and ``max_batch`` its upper bound. Other options (:class:`TrtOptions`):
``calibration_data`` (int8 of an fp32 model: ``"bundled"``, the default, calibrates on the bundled calibration
images, as the OpenVINO and ONNX Runtime int8 exports do; ``"export"`` on the export's evaluation images, which
makes their agreement optimistic and is recorded; or an image folder, or a ``.npy`` of preprocessed (N, C, H, W)
inputs), ``engine_cache_dir`` (default:
the cache root's ``trt-engines``), ``rebuild`` (ignore the cache), ``workspace_mb``, ``tf32`` (default False:
fp32 means IEEE fp32, not TensorRT's default TF32 matmuls), ``cuda_graph`` (replay one captured inference).

Precision (``runtimes.trt_build``): int8 builds set INT8 and FP16; an fp32 model is calibrated, an int8 QDQ
model brings its own scales. What ran is read back per layer from the engine inspector into
``effective["layer_precisions"]``, and the recorded precision is the lowest float type a layer ran in.

``load()`` includes the engine build, or the deserialisation on a cache hit; ``effective`` says which.
Inputs are copied to device memory in ``prepare()``; ``run()`` is ``execute_async_v3`` + stream synchronise,
bracketed by CUDA events whose elapsed time ``device_time_ms()`` returns. Those events also time the host's
launch gaps when the GPU outruns the CPU (small models, batch 1); ``cuda_graph=true`` replays a captured
graph instead, which has none (``effective["device_time"]`` says which).

Throughput scenario: ``requests`` execution contexts (default 2), each with its own CUDA stream and device
buffers, on their own threads (``runtimes/trt_requests.py``).

tensorrt and cuda-python are imported inside the methods that need them, so this module and its pure helpers
work without them. Only TensorRT 10.x is supported (see ``runtimes.trt_build``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from core.artifact import Artifact
from runtimes.base import Availability, OptionError, Requests, Runtime, RuntimeOptions, RuntimeUnavailable, option
from runtimes.cuda import cuda_call as _cuda
from runtimes.cuda import cudart as _cudart
from runtimes.cuda import error_code as _code
from runtimes.cuda import gpu_identity, release
from runtimes.deps import MissingDependency, is_installed, require
from runtimes.engine_cache import EngineCache
from runtimes.host import feed_batch, parse_device
from runtimes.trt_build import (
    PRECISIONS,
    SUPPORTED_TENSORRT,
    BuildPlan,
    ProfileShapes,
    build_plan,
    build_serialized,
    check_tensorrt_version,
    engine_cache_key,
    layer_precisions,
    precision_ran,
    profile_shapes,
    tensorrt_cuda_info,
    trt_logger,
)
from runtimes.trt_calibration import (
    BUNDLED,
    EXPORT_IMAGES,
    calibration_cache_key,
    load_calibration_data,
    make_calibrator,
)
from runtimes.trt_requests import ContextRequests, throughput_plan

log = logging.getLogger(__name__)

TRT_NOTE = f"TensorRT 10.x: tensorrt-cu13{SUPPORTED_TENSORRT}; needs an NVIDIA GPU"
TRT_MISSING = str(MissingDependency("tensorrt", "trt", TRT_NOTE))
__all__ = ["TRT_MISSING", "ProfileShapes", "TrtOptions", "TrtRuntime", "engine_cache_key", "profile_shapes",
           "validate_precision"]


@dataclass(frozen=True)
class TrtOptions:
    calibration_data: str | None = option(
        None, "int8 of an fp32 model: bundled (the default: the bundled calibration images), export (the export's "
              "evaluation images; recorded as optimistic), an image folder or a .npy of preprocessed inputs")
    engine_cache_dir: str | None = option(None, "engine cache folder; default: the cache root's trt-engines")
    rebuild: bool = option(False, "build the engine even when the cache holds it")
    workspace_mb: int | None = option(None, "builder workspace limit in MiB; default: TensorRT's")
    tf32: bool = option(False, "allow TF32 matmuls/convolutions for fp32 (TensorRT's default); off: IEEE fp32")
    cuda_graph: bool = option(False, "time a CUDA graph replay: device time without the host's launch gaps")


def validate_precision(precision: str, options: TrtOptions) -> None:
    """Reject what can be rejected before the model is known: an unknown precision, missing calibration data."""
    if precision not in PRECISIONS:
        raise OptionError(f"runtime 'trt' does not support precision {precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")
    data = options.calibration_data
    if data is not None and data not in (EXPORT_IMAGES, BUNDLED) and not Path(data).exists():
        raise OptionError(f"calibration data {data} does not exist (an image folder, a .npy, 'bundled' or 'export')")


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
        self._cudart = self._stream = self._events = self._context = self._engine = self._trt_runtime = None
        self._graph = self._graph_exec = None

    @classmethod
    def probe(cls, device: str | None = None) -> Availability:
        if not is_installed("tensorrt"):
            return Availability(cls.name, False, TRT_MISSING)
        try:
            index = parse_device(cls.name, device, cls.devices)[1] if device else 0
            trt = require("tensorrt", "trt")
            problem = check_tensorrt_version(trt.__version__)
            if problem:
                return Availability(cls.name, False, problem)
            cudart = _cudart()
            err, count = cudart.cudaGetDeviceCount()
            if _code(err) != 0 or count == 0:
                return Availability(cls.name, False, f"no CUDA device visible ({getattr(err, 'name', err)})")
            if index >= count:
                return Availability(cls.name, False, f"cuda:{index} asked but {count} CUDA device(s) visible")
            gpu, cc = gpu_identity(cudart, index)
        except Exception as exc:  # probe must never raise
            return Availability(cls.name, False, f"{type(exc).__name__}: {exc}")
        return Availability(cls.name, True, detail=f"tensorrt {trt.__version__} (supported: TensorRT 10.x, "
                                                   f"tensorrt-cu13{SUPPORTED_TENSORRT}); {gpu} (sm {cc})")

    # --- load: build or deserialise ----------------------------------------------------------------------
    def _load(self, artifact: Artifact) -> None:
        if not is_installed("tensorrt"):
            raise RuntimeUnavailable(TRT_MISSING)
        trt = require("tensorrt", "trt")
        problem = check_tensorrt_version(trt.__version__)
        if problem:
            raise RuntimeUnavailable(problem)
        self._cudart = cudart = _cudart()
        _cuda(cudart.cudaSetDevice(self._device_index))
        gpu, cc = gpu_identity(cudart, self._device_index)
        plan = build_plan(self.options.precision, artifact.precision, self.own.calibration_data)
        profile = profile_shapes(artifact.input_shape, self.options.batch, self.options.max_batch)
        flags, calibration = self._flags(plan, artifact)
        key = engine_cache_key(artifact.sha256, trt.__version__, gpu, cc, plan.precision, profile, flags)
        cache = EngineCache("trt", Path(self.own.engine_cache_dir) if self.own.engine_cache_dir else None)
        path = cache.path(f"{artifact.model}-{plan.precision}", key)
        self._trt_runtime = trt.Runtime(trt_logger(trt))  # the process's one logger, never per instance
        start = time.perf_counter()
        engine = self._cached_engine(cache, path)
        hit = engine is not None
        if engine is None:
            calibrator_file = cache.path(f"{artifact.model}-calibration", calibration_cache_key(
                artifact.sha256, flags["calibration"], trt.__version__), ".calib") if calibration is not None else None
            blob = self._build(trt, artifact, profile, flags, calibration, calibrator_file)
            cache.put(path, blob, {"key": key, "onnx_sha256": artifact.sha256, "tensorrt": trt.__version__,
                                   "gpu": gpu, "compute_capability": cc, "precision": plan.precision,
                                   "profile": profile._asdict(), "flags": flags})
            engine = self._trt_runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialise the engine it built for {artifact.model}")
        self._engine = engine
        self._open_context(artifact, profile)
        self.effective = {
            "device": f"cuda:{self._device_index}", "gpu": gpu, "compute_capability": cc,
            "profile": {"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
            "engine_cache_hit": hit, "engine_cache_path": str(path),
            ("engine_deserialize_s" if hit else "engine_build_s"): time.perf_counter() - start,
        }
        self._record_precision(trt, plan, flags)
        if self.throughput:
            self.effective.update(throughput_plan(self.options.requests))

    def _flags(self, plan: BuildPlan, artifact: Artifact) -> tuple[dict, np.ndarray | None]:
        """Everything that shapes the engine (the cache key covers it), and the calibration images."""
        own = self.own
        flags = {"tf32": own.tf32, "workspace_mb": own.workspace_mb, "verbosity": "detailed",
                 "builder_flags": list(plan.builder_flags), "quantization": plan.quantization}
        data = None
        if plan.quantization == "calibration":
            data, flags["calibration"] = load_calibration_data(own.calibration_data or BUNDLED, artifact)
        return flags, data

    def _cached_engine(self, cache: EngineCache, path: Path):
        blob = None if self.own.rebuild else cache.get(path)
        if blob is None:
            return None
        engine = self._trt_runtime.deserialize_cuda_engine(blob)
        if engine is None:  # truncated file or a TensorRT that cannot read it: rebuild
            log.warning("trt: cached engine %s is unreadable; rebuilding", path)
        return engine

    def _build(self, trt, artifact: Artifact, profile: ProfileShapes, flags: dict, data: np.ndarray | None,
               calibration_file: Path | None) -> bytes:
        log.info("trt: building %s engine for %s (can take minutes)", self.options.precision, artifact.model)
        calibrator = None
        if data is not None:
            calibrator = make_calibrator(trt, self._cudart, data, flags["calibration"]["batch"], calibration_file)
        try:
            return build_serialized(trt, artifact.onnx_path, artifact.input_name, profile, flags, calibrator)
        finally:
            errors = release([("calibrator device buffer", calibrator.free)]) if calibrator else []
            if errors:  # logged: an error from the build itself is the one that propagates
                log.warning("trt: %s", "; ".join(errors))

    def _open_context(self, artifact: Artifact, profile: ProfileShapes) -> None:
        cudart = self._cudart
        context = self._engine.create_execution_context()
        if context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of device memory? see the "
                               "tensorrt log)")
        self._context = context
        self._stream = _cuda(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        self._events = (_cuda(cudart.cudaEventCreate()), _cuda(cudart.cudaEventCreate()))
        self._input_name = artifact.input_name
        self._profile = profile

    def _record_precision(self, trt, plan: BuildPlan, flags: dict) -> None:
        inspector = self._engine.create_engine_inspector()
        layers = layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        precision, mix = precision_ran(plan.precision, layers, flags["tf32"])
        self.effective.update({
            "precision": precision, "precision_requested": plan.precision, "model_precision": plan.model_precision,
            "builder_flags": flags["builder_flags"], "quantization": plan.quantization,
            "layer_precisions": layers, "tf32": flags["tf32"], "workspace_mb": flags["workspace_mb"],
            "device_time": "cuda graph replay" if self.own.cuda_graph else
                           "cuda events around execute_async_v3 (include host launch gaps when the GPU "
                           "outruns the CPU: small models, batch 1)",
        })
        if "calibration" in flags:
            self.effective["calibration"] = flags["calibration"]
        self.notes.extend(plan.notes)
        if mix:
            self.effective["precision_mix"] = mix
            self.notes.append(f"layers by output type: {mix}")
        if "unknown" in layers:
            self.notes.append("the engine reports no per-layer types: the precision recorded is the one asked")

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
            # Same shape: reuse the device buffers (and graph), so end2end timing holds a copy, not cudaMalloc.
            _cuda(cudart.cudaMemcpy(self._buffers[self._input_name], array.ctypes.data, array.nbytes, kind))
            return
        self._free_buffers()
        self._bind_shape(trt, array)
        # The one host-to-device copy, outside the timed region.
        _cuda(cudart.cudaMemcpy(self._buffers[self._input_name], array.ctypes.data, array.nbytes, kind))
        if self.own.cuda_graph:
            self._capture_graph()

    def _bind_shape(self, trt, array: np.ndarray) -> None:
        """Set the input shape, allocate every I/O tensor for it and give TensorRT the addresses."""
        engine, context = self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [self._input_name]:
            raise ValueError(f"trt: engine inputs {inputs}, expected [{self._input_name!r}]")
        if not context.set_input_shape(self._input_name, array.shape):
            raise ValueError(f"trt: TensorRT rejected input shape {array.shape} for {self._input_name!r} "
                             f"(profile {self._profile.min} .. {self._profile.max})")
        unresolved = context.infer_shapes()
        if unresolved:
            raise RuntimeError(f"trt: output shapes unresolved after set_input_shape: {unresolved}")
        for name in names:
            if name == self._input_name:
                host = array
            else:
                shape = tuple(context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"trt: output {name!r} still has a dynamic shape {shape}")
                host = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
                self._host_outputs[name] = host
            self._buffers[name] = _cuda(self._cudart.cudaMalloc(max(host.nbytes, 1)))
            if not context.set_tensor_address(name, int(self._buffers[name])):
                raise RuntimeError(f"trt: TensorRT rejected the device address of {name!r}")

    def _capture_graph(self) -> None:
        """Record one inference as a CUDA graph; after a shape change TensorRT must first run once plainly."""
        cudart, stream = self._cudart, self._stream
        if not self._context.execute_async_v3(int(stream)):
            raise RuntimeError("trt: execute_async_v3 failed before graph capture")
        _cuda(cudart.cudaStreamSynchronize(stream))
        _cuda(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        ok = False
        try:
            ok = self._context.execute_async_v3(int(stream))
        finally:
            graph = _cuda(cudart.cudaStreamEndCapture(stream))  # always end the capture, even on failure
        if not ok:
            release([("cudaGraphDestroy", lambda: _cuda(cudart.cudaGraphDestroy(graph)))])
            raise RuntimeError("trt: execute_async_v3 failed during CUDA graph capture")
        self._graph = graph
        self._graph_exec = _cuda(cudart.cudaGraphInstantiate(graph, 0))

    def _run(self) -> None:
        cudart = self._cudart
        start, end = self._events
        _cuda(cudart.cudaEventRecord(start, self._stream))
        if self._graph_exec is not None:
            _cuda(cudart.cudaGraphLaunch(self._graph_exec, self._stream))
        elif not self._context.execute_async_v3(int(self._stream)):
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
    def _device_steps(self) -> list:
        """Release steps for the graph and the buffers (their order matters: graph first)."""
        cudart, steps = self._cudart, []
        if self._graph_exec is not None:
            steps.append(("cudaGraphExecDestroy", lambda g=self._graph_exec: _cuda(cudart.cudaGraphExecDestroy(g))))
        if self._graph is not None:
            steps.append(("cudaGraphDestroy", lambda g=self._graph: _cuda(cudart.cudaGraphDestroy(g))))
        steps += [(f"cudaFree({n})", lambda p=p: _cuda(cudart.cudaFree(p))) for n, p in self._buffers.items()]
        self._graph = self._graph_exec = None
        self._buffers.clear()
        self._host_outputs.clear()
        return steps

    def _free_buffers(self) -> None:
        errors = release(self._device_steps())
        if errors:
            raise RuntimeError("trt: " + "; ".join(errors))

    def _close(self) -> None:
        """Free everything that exists, whatever failed before; raise once, at the end, if a step failed."""
        cudart, stream, steps = self._cudart, self._stream, []
        if cudart is not None:
            if stream is not None:  # nothing may still be using the buffers
                steps.append(("cudaStreamSynchronize", lambda: _cuda(cudart.cudaStreamSynchronize(stream))))
            steps += self._device_steps()
            steps += [("cudaEventDestroy", lambda e=e: _cuda(cudart.cudaEventDestroy(e))) for e in self._events or ()]
            if stream is not None:
                steps.append(("cudaStreamDestroy", lambda: _cuda(cudart.cudaStreamDestroy(stream))))
        # TensorRT objects: the context before the engine before the runtime (the logger is never freed).
        steps += [("execution context", lambda: setattr(self, "_context", None)),
                  ("engine", lambda: setattr(self, "_engine", None)),
                  ("runtime", lambda: setattr(self, "_trt_runtime", None))]
        errors = release(steps)
        self._stream = self._events = None
        if errors:
            raise RuntimeError("trt: close() could not release everything: " + "; ".join(errors))

    def versions(self) -> dict[str, str]:
        found: dict[str, str] = {}
        if is_installed("tensorrt"):
            found["tensorrt"] = require("tensorrt", "trt").__version__
            found.update(tensorrt_cuda_info())
        try:
            import cuda.bindings

            found["cuda_python"] = cuda.bindings.__version__  # its own static cudart, not TensorRT's
            found["cuda_driver"] = str(_cuda(_cudart().cudaDriverGetVersion()))
        except Exception as exc:  # versions are informative; never fail a run over them
            log.debug("trt: CUDA versions unavailable: %s", exc)
        return found
