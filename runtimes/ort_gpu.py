"""ONNX Runtime's GPU providers: can they run here, and a session that runs them or fails in one line.

What onnxruntime-gpu 1.31 (a CUDA 13 build) does that this module exists for:

- ``get_available_providers()`` says which providers were *compiled in*; it lists CUDA and TensorRT on a
  machine with no GPU and no driver. :func:`provider_status` says whether one can *run* here.
- The provider libraries have no search path for CUDA: ``libonnxruntime_providers_cuda.so`` needs cuBLAS 13,
  cuRAND 10 and cudart 13, the TensorRT one also ``libnvinfer.so.10`` and cuDNN 9. ``onnxruntime.preload_dlls()``
  loads CUDA and cuDNN from the pip ``nvidia-*`` wheels (``onnxruntime-gpu[cuda,cudnn]``) and ``import tensorrt``
  loads TensorRT's; neither happens by itself. Without them the session quietly comes up on CPU.
- CPU ``onnxruntime`` and ``onnxruntime-gpu`` install the same package: installed together, the last one
  installed wins, silently. :func:`ort_distributions` finds that.
- ``InferenceSession`` retries a failed provider with CUDA+CPU or CPU (printing a banner on stdout, dropping the
  provider options); ``enable_fallback=0`` and ``disable_fallback()`` turn that off.
- The CUDA provider runs fp32 matmuls and convolutions in TF32 unless ``use_tf32=0``; the TensorRT provider has
  no TF32 switch, only the ``NVIDIA_TF32_OVERRIDE=0`` environment variable NVIDIA's libraries honour.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.machinery
import io
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import distributions

from runtimes.base import RuntimeUnavailable, SilentChangeError
from runtimes.cuda import NO_DRIVER, driver_status, mapped_libraries
from runtimes.ort_placement import CPU, CUDA, TENSORRT

log = logging.getLogger(__name__)

GPU_INSTALL = "pip install -e '.[gpu]'"
WHEELS = "pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1'"
TENSORRT_10 = "pip install 'tensorrt-cu13>=10.13.2,<11'"
PROVIDER_LIBS = {CUDA: "libonnxruntime_providers_cuda.so", TENSORRT: "libonnxruntime_providers_tensorrt.so"}
# The first library a provider failed to load, and what it means; matched against the dlopen error.
MISSING_HINTS = {
    "libcuda.so": NO_DRIVER,
    "libnvinfer": f"TensorRT 10 not found (libnvinfer.so.10): {TENSORRT_10}",
    "libnvonnxparser": f"TensorRT 10's ONNX parser not found (libnvonnxparser.so.10): {TENSORRT_10}",
    "libcudnn": f"cuDNN 9 not found (libcudnn.so.9): {WHEELS}",
    "libcublas": f"cuBLAS 13 not found (libcublasLt.so.13): {WHEELS}",
    "libcudart": f"the CUDA 13 runtime not found (libcudart.so.13): {WHEELS}",
    "libcurand": f"cuRAND 10 not found (libcurand.so.10): {WHEELS}",
}
REQUIRED_LIBS = ("libcublasLt.so", "libcublas.so", "libcudart.so", "libcudnn.so")
STRICT_REFUSAL = "fallback to CPU EP has been explicitly disabled"
CONFLICT = "Conflicting session configuration"


@dataclass
class GpuStatus:
    """Whether a GPU provider can run here; ``reason`` is one line, ``detail`` what was found."""

    usable: bool
    reason: str = ""
    detail: dict = field(default_factory=dict)


# --- which onnxruntime is installed ------------------------------------------------------------------------
def ort_distributions(search_path: list[str] | None = None) -> list[str]:
    """``name==version`` of every distribution that installed ``onnxruntime/__init__.py`` into the folder the
    ``onnxruntime`` package is imported from (``search_path``: that of a Python with another ``sys.path``).

    Two there (``onnxruntime`` and ``onnxruntime-gpu``) have overwritten each other's files. The same package
    in another folder (a ``pip --target`` folder ahead of site-packages) is shadowed, not overwritten, and
    does not count."""
    spec = importlib.machinery.PathFinder.find_spec("onnxruntime", search_path)
    if spec is None or not spec.origin:
        return []
    imported = os.path.realpath(spec.origin)
    found = set()
    for dist in distributions(**({"path": search_path} if search_path is not None else {})):
        name = (dist.metadata["Name"] or "").lower()
        if not (name == "onnxruntime" or name.startswith(("onnxruntime-", "onnxruntime_", "ort-"))):
            continue
        for file in dist.files or ():
            if file.parts == ("onnxruntime", "__init__.py"):
                if os.path.realpath(str(dist.locate_file(file))) == imported:
                    found.add(f"{dist.metadata['Name']}=={dist.version}")
                break
    return sorted(found)


def clash_reason(dists: list[str]) -> str:
    names = " ".join(d.split("==")[0] for d in dists)
    return (f"{' and '.join(dists)} are installed together and overwrite each other's files (the last one "
            f"installed wins): pip uninstall -y {names}, then install one of them: {GPU_INSTALL} on a GPU "
            f"machine, pip install -e '.[all]' on a CPU one")


# --- making the provider libraries loadable ------------------------------------------------------------------
def nvidia_lib_dirs() -> dict[str, list[str]]:
    """The ``nvidia/cu13/lib`` (cu12) and ``nvidia/cudnn/lib`` folders of the installed nvidia-* wheels."""
    spec = importlib.machinery.PathFinder.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    found: dict[str, list[str]] = {"cuda": [], "cudnn": []}
    for root in roots:
        for kind, sub in (("cuda", "cu13/lib"), ("cuda", "cu12/lib"), ("cudnn", "cudnn/lib")):
            if os.path.isdir(os.path.join(root, sub)):
                found[kind].append(os.path.join(root, sub))
    return found


def _preload_dlls(ort, **kwargs) -> list[str]:
    """``ort.preload_dlls`` with its print()-ed complaints captured instead of written to stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            ort.preload_dlls(msvc=False, **kwargs)
        except Exception as exc:  # it raises for a bad directory only; reported, not fatal
            print(f"preload_dlls raised {type(exc).__name__}: {exc}")
    return [line for line in out.getvalue().splitlines() if line.strip()]


