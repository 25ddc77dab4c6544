"""OpenVinoRuntime: OpenVINO on CPU, GPU or AUTO, with the inference precision set explicitly.

Options: ``device`` ``"cpu"`` | ``"gpu"`` (``"gpu:N"``) | ``"auto"``; ``precision`` ``"fp32"`` (f32),
``"bf16"`` or ``"fp16"`` (f16), or ``"int8"`` for an int8 artifact (an NNCF-quantized IR made by the export
stage, ``--precision int8 --runtime ov``; it runs with the f32 hint, so layers without an int8 kernel stay f32);
``threads`` -> INFERENCE_NUM_THREADS (CPU only, default: physical cores);
its own options (:class:`OvOptions`): ``hint`` ``"latency"`` | ``"throughput"`` -> PERFORMANCE_HINT (default:
the scenario's); ``streams`` -> NUM_STREAMS (default: what the hint picks), set in ``runtimes.ov_compile`` (also
the layer profiler's and ``bench explain``'s compiled models). A dynamic batch is reshaped to ``options.batch``
before compiling. Loads ONNX files and OpenVINO IR (``.xml``) artifacts.

Throughput scenario: the THROUGHPUT hint (PERFORMANCE_HINT_NUM_REQUESTS = ``options.requests`` when given),
then ``options.requests`` infer requests in flight, or OPTIMAL_NUMBER_OF_INFER_REQUESTS as read back from
the compiled model (what ``AsyncInferQueue(compiled, 0)`` would create); streams, threads and that optimum
are recorded.

Why the precision is always set (anchors 4H): the CPU plugin runs bf16 by default on CPUs with AMX or
AVX512-BF16, so an unset hint silently benchmarks bf16 as "fp32". After compiling, the precision, streams,
threads and execution devices are read back into ``effective``, with the precision each layer runs in. fp32
that does not run f32 raises :class:`SilentChangeError`; a lower precision the device lacks runs as the plugin's
stand-in (``core.cpu.FLOAT_STAND_INS``: f16 as bf16 on a CPU with bf16 but no fp16, either as f32 on a CPU
with neither), which ``effective["precision"]`` and ``notes`` say, so the record and its gates are the
precision that ran. int8 is the model's, not a hint: int8 asked of an
fp32 model, an int8 model asked as anything else, or an int8 model of which no layer runs int8, raise
:class:`SilentChangeError`; ``effective["int8_layers"]`` counts the layers that run int8 (the MatMul/Convolution
ones apart). Whether the CPU has the instructions that make a precision fast (VNNI/AMX for int8, AVX512-BF16/AMX
for bf16, AVX512-FP16/AMX-FP16 for f16) is recorded with the plugin's OPTIMIZATION_CAPABILITIES, and a note says
when they are missing.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import ClassVar

import numpy as np

from core.artifact import Artifact
from core.cpu import FLOAT_STAND_INS, cpu_flags, float_precision_run, missing_instructions
from runtimes.base import (
    Availability,
    LayerTimes,
    Requests,
    Runtime,
    RuntimeOptions,
    RuntimeUnavailable,
    SilentChangeError,
)
from runtimes.concurrent import ThreadedRequests, plan_requests, threads_per_request, throughput_effective
from runtimes.deps import MissingDependency, is_installed, require
from runtimes.host import feed_batch, parse_device
from runtimes.ov_compile import OvOptions, compile_config, cpu_layer_times

log = logging.getLogger(__name__)

_FROM_OV = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}
_INT8 = frozenset({"i8", "u8"})
# Runtime layers holding the multiply-accumulate work: whether they run int8 decides int8's speed.
_HEAVY_LAYERS = frozenset({"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"})
_READ_BACK = ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
              "EXECUTION_DEVICES", "ENABLE_CPU_PINNING")
# Layers that only move or hold data; their precision says nothing about the arithmetic.
_DATA_LAYERS = frozenset({"Input", "Output", "Parameter", "Result", "Const", "Constant", "Reorder",
                          "Convert"})


def _plain(value):
    """An OpenVINO property value as JSON-friendly data (ov.Type -> "f32", enums -> their name)."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return getattr(value, "name", str(value))


def _device_present(device: str, available: list[str]) -> bool:
    if device == "AUTO" or device in available:
        return True
    return device in ("GPU", "GPU.0") and any(d.startswith("GPU") for d in available)


