"""OrtRuntime: ONNX Runtime on CPU, CUDA or its TensorRT execution provider.

Choosing the provider: ``device="cpu"`` runs CPUExecutionProvider. ``device="cuda"`` (or ``"cuda:N"``) runs
CUDAExecutionProvider, or TensorrtExecutionProvider with the option ``provider=tensorrt`` (CUDA then takes
the nodes TensorRT declines, as ORT intends). Sessions use ORT_ENABLE_ALL, sequential execution, inter-op 1
and ``threads`` (default: physical cores) intra-op threads, set in ``runtimes.ort_session`` (also the layer
profiler's and ``bench explain``'s sessions). Inputs are bound once with I/O binding; on GPU they live in device
memory, so ``run()`` times compute, not host copies.

Precision: ORT runs the model file as it is, so the precision asked must be the model file's (an fp16 or
int8 QDQ export for fp16/int8). On CUDA, fp32 means IEEE fp32: ``use_tf32=0`` is always passed (ORT's
default is TF32) and read back; the option ``tf32=true`` allows TF32 and records the precision as ``tf32``.
The TensorRT provider has no TF32 switch: for fp32 the adapter sets ``NVIDIA_TF32_OVERRIDE=0`` before
TensorRT loads, or records ``tf32``.

GPU sessions (``runtimes.ort_gpu``): ``load()`` first checks the provider can run here (driver, GPU, the
CUDA/cuDNN/TensorRT libraries, one onnxruntime package) and raises one :class:`RuntimeUnavailable` line if
not; the session is created without ORT's silent retry on other providers. It then runs the model once
with profiling and judges which provider ran each node (``runtimes.ort_placement``): real work on CPU, or
TensorRT taking no subgraph, raises :class:`SilentChangeError`; ORT's shape arithmetic on CPU is noted. The
option ``strict_placement=true`` sets ``session.disable_cpu_ep_fallback`` so ORT itself refuses any CPU node
(shape arithmetic included). That first run also moves lazy work (TensorRT EP engine builds, cuDNN algorithm
search) into ``load()``.

Throughput scenario (option ``concurrency``): ``threads`` (default) runs ``run_with_iobinding`` on the one
session from ``requests`` threads at once, each with its own binding, the intra-op threads split among them
(default: one request per core, one thread each); ``run_async`` keeps ``requests`` ``run_async`` calls in
flight on ORT's own intra-op pool (all the threads, shared; CPU only, and each call allocates its outputs).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from core.artifact import Artifact
from core.cores import default_threads
from core.cpu import missing_instructions, native
from runtimes.base import (
    Availability,
    Done,
    LayerTimes,
    OptionError,
    Requests,
    Runtime,
    RuntimeOptions,
    RuntimeUnavailable,
    SilentChangeError,
    option,
)
from runtimes.concurrent import ThreadedRequests, plan_requests, threads_per_request, throughput_effective
from runtimes.deps import MissingDependency, is_installed, require
from runtimes.host import feed_batch, parse_device
from runtimes.ort_gpu import (
    GPU_INSTALL,
    create_session,
    keep_tensorrt_fp32,
    ort_distributions,
    provider_status,
    tensorrt_options,
    tf32_effective,
)
from runtimes.ort_placement import CPU, CUDA, TENSORRT, placement_verdict
from runtimes.ort_session import DEPLOY_LEVEL, cpu_layer_times, session_options

# ORT's WeightBiasQuantization (basic level) rewrites a QDQ node's float bias as int32 + DequantizeLinear; the CUDA
# provider has no int32 DequantizeLinear, so those nodes would run on the CPU at every run (seen on an H200,
# onnxruntime-gpu 1.31.1: benchmarks/ort_cuda_qdq_placement.py).
CUDA_INT8_DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provider:
    """One ORT execution provider this adapter can run: the ``provider`` option value selects it."""

    key: str  # the option value: --option provider=<key>
    ort_name: str
    device_kind: str  # the --device kind it runs on
    fallbacks: tuple[str, ...] = ()  # providers listed after it, for the nodes it declines
    aliases: tuple[str, ...] = ()


# Adding a provider is one row here (and, for a new device kind, a device in OrtRuntime.devices).
PROVIDER_TABLE = (
    Provider("cpu", CPU, "cpu"),
    Provider("cuda", CUDA, "cuda"),
    Provider("tensorrt", TENSORRT, "cuda", fallbacks=(CUDA,), aliases=("trt",)),
)
PROVIDERS = {p.key: p.ort_name for p in PROVIDER_TABLE}


@dataclass(frozen=True)
class OrtOptions:
    provider: str | None = option(None, "execution provider: cpu, cuda or tensorrt (alias trt); default: the "
                                        "device's first (cpu on --device cpu, cuda on --device cuda)")
    strict_placement: bool = option(False, "GPU: ORT itself refuses any node on the CPU, shape arithmetic "
                                           "included (session.disable_cpu_ep_fallback)")
    tf32: bool = option(False, "CUDA provider: allow TF32 matmuls/convolutions (ORT's default); the record says "
                               "precision tf32")
    trt_engine_cache_dir: str | None = option(None, "TensorRT provider: folder of its engine and timing caches")
    concurrency: Literal["threads", "run_async"] = option(
        "threads", "throughput scenario: threads (run_with_iobinding from one thread per request) or run_async "
                   "(run_async calls on the shared intra-op pool; CPU only)")


def provider_for(device: str, choice: str | None = None) -> tuple[Provider, int]:
    """The provider row and device id for ``device`` and the ``provider`` option."""
    kind, index = parse_device(OrtRuntime.name, device, OrtRuntime.devices)
    if choice is None:
        return next(p for p in PROVIDER_TABLE if p.device_kind == kind), index
    wanted = choice.lower()
    for provider in PROVIDER_TABLE:
        if wanted in (provider.key, provider.ort_name.lower(), *provider.aliases):
            if provider.device_kind != kind:
                raise OptionError(f"provider {provider.key!r} does not run on device {device!r}")
            return provider, index
    raise OptionError(f"unknown ORT provider {choice!r}; choose one of {', '.join(PROVIDERS)}")


class OrtRuntime(Runtime):
    """ONNX Runtime session with I/O binding; see the module docstring for providers and precision."""

    name: ClassVar[str] = "ort"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")  # the model file's; see _check_precision
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    int8_from_export: ClassVar[bool] = True  # a QDQ ONNX (python -m export --precision int8 --runtime ort)
    can_explain: ClassVar[bool] = True
    Options: ClassVar[type] = OrtOptions

    def __init__(self, options) -> None:
        super().__init__(options)
        row, self._device_id = provider_for(options.device, self.own.provider)
        self._provider = row.ort_name
        self._gpu = row.device_kind != "cpu"
        # As early as the request is known, before anything loads TensorRT or cuBLAS (the probe does).
        self._tf32_note = keep_tensorrt_fp32(self._provider, self.own.tf32, options.precision)
        if self.throughput and self.own.concurrency == "run_async" and self._gpu:
            raise OptionError("ort concurrency=run_async runs on CPU only; use concurrency=threads on GPUs")

    @classmethod
    def probe(cls, device: str | None = None, provider: str | None = None) -> Availability:
        """Available = the provider can run here now (library, driver, GPU), not merely compiled in."""
        if not is_installed("onnxruntime"):
            return Availability(cls.name, False, str(MissingDependency("onnxruntime", "ort")))
        try:
            ort = require("onnxruntime", "ort")
            dists = ", ".join(ort_distributions()) or f"onnxruntime {ort.__version__}"
            detail = f"{dists}; providers compiled in: {', '.join(ort.get_available_providers())}"
            if device is None:
                return Availability(cls.name, True, detail=detail, notes=gpu_provider_lines())
            row, index = provider_for(device, provider)
            if row.device_kind == "cpu":
                return Availability(cls.name, True, detail=detail)
            status = provider_status(row.ort_name, index)
            if not status.usable:
                return Availability(cls.name, False, status.reason, detail)
            where = status.detail.get("gpu", f"cuda:{index}")
            return Availability(cls.name, True, detail=f"{detail}; {row.ort_name} usable on {where}")
        except Exception as exc:  # probe must never raise
            return Availability(cls.name, False, f"{type(exc).__name__}: {exc}")

    # --- lifecycle hooks ----------------------------------------------------------------------------------
    def _load(self, artifact: Artifact) -> None:
        ort = self._ort = require("onnxruntime", "ort")
        self._check_precision(artifact)
        threads = self.options.threads or default_threads()
        plan = self._plan_throughput(threads) if self.throughput else {}
        threads = plan.get("intra_op_threads", threads)
        # GPU: profiling on for one run, whose trace says which provider ran each node
        profile_dir = tempfile.TemporaryDirectory(prefix="ort-placement-") if self._gpu else None
        try:
            prefix = str(Path(profile_dir.name) / "placement") if profile_dir is not None else None
            so = session_options(ort, threads, profile_prefix=prefix)
            if self._gpu:
                self._session = self._gpu_session(ort, artifact, so)
            else:
                self._session = ort.InferenceSession(str(artifact.onnx_path), so, providers=[CPU])
            self._input_name, self._output_name = artifact.input_name, artifact.output_name
            self._binding = self._session.io_binding()
            self.effective = {
                "provider": self._provider,
                "providers_active": self._session.get_providers(),
                "device": f"cuda:{self._device_id}" if self._gpu else "cpu",
                "precision": artifact.precision,
                "model_precision": artifact.precision,
                "graph_optimization": DEPLOY_LEVEL,
                "execution_mode": "sequential",
                "intra_op_threads": threads,
                "inter_op_threads": 1,
                "io_binding": True,
                "inputs_on_device": self._gpu,
                "strict_placement": self._gpu and self.own.strict_placement,
                **plan,
            }
            if self._gpu:
                self._record_gpu(artifact)
        finally:
            if profile_dir is not None:
                profile_dir.cleanup()

    @classmethod
    def precision_for(cls, asked: str | None, artifact: Artifact) -> str:
        """ORT runs the model file as it is: a precision other than the file's would be a silent change."""
        stored = artifact.precision
        if asked not in (None, stored):
            raise SilentChangeError(
                f"ort runs the model file's precision: {artifact.model_path.name} of {artifact.model} is "
                f"{stored}, not {asked}; run the {asked} export of the model, or ask --precision {stored}")
        return stored

    def _check_precision(self, artifact: Artifact) -> None:
        """The file's precision (``precision_for``), and a note where the CPU runs it slowly."""
        stored = self.precision_for(self.options.precision, artifact)
        if self._gpu:
            return
        if stored == "fp16":  # the fp16 export is made for GPU providers and TensorRT
            self.notes.append("fp16 model on ORT's CPU provider: it has few fp16 kernels and inserts Casts around "
                              "the rest, so this runs slower than the fp32 model; fp16 is for CUDA/TensorRT")
        elif stored == "int8" and not native("int8"):
            missing = "/".join(missing_instructions()["int8"])
            self.notes.append(f"this CPU has no int8 dot-product instructions ({missing}): int8 is not expected "
                              f"to run faster than fp32 here")

    # --- GPU: session, precision read-back, placement -------------------------------------------------------
    def _gpu_session(self, ort, artifact: Artifact, so):
        """A session on the GPU provider, or one clear error (``runtimes.ort_gpu``)."""
        status = provider_status(self._provider, self._device_id)  # also loads the CUDA/TensorRT libraries
        if not status.usable:
            raise RuntimeUnavailable(status.reason)  # one line; ORT never gets to print its fallback banner
        own = self.own
        if self._tf32_note and artifact.precision == "fp32":
            self.notes.append(self._tf32_note)
        trt_options = tensorrt_options(artifact.precision, own.trt_engine_cache_dir) \
            if self._provider == TENSORRT else None
        disabled = CUDA_INT8_DISABLED_OPTIMIZERS if self._provider == CUDA and artifact.precision == "int8" else ()
        if disabled:
            self.effective["disabled_optimizers"] = list(disabled)
            self.notes.append(f"ORT optimizer(s) {', '.join(disabled)} disabled: on CUDA they would turn float "
                              f"biases into int32 DequantizeLinear nodes, which run on the CPU")
        return create_session(ort, str(artifact.onnx_path), so, self._provider, self._device_id, tf32=own.tf32,
                              strict=own.strict_placement, trt_options=trt_options, disabled_optimizers=disabled)

    def _record_gpu(self, artifact: Artifact) -> None:
        fields, precision = tf32_effective(self._session, self._provider, artifact.precision)
        self.effective.update(fields)
        self.effective["precision"] = precision
        if precision == "tf32":
            self.notes.append("fp32 ran with TF32 matmuls/convolutions (10-bit mantissa): judged by the tf32 "
                              "drift gates, not fp32's")
        self._check_placement(artifact)

    def _check_placement(self, artifact: Artifact) -> None:
        """One profiled run on zeros; the per-node placement verdict is recorded, a bad one raises."""
        self._bind(np.zeros(artifact.batch_shape(self.options.batch), dtype=artifact.input_dtype))
        self._session.run_with_iobinding(self._binding)
        profile = self._session.end_profiling()  # also switches profiling off for the timed runs
        verdict = placement_verdict(json.loads(Path(profile).read_text()), self._provider)
        self.effective["node_placement"] = verdict.summary()
        self.effective["load_includes_first_run"] = True
        self.notes.append("load() ran the model once (placement check); the harness's first run is not cold")
        self.notes.extend(verdict.notes)
        if not verdict.ok:
            raise SilentChangeError(verdict.problem)
        if artifact.precision == "int8" and self._provider == CUDA and not verdict.int8_kernels.get(CUDA):
            self.notes.append("the CUDA provider ran no int8 kernel: this QDQ model ran as DequantizeLinear + "
                              "float kernels (int8 rounding, float speed)")

    # --- run ------------------------------------------------------------------------------------------------
    def _bind(self, array: np.ndarray, binding=None) -> None:
        binding = self._binding if binding is None else binding  # another: a throughput request's own
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        if not self._gpu:
            binding.bind_cpu_input(self._input_name, array)
        else:
            # One host-to-device copy here, outside the timed region; run() then reads device memory.
            value = self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._device_id)
            binding.bind_ortvalue_input(self._input_name, value)
        binding.bind_output(self._output_name, "cuda" if self._gpu else "cpu", self._device_id)
        self._bound = array  # the binding does not own host memory; keep it alive

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        array, _ = feed_batch(feeds, self._input_name)
        self._bind(array)

    def _run(self) -> None:
        # Blocks until the providers have synchronised their streams (ORT's default for Run).
        self._session.run_with_iobinding(self._binding)

    def _outputs(self) -> dict[str, np.ndarray]:
        return {self._output_name: self._binding.copy_outputs_to_cpu()[0]}

    def _close(self) -> None:
        self._binding = self._session = self._bound = None

    def versions(self) -> dict[str, str]:
        found = {"onnxruntime": require("onnxruntime", "ort").__version__}
        dists = ort_distributions()
        if dists:
            found["onnxruntime_distribution"] = ", ".join(dists)
        return found

    # --- capabilities ------------------------------------------------------------------------------------------
    @classmethod
    def precision_caveat(cls, precision: str, device: str | None, flags: dict[str, bool] | None) -> str | None:
        if precision == "fp16" and device in (None, "cpu"):
            return "ort fp16: the CPU provider only adds Casts around fp32 kernels"
        return None

    @classmethod
    def _layer_times(cls, artifact: Artifact, inputs: np.ndarray, options: RuntimeOptions, warmup: int,
                     runs: int) -> LayerTimes:
        """ORT's profiler on the CPU provider (``runtimes.ort_session``)."""
        return cpu_layer_times(artifact, inputs, options.threads or default_threads(), warmup, runs)

    # --- throughput scenario ---------------------------------------------------------------------------------
    def _plan_throughput(self, threads: int) -> dict:
        """Requests in flight (default: one per thread) and the intra-op threads of the session."""
        requests, source = plan_requests(self.options.requests, threads, "one request per thread (core)")
        if self.own.concurrency == "run_async":
            if threads < 2:
                raise OptionError("ort concurrency=run_async needs at least 2 threads (ORT runs it on its "
                                  "intra-op pool); use concurrency=threads")
            plan = throughput_effective(requests, source, threads, "run_async on the shared intra-op pool")
            return {**plan, "intra_op_threads": threads}
        per_request = threads_per_request(threads, requests)
        plan = throughput_effective(requests, source, per_request, "threads: run_with_iobinding per thread")
        if requests * per_request > threads:
            self.notes.append(f"{requests} requests x {per_request} thread(s) oversubscribe {threads} threads")
        return {**plan, "intra_op_threads": per_request}

    def _requests(self, end2end: bool) -> Requests:
        array, size = self._bound, self.effective["requests"]
        if self.own.concurrency == "run_async":
            return _AsyncRuns(self._session, self._input_name, self._output_name, array, size)
        if end2end:  # host input in, host outputs out, as prepare() + run() + outputs() do
            feeds = {self._input_name: array}
            runs = [partial(self._session.run, [self._output_name], feeds) for _ in range(size)]
        else:
            bindings = [self._session.io_binding() for _ in range(size)]
            for binding in bindings:
                self._bind(array, binding)
            runs = [partial(self._session.run_with_iobinding, binding) for binding in bindings]
        return ThreadedRequests(runs, "ort")