def preload(ort) -> list[str]:
    """Load CUDA and cuDNN from the nvidia-* wheels before a session; returns what is still missing.

    ``preload_dlls()`` looks for the wheels beside the onnxruntime package; when onnxruntime was installed
    elsewhere (``pip --target``) it misses them, so every installed wheel folder is passed explicitly too."""
    if not hasattr(ort, "preload_dlls"):
        return [f"onnxruntime {ort.__version__} has no preload_dlls() (1.21 or newer has)"]
    lines = _preload_dlls(ort, cuda=True, cudnn=True)
    folders = nvidia_lib_dirs()
    for kind in ("cuda", "cudnn"):
        for folder in folders[kind]:
            _preload_dlls(ort, cuda=kind == "cuda", cudnn=kind == "cudnn", directory=folder)
    loaded = [os.path.basename(p) for p in mapped_libraries()]
    missing = [lib for lib in REQUIRED_LIBS if not any(name.startswith(lib) for name in loaded)]
    return [f"not loaded: {', '.join(missing)}", *lines] if missing else []


def load_provider_libraries(ort, provider: str) -> list[str]:
    """What the provider library links but cannot find by itself; returns what is still missing."""
    if provider == TENSORRT:
        with contextlib.suppress(ImportError):  # its __init__ loads libnvinfer.so.10 from tensorrt_libs
            import tensorrt  # noqa: F401
    return preload(ort)


