"""The CUDA runtime API through cuda-python, imported on demand (device memory, streams, events, devices)."""

from __future__ import annotations

from runtimes.deps import MissingDependency, is_installed, require


def cudart():
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (>= 12.6) or the older ``cuda.cudart``."""
    if is_installed("cuda.bindings"):
        return require("cuda.bindings.runtime", "trt")
    if is_installed("cuda") and is_installed("cuda.cudart"):
        return require("cuda.cudart", "trt")
    raise MissingDependency("cuda-python", "trt", "TensorRT's device memory and streams come from it")


def error_code(err) -> int:
    return int(getattr(err, "value", err))  # cuda-python enums are IntEnum in 12.x, plain Enum in some 13.x


def cuda_call(result):
    """Unwrap a cuda-python ``(error, *values)`` tuple, raising on any error."""
    err, *values = result
    if error_code(err) != 0:
        raise RuntimeError(f"CUDA error: {getattr(err, 'name', err)}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_identity(cudart, index: int) -> tuple[str, str]:
    """(GPU name, compute capability "8.9") of device ``index``."""
    props = cuda_call(cudart.cudaGetDeviceProperties(index))
    name = props.name
    if isinstance(name, bytes | bytearray):
        name = bytes(name).split(b"\0", 1)[0].decode()
    return str(name), f"{props.major}.{props.minor}"
