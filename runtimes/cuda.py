"""CUDA for the GPU adapters: the runtime API through cuda-python, imported on demand (device memory, streams,
events, devices); the driver and the mapped CUDA libraries through ctypes (probes that need no package); and
a teardown helper that releases everything even when a step fails."""

from __future__ import annotations

import ctypes
import os
import re

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


# --- teardown that frees everything and never hides the first error ---------------------------------------
def release(steps) -> list[str]:
    """Run every ``(what, callable)`` release step, even after one fails; return the failures as text.

    One failed cudaFree must not leak the buffers after it, and a cleanup error must not replace the error
    that made the caller clean up; the caller decides what to do with the list.
    """
    errors = []
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # keep releasing; reported to the caller
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
    return errors


# --- the NVIDIA driver and the CUDA libraries this process has mapped (ctypes: no cuda-python needed) ------
CUDA_ERRORS = {  # CUresult values of cuInit/cuDeviceGetCount on machines without a usable GPU
    34: "CUDA_ERROR_STUB_LIBRARY (libcuda.so.1 is the toolkit's stub, not a driver)",
    35: "CUDA_ERROR_INSUFFICIENT_DRIVER",
    100: "CUDA_ERROR_NO_DEVICE (no GPU visible: CUDA_VISIBLE_DEVICES? a container without --gpus?)",
    101: "CUDA_ERROR_INVALID_DEVICE",
    999: "CUDA_ERROR_UNKNOWN",
}
NO_DRIVER = "no NVIDIA driver (libcuda.so.1 not found)"


def driver_status(build_cuda: str | None, device_id: int = 0, library: str = "libcuda.so.1") -> tuple[str, dict]:
    """``("", facts)`` if the NVIDIA driver can run cuda:``device_id`` for software built for CUDA
    ``build_cuda`` ("13.0"), else ``(why not, facts)``. Facts: driver CUDA version, device count, GPU name
    and compute capability. Uses the driver API through ctypes: nothing to install, nothing printed."""
    facts: dict = {}
    try:
        cuda = ctypes.CDLL(library)
    except OSError:
        return NO_DRIVER, facts
    rc = cuda.cuInit(0)
    if rc != 0:
        return f"the NVIDIA driver failed to initialise: {CUDA_ERRORS.get(rc, rc)}", facts
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
        facts["cuda_driver"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
        if build_cuda:
            major, minor = (int(x) for x in build_cuda.split(".")[:2])
            if version.value < major * 1000 + minor * 10:
                return (f"the NVIDIA driver supports CUDA {facts['cuda_driver']} but this software was built "
                        f"for CUDA {build_cuda}: update the driver"), facts
    count = ctypes.c_int(0)
    rc = cuda.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0:
        return f"cannot count CUDA devices: {CUDA_ERRORS.get(rc, rc)}", facts
    facts["cuda_devices"] = count.value
    if count.value == 0:
        return "the NVIDIA driver sees no GPU", facts
    if device_id >= count.value:
        return f"cuda:{device_id} asked but {count.value} CUDA device(s) visible", facts
    facts.update(_device_facts(cuda, device_id))
    return "", facts


def _device_facts(cuda, device_id: int) -> dict:
    name, device = ctypes.create_string_buffer(256), ctypes.c_int(0)
    if cuda.cuDeviceGet(ctypes.byref(device), device_id) != 0 or cuda.cuDeviceGetName(name, 256, device) != 0:
        return {}
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
    return {"gpu": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}"}


CUDA_LIBRARIES = r"^lib(cudart|cublasLt|cublas|curand|cudnn\w*|nvinfer\w*|nvonnxparser|cuda)\.so"


def mapped_libraries(pattern: str = CUDA_LIBRARIES) -> list[str]:
    """Paths of the shared libraries mapped into this process whose file name matches ``pattern``."""
    found = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if path.startswith("/") and re.search(pattern, os.path.basename(path)):
                    found.add(path)
    except OSError:  # no procfs (macOS): nothing known
        pass
    return sorted(found)


def cudart_versions() -> dict[str, str]:
    """``cudaRuntimeGetVersion`` of every shared libcudart this process has mapped, by file name.

    Not cuda-python's ``cudaRuntimeGetVersion()``: cuda-python links cudart statically, so that is the
    version cuda-python was built with, not the runtime TensorRT or ORT use. Empty: none mapped (the
    libraries in use link it statically)."""
    found = {}
    for path in mapped_libraries(r"^libcudart\.so"):
        try:
            value = ctypes.c_int(0)
            if ctypes.CDLL(path).cudaRuntimeGetVersion(ctypes.byref(value)) == 0:
                found[os.path.basename(path)] = f"{value.value // 1000}.{value.value % 1000 // 10}"
        except (OSError, AttributeError):
            continue
    return found