# --- can the provider run here? ---------------------------------------------------------------------------
def provider_status(provider: str = CUDA, device_id: int = 0) -> GpuStatus:
    """Can ``provider`` run on cuda:``device_id`` in this process? Never raises, prints nothing, creates no
    session (a few hundred ms). It cannot prove that cuDNN's sub-libraries load or that the GPU has memory
    to spare: ``load()`` still checks the providers the session reports."""
    detail: dict = {"provider": provider}
    try:
        dists = ort_distributions()
        detail["distributions"] = dists
        if len(dists) > 1:
            return GpuStatus(False, clash_reason(dists), detail)
        import onnxruntime as ort

        reason = _build_problem(ort, provider, detail)
        if reason:
            return GpuStatus(False, reason, detail)
        problems = _library_problems(ort, provider, device_id, detail)
        if problems:
            also = f"; also {'; '.join(problems[1:])}" if problems[1:] else ""
            return GpuStatus(False, f"{provider} unusable: {problems[0]}{also}", detail)
        return GpuStatus(True, "", detail)
    except Exception as exc:  # a probe reports, never raises
        return GpuStatus(False, f"{provider} probe failed: {type(exc).__name__}: {exc}", detail)


def _build_problem(ort, provider: str, detail: dict) -> str:
    from onnxruntime.capi import build_and_package_info as info

    detail["onnxruntime"] = ort.__version__
    detail["built_for_cuda"] = getattr(info, "cuda_version", None) or None
    available = ort.get_available_providers()
    if provider not in available:
        return (f"{provider} is not in this onnxruntime build (it has {', '.join(available)}): on an NVIDIA "
                f"machine install onnxruntime-gpu instead of onnxruntime: {GPU_INSTALL}")
    return ""


def _library_problems(ort, provider: str, device_id: int, detail: dict) -> list[str]:
    problems = []
    reason, driver = driver_status(detail.get("built_for_cuda"), device_id)  # the root cause first
    detail.update(driver)
    if reason:
        problems.append(reason)
    missing = load_provider_libraries(ort, provider)
    if missing:
        detail["preload"] = missing
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    libraries = [PROVIDER_LIBS[provider]]
    if provider == TENSORRT:
        libraries.append(PROVIDER_LIBS[CUDA])  # the nodes TensorRT declines go to CUDA
    for library in libraries:
        try:
            ctypes.CDLL(os.path.join(capi, library))
        except OSError as exc:  # names the first library it could not find
            detail["dlopen_error"] = f"{library}: {exc}"
            hint = next((h for key, h in MISSING_HINTS.items() if key in str(exc)), str(exc))
            if hint not in problems:
                problems.append(hint)
            break
    return problems


# --- the session -----------------------------------------------------------------------------------------
def provider_list(provider: str, device_id: int, *, tf32: bool, strict: bool,
                  trt_options: dict | None = None) -> list:
    """The providers for the session; CUDA always with ``use_tf32`` set, never left to ORT's default (on)."""
    cuda = (CUDA, {"device_id": str(device_id), "use_tf32": "1" if tf32 else "0"})
    if provider == CUDA:
        providers = [cuda]
    elif provider == TENSORRT:  # CUDA takes the nodes TensorRT declines, as ORT intends
        providers = [(TENSORRT, {"device_id": str(device_id), **(trt_options or {})}), cuda]
    else:
        raise ValueError(f"{provider} is not a GPU provider")
    if not strict:
        providers.append(CPU)  # ORT rejects an explicit CPU EP together with disable_cpu_ep_fallback
    return providers


def tensorrt_options(model_precision: str, cache_dir: str | None) -> dict[str, str]:
    """TensorRT provider options for a model file of ``model_precision``: fp16 and int8 (QDQ) models need the
    builder flags, as TensorRT's own adapter sets them (int8 with fp16 for the layers without int8)."""
    options = {"trt_fp16_enable": "1" if model_precision in ("fp16", "int8") else "0",
               "trt_int8_enable": "1" if model_precision == "int8" else "0"}
    if cache_dir:
        options |= {"trt_engine_cache_enable": "1", "trt_engine_cache_path": cache_dir,
                    "trt_timing_cache_enable": "1", "trt_timing_cache_path": cache_dir}
    return options


