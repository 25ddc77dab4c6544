"""Building a TensorRT 10 engine, and the pure rules around it (they run without TensorRT or a GPU).

- Supported versions: TensorRT 10.x only. 11.x removed the weakly typed builder flags (``BuilderFlag.FP16``,
  ``INT8``) and the int8 calibrator this adapter uses; the registry's default ``tensorrt`` is 11.x now, so
  the ``trt`` extra pins ``tensorrt-cu13>=10.13.2,<11`` (CUDA 13, like onnxruntime-gpu 1.31).
- Precision plan: what to build for the precision asked and the model file's own precision. TensorRT may lower
  an fp32 file to fp16 or int8; int8 sets INT8 *and* FP16 (layers without an int8 kernel then run fp16, not
  fp32) and either calibrates (fp32 file) or uses the scales of an int8 QDQ file (explicit quantization).
- What ran: the engine inspector's per-layer output types (the engine is built with DETAILED profiling
  verbosity), counted, and the precision recorded from them, never from the flags alone.
- One logger for the process: TensorRT keeps the logger pointer it was first given, and every IBuilder and
  IRuntime must use the same one, so a per-instance Python logger would be left dangling once collected.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from typing import NamedTuple

from runtimes.base import OptionError, SilentChangeError
from runtimes.cuda import cudart_versions
from runtimes.engine_cache import engine_key

log = logging.getLogger("runtimes.trt")

SUPPORTED_TENSORRT = ">=10.13.2,<11"
SUPPORTED_MAJOR = 10
TRT_PIP = f"pip install 'tensorrt-cu13{SUPPORTED_TENSORRT}'"
PRECISIONS = ("fp32", "fp16", "int8")


def check_tensorrt_version(version: str) -> str | None:
    """None if this adapter supports TensorRT ``version``; else the one-line reason."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return f"unrecognised tensorrt version {version!r}"
    if major != SUPPORTED_MAJOR:
        return (f"tensorrt {version} is installed; this adapter supports TensorRT 10.x only ({TRT_PIP}): "
                f"TensorRT 11 removed the weakly typed builder flags (BuilderFlag.FP16/INT8) and the int8 "
                f"calibrator it uses")
    return None


# --- shapes and the cache key ----------------------------------------------------------------------------
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


# --- precision ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildPlan:
    """What to build: the builder flags and how int8 gets its scales."""

    precision: str  # asked
    model_precision: str  # of the ONNX file
    builder_flags: tuple[str, ...] = ()
    quantization: str | None = None  # None | "calibration" | "qdq"
    notes: tuple[str, ...] = field(default=())


def build_plan(asked: str, model_precision: str, calibration_data: str | None) -> BuildPlan:
    """The build for ``asked`` on a model file of ``model_precision``; a silent change is an error."""
    if asked not in PRECISIONS:
        raise OptionError(f"runtime 'trt' does not support precision {asked!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")
    if model_precision == "fp32":
        if asked == "fp32":
            return BuildPlan(asked, model_precision)
        if asked == "fp16":
            return BuildPlan(asked, model_precision, ("FP16",),
                             notes=("fp16 permits fp16 kernels; TensorRT keeps layers that are faster in fp32 "
                                    "(layer_precisions counts them)",))
        return BuildPlan(asked, model_precision, ("INT8", "FP16"), "calibration",
                         ("int8 = INT8+FP16 builder flags, scales calibrated on the same images as the other "
                          "int8 paths; layers without an int8 kernel run fp16 (layer_precisions counts them)",))
    if model_precision != asked or asked == "fp32":
        raise SilentChangeError(f"the model file is {model_precision}, TensorRT would not run it as {asked}: "
                                f"ask --precision {model_precision} or run the fp32 export")
    if asked == "fp16":
        return BuildPlan(asked, model_precision, ("FP16",))
    if calibration_data is not None:
        raise OptionError("this int8 model is quantized (QDQ): it carries its scales; drop calibration_data")
    return BuildPlan(asked, model_precision, ("INT8", "FP16"), "qdq",
                     ("int8 from the QDQ model's own scales (explicit quantization), the same the ORT int8 "
                      "runs use; layers without an int8 kernel run fp16",))


_PRECISION_PATTERNS = (
    ("int8", re.compile(r"\bint8\b", re.I)),
    ("fp8", re.compile(r"\bfp8\b|\bfloat8", re.I)),
    ("bf16", re.compile(r"\bbf16\b|\bbfloat16\b", re.I)),
    ("fp16", re.compile(r"\bfp16\b|\bhalf\b", re.I)),
    ("fp32", re.compile(r"\bfp32\b|\bfloat\b", re.I)),
    ("int32", re.compile(r"\bint32\b", re.I)),
    ("int64", re.compile(r"\bint64\b", re.I)),
    ("bool", re.compile(r"\bbool\b", re.I)),
)
FLOAT_ORDER = ("int8", "fp8", "fp16", "bf16", "fp32")  # lowest first


