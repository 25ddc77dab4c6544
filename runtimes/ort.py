"""OrtRuntime: ONNX Runtime on CPU, CUDA or its TensorRT execution provider.

Choosing the provider: ``device="cpu"`` runs CPUExecutionProvider. ``device="cuda"`` (or ``"cuda:N"``) runs
CUDAExecutionProvider, or TensorrtExecutionProvider with the option ``provider=tensorrt`` (CUDA then takes
the nodes TensorRT declines, as ORT intends). Sessions use ORT_ENABLE_ALL, sequential execution, inter-op 1
and ``threads`` (default: physical cores) intra-op threads. Inputs are bound once with I/O binding; on GPU
they live in device memory, so ``run()`` times compute, not host copies.

Silent fallback (anchors 4H): ORT quietly runs on CPU when a GPU provider fails to load, so ``load()``
raises :class:`SilentChangeError` when the requested provider is missing from ``session.get_providers()``.
On GPU it also runs the model once with profiling to record which provider ran each node
(``effective["node_placement"]``); compute ops on CPU raise, shape-only ops placed on CPU by design are
noted. The option ``strict_placement=true`` sets ``session.disable_cpu_ep_fallback`` so ORT itself refuses
any CPU node. That first run also moves lazy work (TensorRT EP engine builds, cuDNN algorithm search) into
``load()``.

Throughput scenario (option ``concurrency``): ``threads`` (default) runs ``run_with_iobinding`` on the one
session from ``requests`` threads at once, each with its own binding, the intra-op threads split among them
(default: one request per core, one thread each); ``run_async`` keeps ``requests`` ``run_async`` calls in
flight on ORT's own intra-op pool (all the threads, shared; CPU only, and each call allocates its outputs).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from core.artifact import Artifact
from runtimes.base import (
    Availability,
    Done,
    OptionError,
    Requests,
    Runtime,
    RuntimeUnavailable,
    SilentChangeError,
)
from runtimes.concurrent import ThreadedRequests, plan_requests, threads_per_request, throughput_effective
from runtimes.deps import MissingDependency, is_installed, require
from runtimes.host import default_threads, feed_batch, parse_device

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
    Provider("cpu", "CPUExecutionProvider", "cpu"),
    Provider("cuda", "CUDAExecutionProvider", "cuda"),
    Provider("tensorrt", "TensorrtExecutionProvider", "cuda", fallbacks=("CUDAExecutionProvider",),
             aliases=("trt",)),
)
PROVIDERS = {p.key: p.ort_name for p in PROVIDER_TABLE}


@dataclass(frozen=True)
class OrtOptions:
    provider: str | None = None  # default: the device's first provider in PROVIDER_TABLE
    strict_placement: bool = False
    concurrency: Literal["threads", "run_async"] = "threads"  # throughput scenario: how requests overlap
_GPU_HINT = "install onnxruntime-gpu: pip install -e .[ort-gpu]"
# Op types whose presence on the CPU provider in a GPU session means real work left the GPU.
COMPUTE_OPS = frozenset({
    "Conv", "ConvTranspose", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "BatchNormalization",
    "LayerNormalization", "SkipLayerNormalization", "Softmax", "Attention", "MultiHeadAttention",
    "AveragePool", "GlobalAveragePool", "MaxPool", "HardSwish", "HardSigmoid", "Sigmoid", "Relu", "Erf",
})
_CPU = PROVIDERS["cpu"]


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


def placement_from_profile(events: list[dict]) -> dict[str, Counter]:
    """Per provider, how many nodes of each op type ran, from an ORT profiling trace."""
    placement: dict[str, Counter] = {}
    for event in events:
        args = event.get("args") or {}
        is_kernel = event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
        if is_kernel and "provider" in args:
            placement.setdefault(args["provider"], Counter())[args.get("op_name", "?")] += 1
    return placement


class OrtRuntime(Runtime):
    """ONNX Runtime session with I/O binding; see the module docstring for provider selection."""

    name: ClassVar[str] = "ort"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    Options: ClassVar[type] = OrtOptions

    def __init__(self, options) -> None:
        super().__init__(options)
        row, self._device_id = provider_for(options.device, self.own.provider)
        self._provider = row.ort_name
        self._fallbacks = row.fallbacks
        if self.throughput and self.own.concurrency == "run_async" and row.device_kind != "cpu":
            raise OptionError("ort concurrency=run_async runs on CPU only; use concurrency=threads on GPUs")

    @classmethod
    def probe(cls, device: str | None = None, provider: str | None = None) -> Availability:
        if not is_installed("onnxruntime"):
            return Availability(cls.name, False, str(MissingDependency("onnxruntime", "ort")))
        try:
            ort = require("onnxruntime", "ort")
            available = ort.get_available_providers()
            detail = f"onnxruntime {ort.__version__}; providers: {', '.join(available)}"
            if device is not None:
                wanted = provider_for(device, provider)[0].ort_name
                if wanted not in available:
                    return Availability(cls.name, False, f"{wanted} not available; {_GPU_HINT}", detail)
        except Exception as exc:
            return Availability(cls.name, False, f"{type(exc).__name__}: {exc}")
        return Availability(cls.name, True, detail=detail)

    # --- lifecycle hooks ----------------------------------------------------------------------------------
    def _load(self, artifact: Artifact) -> None:
        ort = require("onnxruntime", "ort")
        self._ort = ort
        available = ort.get_available_providers()
        if self._provider not in available:
            raise RuntimeUnavailable(
                f"{self._provider} not available in onnxruntime {ort.__version__} "
                f"(has {', '.join(available)}); {_GPU_HINT}"
            )
        gpu = self._provider != _CPU
        strict = self.own.strict_placement and gpu
        threads = self.options.threads or default_threads()
        plan = self._plan_throughput(threads) if self.throughput else {}
        so = self._session_options(ort, plan.get("intra_op_threads", threads), strict)
        profile_dir = None
        if gpu:
            profile_dir = tempfile.TemporaryDirectory(prefix="ort-placement-")
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(profile_dir.name) / "placement")

        providers: list = [(self._provider, {"device_id": self._device_id})]
        providers += [(name, {"device_id": self._device_id}) for name in self._fallbacks]
        if gpu and not strict:
            providers.append(_CPU)
        try:
            self._session = ort.InferenceSession(str(artifact.onnx_path), so, providers=providers)
        except Exception as exc:
            if strict and "fallback to CPU EP has been explicitly disabled" in str(exc):
                msg = f"{self._provider} cannot run every node (strict placement): {exc}"
                raise SilentChangeError(msg) from exc
            raise
        active = self._session.get_providers()
        if self._provider not in active:
            raise SilentChangeError(
                f"asked for {self._provider} but the session runs on {active}: the provider failed to load "
                f"(missing CUDA/cuDNN/TensorRT libraries?) and ORT fell back silently"
            )
        self._input_name, self._output_name = artifact.input_name, artifact.output_name
        self._binding = self._session.io_binding()
        self._device = "cuda" if gpu else "cpu"
        self.effective = {
            "provider": self._provider,
            "providers_active": active,
            "device": f"cuda:{self._device_id}" if gpu else "cpu",
            "precision": artifact.precision,
            "graph_optimization": "ORT_ENABLE_ALL",
            "execution_mode": "sequential",
            "intra_op_threads": threads,
            "inter_op_threads": 1,
            "io_binding": True,
            "inputs_on_device": gpu,
            "strict_placement": strict,
            "model_precision": artifact.precision,
            **plan,
        }
        if gpu:
            try:
                self._check_placement(artifact)
            finally:
                profile_dir.cleanup()

    @staticmethod
    def _session_options(ort, threads: int, strict: bool):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        if strict:
            # ORT then fails session creation instead of assigning any node to CPU; listing the CPU provider
            # as well is rejected as a conflicting configuration, so it is left out.
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return so

    def _check_placement(self, artifact: Artifact) -> None:
        """One profiled run on zeros; record per-node providers, raise if compute ops ran on CPU."""
        self._bind(np.zeros(artifact.batch_shape(self.options.batch), dtype=artifact.input_dtype))
        self._session.run_with_iobinding(self._binding)
        profile = self._session.end_profiling()  # also switches profiling off for the timed runs
        placement = placement_from_profile(json.loads(Path(profile).read_text()))
        self.effective["node_placement"] = {p: dict(c) for p, c in placement.items()}
        self.effective["load_includes_first_run"] = True
        self.notes.append("load() ran the model once (placement check); the harness's first run is not cold")
        on_cpu = placement.get(_CPU, Counter())
        if on_cpu:
            heavy = sorted(set(on_cpu) & COMPUTE_OPS)
            if heavy:
                raise SilentChangeError(f"{self._provider} left compute ops on CPU: {', '.join(heavy)}")
            self.notes.append(f"{sum(on_cpu.values())} shape-only node(s) ran on CPU by ORT's design: "
                              f"{', '.join(sorted(on_cpu))}")

    def _bind(self, array: np.ndarray, binding=None) -> None:
        binding = self._binding if binding is None else binding  # another: a throughput request's own
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        if self._device == "cpu":
            binding.bind_cpu_input(self._input_name, array)
        else:
            # One host-to-device copy here, outside the timed region; run() then reads device memory.
            value = self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._device_id)
            binding.bind_ortvalue_input(self._input_name, value)
        binding.bind_output(self._output_name, self._device, self._device_id)
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
        return {"onnxruntime": require("onnxruntime", "ort").__version__}

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


class _AsyncRuns(Requests):
    """``size`` run_async calls in flight on the session's intra-op pool; the callback reports completion."""

    def __init__(self, session, input_name: str, output_name: str, array: np.ndarray, size: int) -> None:
        self.size = size
        self._session, self._outputs, self._feeds = session, [output_name], {input_name: array}

    def start(self, done: Done) -> None:
        self._session.run_async(self._outputs, self._feeds, _async_finished, done)


def _async_finished(results, done: Done, error: str) -> None:
    done(RuntimeError(f"onnxruntime run_async: {error}") if error else None)