def create_session(ort, model_path: str, so, provider: str, device_id: int, *, tf32: bool, strict: bool,
                   trt_options: dict | None = None, disabled_optimizers: tuple[str, ...] = ()):
    """A session that runs ``provider`` or raises one clear error; it never falls back silently."""
    providers = provider_list(provider, device_id, tf32=tf32, strict=strict, trt_options=trt_options)
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        # enable_fallback=0: no retry with [CUDA, CPU] or [CPU], no stdout banner, no dropped options
        session = ort.InferenceSession(model_path, so, providers=providers, enable_fallback=0,
                                       disabled_optimizers=list(disabled_optimizers) or None)
    except Exception as exc:  # ORT raises its own pybind types; classified into one line
        raise classify_session_error(exc, provider, device_id) from exc
    session.disable_fallback()  # nor at run time (an EPFail would otherwise switch the session to CPU)
    active = session.get_providers()
    if provider not in active:
        why = provider_status(provider, device_id).reason or "the provider failed to initialise (see ORT's log)"
        raise SilentChangeError(f"asked for {provider} but the session runs on {', '.join(active)}: {why}")
    return session


def classify_session_error(exc: Exception, provider: str, device_id: int) -> Exception:
    """One line for what went wrong creating a GPU session: the provider, strict placement, or the model."""
    message = str(exc)
    status = provider_status(provider, device_id)
    if not status.usable:  # the provider library or the device, not the model
        return RuntimeUnavailable(status.reason)
    if STRICT_REFUSAL in message:
        return SilentChangeError(
            f"strict placement: ORT assigned nodes to the CPU EP although {provider} loaded; that includes the "
            f"shape arithmetic ORT always keeps on CPU: run without strict_placement for the per-node verdict")
    if CONFLICT in message:
        return ValueError(f"{provider}: {message.splitlines()[0]}")
    first = message.strip().splitlines()[0] if message.strip() else repr(exc)
    return RuntimeError(f"{provider} session creation failed: {first}")


# --- TF32 --------------------------------------------------------------------------------------------------
def keep_tensorrt_fp32(provider: str, tf32: bool, precision: str) -> str | None:
    """For fp32 on the TensorRT provider, set ``NVIDIA_TF32_OVERRIDE=0`` before TensorRT loads (its only TF32
    switch); returns a note when that cannot be done (set otherwise, or TensorRT/cuBLAS already loaded).
    Process-wide, so it is done only for that request; the sweep runs one process per cell."""
    if provider != TENSORRT or tf32 or precision != "fp32":
        return None
    value = os.environ.get("NVIDIA_TF32_OVERRIDE")
    if value == "0":
        return None
    if value is None and not mapped_libraries(r"^lib(nvinfer|cublas)"):
        os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
        log.info("ort: set NVIDIA_TF32_OVERRIDE=0 so TensorRT engines run fp32, not TF32")
        return None
    why = f"NVIDIA_TF32_OVERRIDE={value}" if value is not None else "TensorRT or cuBLAS was already loaded"
    return (f"the TensorRT provider may run fp32 layers in TF32 ({why}): start the process with "
            f"NVIDIA_TF32_OVERRIDE=0 for IEEE fp32")


def tf32_effective(session, provider: str, model_precision: str) -> tuple[dict, str]:
    """What the session reports about TF32, read back; and the precision that ran (``tf32`` or the file's)."""
    options = session.get_provider_options()
    cuda_tf32 = options.get(CUDA, {}).get("use_tf32")
    fields = {"provider_options": {p: dict(o) for p, o in options.items() if p != CPU},
              "tf32": None if cuda_tf32 is None else cuda_tf32 == "1",
              "nvidia_tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE")}
    precision = model_precision
    if model_precision == "fp32":
        if fields["tf32"] is not False:  # asked, or not reported (ORT's default is on)
            precision = "tf32"
        if provider == TENSORRT:
            fields["tensorrt_tf32"] = fields["nvidia_tf32_override"] != "0"
            if fields["tensorrt_tf32"]:
                precision = "tf32"
    return fields, precision
