"""The ov adapter's options and compile settings, set in this one place: the adapter, its layer profiler
(``bench --profile``) and ``bench explain`` all compile with :func:`compile_config`, so what they look at is what
the benchmark ran.

The inference precision is always set (``OV_PRECISION``): the CPU plugin runs bf16 by default on CPUs with AMX
or AVX512-BF16, so an unset hint would silently run bf16 as "fp32". An int8 model runs with the f32 hint, so
layers without an int8 kernel stay f32 and what is measured is the quantisation, not bf16 on top of it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.artifact import Artifact
from core.cores import default_threads
from runtimes.base import LayerTimes, NodeTime, RuntimeOptions, option
from runtimes.deps import require

OV_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}  # int8: the model's, f32 elsewhere


@dataclass(frozen=True)
class OvOptions:
    hint: Literal["latency", "throughput"] | None = option(
        None, "PERFORMANCE_HINT; default: the scenario's (latency, or throughput with --scenario throughput)")
    streams: int | None = option(None, "NUM_STREAMS; default: what the performance hint picks")


def compile_config(device: str, options: RuntimeOptions, own: OvOptions | None = None, *,
                   profile: bool = False) -> dict:
    """The ``compile_model`` properties for OpenVINO ``device`` ("CPU", "GPU.1", "AUTO") and the options asked;
    ``profile``: per-layer performance counters on."""
    own = own or OvOptions()
    throughput = options.scenario == "throughput"
    config: dict = {
        "INFERENCE_PRECISION_HINT": OV_PRECISION[options.precision],
        "PERFORMANCE_HINT": (own.hint or ("throughput" if throughput else "latency")).upper(),
    }
    if device == "CPU":  # the GPU and AUTO plugins reject a thread count
        config["INFERENCE_NUM_THREADS"] = options.threads or default_threads()
    if own.streams is not None:
        config["NUM_STREAMS"] = own.streams
    if throughput and options.requests is not None:
        config["PERFORMANCE_HINT_NUM_REQUESTS"] = options.requests  # streams <= requests in flight
    if profile:
        config["PERF_COUNT"] = "YES"
    return config


def cpu_layer_times(artifact: Artifact, inputs: np.ndarray, options: RuntimeOptions, warmup: int,
                    runs: int) -> LayerTimes:
    """Real time per layer type over ``runs`` runs after ``warmup`` on the CPU (the batch made static, as the
    adapter does), from OpenVINO's per-layer counters.

    ``get_profiling_info()`` describes the last inference only, so the counters are summed over the runs; only
    EXECUTED layers count; ``exec_type`` names the kernel.
    """
    ov = require("openvino", "ov")
    core = ov.Core()
    model = core.read_model(str(artifact.model_path))
    model.reshape({artifact.input_name: list(inputs.shape)})
    compiled = core.compile_model(model, "CPU", compile_config("CPU", options, profile=True))
    shapes = {op.get_friendly_name(): ",".join(str(out.get_partial_shape()) for out in op.outputs())
              for op in compiled.get_runtime_model().get_ordered_ops()}
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(inputs, shared_memory=True))
    for _ in range(warmup):
        request.infer()
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    kernels: dict[str, set] = defaultdict(set)
    per_node: dict[str, float] = defaultdict(float)
    ran: dict[str, tuple[str, str]] = {}
    for _ in range(runs):
        request.infer()
        for info in request.get_profiling_info():
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                microseconds = info.real_time.total_seconds() * 1e6
                totals[info.node_type] += microseconds
                counts[info.node_type] += 1
                kernels[info.node_type].add(info.exec_type)
                per_node[info.node_name] += microseconds
                ran[info.node_name] = (info.node_type, info.exec_type)
    nodes = {name: NodeTime(ran[name][0], total, shapes.get(name, ""), ran[name][1])
             for name, total in per_node.items()}
    return LayerTimes(dict(totals), dict(counts), dict(kernels), nodes)