def op_precisions(compiled) -> dict[str, int]:
    """How many compute layers of the compiled (runtime) graph run in each precision."""
    return dict(Counter(precision for _, precision in _compute_layers(compiled)))


def int8_layers(compiled) -> dict[str, int]:
    """Compute layers that run int8 (i8/u8), overall and among the MatMul/Convolution layers."""
    layers = _compute_layers(compiled)
    heavy = [p for kind, p in layers if kind in _HEAVY_LAYERS]
    return {"int8_layers": sum(p in _INT8 for _, p in layers), "compute_layers": len(layers),
            "matmul_conv_int8": sum(p in _INT8 for p in heavy), "matmul_conv_layers": len(heavy)}


def _compute_layers(compiled) -> list[tuple[str, str]]:
    """(layer type, runtime precision) of every compute layer of the compiled (runtime) graph."""
    found = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind not in _DATA_LAYERS:
            found.append((kind, info["runtimePrecision"].astype(str)))
    return found


class OpenVinoRuntime(Runtime):
    """One compiled model and one InferRequest whose input tensor shares the prepared array's memory."""

    name: ClassVar[str] = "ov"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "fp16", "int8")
    devices: ClassVar[tuple[str, ...]] = ("cpu", "gpu", "auto")
    formats: ClassVar[tuple[str, ...]] = ("onnx", "openvino-ir")
    int8_from_export: ClassVar[bool] = True  # an NNCF IR (python -m export --precision int8 --runtime ov)
    can_explain: ClassVar[bool] = True
    Options: ClassVar[type] = OvOptions

    def __init__(self, options) -> None:
        super().__init__(options)
        kind, index = parse_device(self.name, options.device, self.devices)
        gpu = f"GPU.{index}" if ":" in options.device else "GPU"
        self._ov_device = {"cpu": "CPU", "auto": "AUTO"}.get(kind, gpu)

    @classmethod
    def probe(cls, device: str | None = None) -> Availability:
        if not is_installed("openvino"):
            return Availability(cls.name, False, str(MissingDependency("openvino", "ov")))
        try:
            ov = require("openvino", "ov")
            devices = ov.Core().available_devices
            detail = f"openvino {ov.__version__}; devices: {', '.join(devices)}"
            if device is not None:
                wanted = cls(RuntimeOptions(device=device))._ov_device
                if not _device_present(wanted, devices):
                    return Availability(cls.name, False, f"OpenVINO device {wanted} not found", detail)
        except Exception as exc:
            return Availability(cls.name, False, f"{type(exc).__name__}: {exc}")
        return Availability(cls.name, True, detail=detail)

    def _load(self, artifact: Artifact) -> None:
        ov = require("openvino", "ov")
        core = ov.Core()
        if not _device_present(self._ov_device, core.available_devices):
            raise RuntimeUnavailable(f"OpenVINO device {self._ov_device} not found "
                                     f"(available: {', '.join(core.available_devices)})")
        self.precision_for(self.options.precision, artifact)
        model = core.read_model(str(artifact.model_path))
        shape = list(artifact.batch_shape(self.options.batch))
        model.reshape({artifact.input_name: shape})
        config = compile_config(self._ov_device, self.options, self.own)
        self._compiled = core.compile_model(model, self._ov_device, config)

        read_back = {key: self._property(key) for key in _READ_BACK}  # None where AUTO hides its device's
        try:
            ops = op_precisions(self._compiled)
            int8 = int8_layers(self._compiled)
        except Exception as exc:
            ops = int8 = None
            self.notes.append(f"could not read per-layer precision from the runtime model: {exc}")
        self.effective = {
            "device": self._ov_device,
            "precision": self._check_precision(read_back["INFERENCE_PRECISION_HINT"], ops, int8),
            "model_precision": artifact.precision,
            "inference_precision_hint": read_back["INFERENCE_PRECISION_HINT"],
            "performance_hint": read_back["PERFORMANCE_HINT"],
            "num_streams": read_back["NUM_STREAMS"],
            "inference_num_threads": read_back["INFERENCE_NUM_THREADS"],
            "execution_devices": read_back["EXECUTION_DEVICES"],
            "cpu_pinning": read_back["ENABLE_CPU_PINNING"],  # the plugin's choice for the hint; it moves latency
            "op_precisions": ops,
            "int8_layers": int8,
            "static_batch": shape[0],
            "requested_config": {k: str(v) for k, v in config.items()},
        }
        self._record_instructions(core)
        self._request = self._compiled.create_infer_request()
        self._input_name, self._output_name = artifact.input_name, artifact.output_name
        self._batch = shape[0]
        if self.throughput:
            self._plan_throughput()

    @classmethod
    def precision_for(cls, asked: str | None, artifact: Artifact) -> str:
        """int8 is the model's: asked of an fp32 model, or an int8 model asked as something else, it would be a
        silent change; fp32/bf16/fp16 are hints on the fp32 export."""
        stored = artifact.precision
        if asked == "int8" and stored != "int8":
            raise SilentChangeError(
                f"ov runs int8 from a quantized model: {artifact.model_path.name} of {artifact.model} is {stored}; "
                f"run its int8 model (python -m export --manifest {artifact.manifest_path or 'MODEL.onnx.json'} "
                f"--precision int8 --runtime ov makes it; python -m bench makes it on demand), or ask --precision "
                f"fp32/bf16/fp16")
        if stored == "int8" and asked not in (None, "int8"):
            raise SilentChangeError(f"{artifact.model_path.name} of {artifact.model} is an int8 model: its "
                                    f"quantized layers run int8 whatever the hint; ask --precision int8")
        if stored == "fp16":
            raise SilentChangeError(f"{artifact.model_path.name} is an fp16 ONNX model (made for ORT GPU providers "
                                    f"and TensorRT); OpenVINO fp16 is a hint on the fp32 export")
        return "int8" if stored == "int8" else asked or "fp32"

    def _record_instructions(self, core) -> None:
        """The plugin's capabilities and the CPU's instructions for the precision asked; a note when missing."""
        if self._ov_device != "CPU":
            return
        try:
            capabilities = _plain(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        except RuntimeError:
            capabilities = None
        flags = cpu_flags()
        self.effective["optimization_capabilities"] = capabilities
        self.effective["cpu_flags"] = flags
        asked = self.options.precision
        missing = missing_instructions(flags).get(asked)
        if missing and self.effective.get("precision") in (asked, None):  # a stand-in that ran has its own note
            self.notes.append(f"this CPU has no {asked} instructions ({'/'.join(missing)}): "
                              f"{asked} is not expected to run faster than fp32 here")

    def _check_precision(self, hint: str | None, ops: dict[str, int] | None,
                         int8: dict[str, int] | None = None) -> str | None:
        """The precision that runs, from the read-back hint (or the layers when the device hides it)."""
        asked = self.options.precision
        if asked == "int8":
            return self._check_int8(ops, int8)
        low = {p for p in (ops or {}) if p in ("bf16", "f16")}
        ran = _FROM_OV.get(hint) if hint else None
        if ran is None and ops:
            ran = _FROM_OV[sorted(low)[0]] if low else "fp32"
        if ran is None:
            self.notes.append(f"{self._ov_device} does not report its inference precision; asked {asked}")
            return None
        if asked == "fp32" and (ran != "fp32" or low):
            raise SilentChangeError(
                f"asked fp32 but OpenVINO {self._ov_device} runs {ran} (layers: {ops}); "
                f"INFERENCE_PRECISION_HINT=f32 was not honoured"
            )
        if ran == asked:
            return ran
        if ran in FLOAT_STAND_INS.get(asked, ()):  # the device lacks it: fp16 runs as bf16 where bf16 is native
            missing = (missing_instructions(cpu_flags()).get(asked) or []) if self._ov_device == "CPU" else []
            lacks = f" ({'/'.join(missing)})" if missing else ""
            ask_it = f"; --precision {ran} asks for it by name" if ran != "fp32" else ""
            self.notes.append(f"asked {asked} but {self._ov_device} has no native {asked}{lacks}: it ran {ran}"
                              f"{ask_it}")
            log.warning("ov: asked %s, %s runs %s", asked, self._ov_device, ran)
            return ran
        raise SilentChangeError(f"asked {asked} but OpenVINO {self._ov_device} runs {ran}")

    def _check_int8(self, ops: dict[str, int] | None, int8: dict[str, int] | None) -> str | None:
        """int8 ran when compute layers run i8/u8; those left f32 (no int8 kernel here, or kept float by the
        quantizer) are counted and noted."""
        if int8 is None:
            self.notes.append(f"{self._ov_device} does not report per-layer precision: int8 not verified")
            return None
        if int8["int8_layers"] == 0:
            raise SilentChangeError(f"asked int8 but no layer of the compiled model runs int8 on OpenVINO "
                                    f"{self._ov_device} (layers: {ops})")
        if int8["matmul_conv_int8"] < int8["matmul_conv_layers"]:
            self.notes.append(f"{int8['matmul_conv_int8']} of {int8['matmul_conv_layers']} MatMul/Convolution "
                              f"layers run int8, the rest f32 (kept float by the quantizer, or no int8 kernel "
                              f"on this device)")
        return "int8"

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        ov = require("openvino", "ov")
        array, batch = feed_batch(feeds, self._input_name)
        if batch != self._batch:
            raise ValueError(f"ov: compiled for batch {self._batch}, the feed has batch {batch}; "
                             f"set options.batch={batch}")
        self._array = array  # the tensor borrows this memory; keep it alive
        self._request.set_input_tensor(ov.Tensor(array, shared_memory=True))

    def _run(self) -> None:
        self._request.infer()  # synchronous; reads the shared input tensor set in prepare()

    def _outputs(self) -> dict[str, np.ndarray]:
        return {self._output_name: self._request.get_output_tensor(0).data.copy()}

    def _close(self) -> None:
        self._request = self._compiled = self._array = None

    # --- capabilities ------------------------------------------------------------------------------------------
    @classmethod
    def precision_caveat(cls, precision: str, device: str | None, flags: dict[str, bool] | None) -> str | None:
        ran = float_precision_run(precision, flags)
        if device in (None, "cpu") and ran != precision:
            return f"ov {precision}: this CPU has no {precision} instructions, so it would run {ran}"
        return None

    @classmethod
    def _layer_times(cls, artifact: Artifact, inputs: np.ndarray, options: RuntimeOptions, warmup: int,
                     runs: int) -> LayerTimes:
        """OpenVINO's per-layer counters on the CPU (``runtimes.ov_compile``)."""
        return cpu_layer_times(artifact, inputs, options, warmup, runs)

    # --- throughput scenario ---------------------------------------------------------------------------------
    def _plan_throughput(self) -> None:
        """Requests in flight: as asked, else the compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS."""
        optimal = self._property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        requests, source = plan_requests(self.options.requests, int(optimal or 1),
                                         "OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        streams, threads = self.effective["num_streams"], self.effective["inference_num_threads"]
        per_stream = threads_per_request(int(threads), int(streams)) if threads and streams else None
        how = "infer requests, start_async + wait, one thread each"
        self.effective.update(throughput_effective(requests, source, per_stream, how))
        self.effective["optimal_number_of_infer_requests"] = optimal
        self.effective["hyper_threading"] = self._property("ENABLE_HYPER_THREADING")
        if requests < (streams or 0):
            self.notes.append(f"{requests} request(s) in flight keep only {requests} of {streams} streams busy")

    def _property(self, key: str):
        try:
            return _plain(self._compiled.get_property(key))
        except RuntimeError:  # AUTO does not expose every property of its device
            return None

    def _requests(self, end2end: bool) -> Requests:
        """The compiled model's requests, each on its own worker thread (start_async + wait). compute: every
        request reads the prepared array (shared, zero copy); end2end: ``infer`` copies it in and the outputs
        out. Not an AsyncInferQueue with a Python callback: the callback's wrapper can be released on an
        OpenVINO thread, which then needs the GIL while the main thread, holding it, joins those threads when
        the compiled model is destroyed (a deadlock seen here at teardown)."""
        ov = require("openvino", "ov")
        shared = ov.Tensor(self._array, shared_memory=True)
        runs = []
        for _ in range(self.effective["requests"]):
            request = self._compiled.create_infer_request()
            if end2end:
                runs.append(partial(request.infer, self._array, share_inputs=False, share_outputs=False))
            else:
                request.set_input_tensor(shared)
                runs.append(partial(_start_and_wait, request))
        return ThreadedRequests(runs, "ov")

    def versions(self) -> dict[str, str]:
        try:
            return {"openvino": version("openvino")}
        except PackageNotFoundError:
            return {"openvino": require("openvino", "ov").__version__}


def _start_and_wait(request) -> None:
    request.start_async()  # both release the GIL while OpenVINO works
    request.wait()