def gpu_provider_lines() -> tuple[str, ...]:
    """One ``bench list`` line per GPU provider: usable here, or why not."""
    gpu_rows = [row for row in PROVIDER_TABLE if row.device_kind != "cpu"]
    compiled_in = require("onnxruntime", "ort").get_available_providers()
    if len(ort_distributions()) < 2 and not any(row.ort_name in compiled_in for row in gpu_rows):
        return (f"--device cuda: no GPU provider in this onnxruntime build (the CPU package); on an NVIDIA "
                f"machine: {GPU_INSTALL}",)
    lines = []
    for row in gpu_rows:
        status = provider_status(row.ort_name)
        state = f"usable on {status.detail.get('gpu', 'cuda:0')}" if status.usable else "unusable"
        reason = status.reason.removeprefix(f"{row.ort_name} unusable: ")
        lines.append(f"--device cuda{'' if row.key == 'cuda' else f' --option provider={row.key}'}: "
                     f"{row.ort_name} {state}{': ' + reason if reason else ''}")
    return tuple(lines)


class _AsyncRuns(Requests):
    """``size`` run_async calls in flight on the session's intra-op pool; the callback reports completion."""

    def __init__(self, session, input_name: str, output_name: str, array: np.ndarray, size: int) -> None:
        self.size = size
        self._session, self._outputs, self._feeds = session, [output_name], {input_name: array}

    def start(self, done: Done) -> None:
        self._session.run_async(self._outputs, self._feeds, _async_finished, done)


def _async_finished(results, done: Done, error: str) -> None:
    done(RuntimeError(f"onnxruntime run_async: {error}") if error else None)
