"""Where a model's time goes: the top ops by time per inference, from ONNX Runtime's profiler or OpenVINO's
per-layer counters (``python -m bench run ... --profile N``).

It runs after the timed cell, in a session of its own (profiling slows every run), with the cell's model,
batch and threads on the CPU. The op names are what ran, after the runtime's own fusions (ORT: ``FusedMatMul``,
``QuickGelu``...; OpenVINO: ``FullyConnected``, ``Subgraph``...), so the table shows what a graph pass could
still change.

ORT: one trace event per node and run (``cat == "Node"``, name ending ``_kernel_time``, ``args.op_name`` the
op that ran, ``dur`` in microseconds); warm-up runs are cut off at the end of the last warm-up ``model_run``.
OpenVINO: ``get_profiling_info()`` describes the last inference only, so the counters are summed over the
timed runs; only EXECUTED layers count; ``exec_type`` names the kernel.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from core.artifact import Artifact

PROFILED_RUNTIMES = ("ort", "ov")
WARMUP, RUNS = 5, 20


def _rows(totals: dict[str, float], counts: dict[str, int], runs: int, top: int,
          kernels: dict[str, set] | None = None) -> list[dict]:
    grand = sum(totals.values()) or 1.0
    rows = [{"op": op, "nodes": counts[op] // max(runs, 1), "ms_per_run": total / runs / 1e3,
             "share": total / grand, "kernel": ", ".join(sorted((kernels or {}).get(op, ())))}
            for op, total in sorted(totals.items(), key=lambda item: -item[1])]
    return rows[:top]


def ort_op_times(artifact: Artifact, x: np.ndarray, threads: int, top: int, runs: int = RUNS) -> list[dict]:
    """Top op types by kernel time per run on ONNX Runtime CPU (ORT_ENABLE_ALL, sequential)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "trace")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(artifact.onnx_path), options, providers=["CPUExecutionProvider"])
        for _ in range(WARMUP + runs):
            session.run(None, {artifact.input_name: x})
        trace = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"])
    cutoff = model_runs[WARMUP - 1]["ts"] + model_runs[WARMUP - 1]["dur"]
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= cutoff:
            op = event["args"].get("op_name", "?")
            totals[op] += event["dur"]
            counts[op] += 1
    return _rows(totals, counts, runs, top)


def ov_op_times(artifact: Artifact, x: np.ndarray, threads: int, top: int, runs: int = RUNS,
                precision: str | None = None) -> list[dict]:
    """Top layer types by real time per run on OpenVINO CPU (an ONNX model or an int8 IR, the batch made
    static), at the cell's precision hint (``precision``: fp32/bf16/fp16; int8 and None: the model's, f32
    elsewhere, as the adapter runs it)."""
    import openvino as ov

    from runtimes.ov import OV_PRECISION

    core = ov.Core()
    model = core.read_model(str(artifact.model_path))
    model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": "YES",
              "INFERENCE_PRECISION_HINT": OV_PRECISION.get(precision or artifact.precision, "f32")}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))
    for _ in range(WARMUP):
        request.infer()
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    kernels: dict[str, set] = defaultdict(set)
    for _ in range(runs):
        request.infer()
        for info in request.get_profiling_info():
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                totals[info.node_type] += info.real_time.total_seconds() * 1e6
                counts[info.node_type] += 1
                kernels[info.node_type].add(info.exec_type)
    return _rows(totals, counts, runs, top, kernels)


def profile_table(runtime: str, manifest: Path, batch: int, threads: int, top: int, title: str,
                  precision: str | None = None) -> str:
    """The markdown table of the top ``top`` op types of one model on ``runtime`` (ort or ov, CPU);
    ``precision``: the precision the cell asked (OpenVINO's hint)."""
    artifact = Artifact.from_manifest(manifest)
    x = np.random.default_rng(0).standard_normal((batch, *artifact.input_shape[1:])).astype(np.float32)
    if runtime == "ort":
        rows = ort_op_times(artifact, x, threads, top)
    else:
        rows = ov_op_times(artifact, x, threads, top, precision=precision)
    optimization = (artifact.manifest.optimization or {}).get("level", "none")
    lines = [f"# Layer times: {title}", "",
             f"{runtime} CPU, {precision or artifact.precision}, batch {batch}, {threads} threads, "
             f"graph optimisation {optimization}; "
             f"{RUNS} profiled runs after {WARMUP} warm-up runs, in a profiling session of its own (profiling "
             "adds overhead: the shares are the figure to read, not the absolute times). Ops as the runtime "
             "ran them, after its own fusions.", "",
             "| op | nodes | ms/run | share | kernel |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['op']} | {r['nodes']} | {r['ms_per_run']:.3f} | {r['share']:.1%} | {r['kernel']} |"
              for r in rows]
    return "\n".join(lines) + "\n"