def layer_precisions(engine_information: str) -> dict[str, int]:
    """Layers counted by the data type of their first output, from the engine inspector's JSON.

    TensorRT 10 writes ``"Outputs": [{"Name": ..., "Format/Datatype": "Channel major FP16 format ..."}]``
    per layer (``DataType``/``Format`` are read too). Needs an engine built with DETAILED profiling
    verbosity; with LAYER_NAMES_ONLY the layers are bare strings: ``{"unknown": n}``."""
    counts: Counter = Counter()
    for layer in json.loads(engine_information).get("Layers", []):
        if not isinstance(layer, dict):
            counts["unknown"] += 1
            continue
        outputs = layer.get("Outputs") or []
        if not outputs:
            counts["other"] += 1
            continue
        text = " ".join(str(outputs[0].get(k, "")) for k in ("Format/Datatype", "DataType", "Format"))
        counts[next((name for name, pattern in _PRECISION_PATTERNS if pattern.search(text)), "other")] += 1
    return dict(counts)


def precision_ran(asked: str, layers: dict[str, int], tf32: bool) -> tuple[str, str | None]:
    """(precision to record, the mix when several float types ran). The recorded precision is the lowest
    float type any layer ran in, so int8 asked but no int8 layer built reads ``fp16``, never ``int8``."""
    floating = {k: layers[k] for k in FLOAT_ORDER if layers.get(k)}
    if not floating:  # no per-layer detail: the request is all there is
        return ("tf32" if asked == "fp32" and tf32 else asked), None
    lowest = next(iter(floating))
    if lowest == "fp32" and tf32:
        lowest = "tf32"
    mix = ", ".join(f"{k} {v}" for k, v in floating.items()) if len(floating) > 1 else None
    return lowest, mix


# --- environment -----------------------------------------------------------------------------------------
def tensorrt_cuda_info() -> dict[str, str]:
    """The CUDA TensorRT was built for (its wheel's name) and the shared libcudart mapped in the process.

    Not cuda-python's ``cudaRuntimeGetVersion()``: cuda-python links cudart statically, so that is its own
    build's version, not what TensorRT uses. TensorRT has no Python API for its CUDA version."""
    found: dict[str, str] = {}
    for dist in ("tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu13_libs", "tensorrt_cu12_libs", "tensorrt"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        found.setdefault("tensorrt_wheel", f"{dist}=={version}")
        match = re.search(r"cu(\d+)", dist)
        if match:
            found.setdefault("tensorrt_cuda_major", match.group(1))
    loaded = cudart_versions()
    for name, version in loaded.items():
        found[f"cudart_loaded:{name}"] = version
    if not loaded:
        found["cudart_loaded"] = "none shared (linked statically into the libraries that use it)"
    return found


_LOGGER = None
_LOGGER_LOCK = threading.Lock()


def trt_logger(trt):
    """The process's one TensorRT logger (see the module docstring), forwarding to Python logging."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            levels = {
                trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
                trt.ILogger.Severity.ERROR: logging.ERROR,
                trt.ILogger.Severity.WARNING: logging.WARNING,
                trt.ILogger.Severity.INFO: logging.DEBUG,  # per-layer build chatter
                trt.ILogger.Severity.VERBOSE: logging.DEBUG,
            }

            class Logger(trt.ILogger):
                def __init__(self):
                    trt.ILogger.__init__(self)  # pybind11 trampoline: the base __init__ must run explicitly

                def log(self, severity, msg):  # called from TensorRT's threads: logging is thread safe
                    log.log(levels.get(severity, logging.INFO), "tensorrt: %s", msg)

            _LOGGER = Logger()
        return _LOGGER


# --- the build ---------------------------------------------------------------------------------------------
def build_serialized(trt, onnx_path, input_name: str, profile: ProfileShapes, flags: dict,
                     calibrator=None) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine with ``flags`` (see TrtRuntime._flags).

    With a calibrator, it calibrates at its own fixed batch (a calibration profile min = opt = max), so the
    scales do not depend on the timing batch. A calibration error is raised after the build, never the
    cleanup's."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then reports layer types
    if flags["workspace_mb"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(flags["workspace_mb"]) << 20)
    if not flags["tf32"]:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; it lowers fp32 matmul/conv precision
    for name in flags["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    if calibrator is not None:
        shape = (flags["calibration"]["batch"], *profile.opt[1:])
        calibration_profile = builder.create_optimization_profile()
        calibration_profile.set_shape(input_name, shape, shape, shape)
        config.int8_calibrator = calibrator  # deprecated since 10.1, gone in 11: the reason for the <11 pin
        config.set_calibration_profile(calibration_profile)
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None and calibrator.error is not None:
        raise RuntimeError(f"trt int8 calibration failed at image {calibrator.index}: "
                           f"{calibrator.error}") from calibrator.error
    if serialized is None:
        raise RuntimeError(f"TensorRT engine build failed for {onnx_path.name} (see the tensorrt log)")
    return bytes(serialized)
