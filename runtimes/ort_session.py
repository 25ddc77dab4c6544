"""The ort adapter's session settings, set in this one place: the adapter, its layer profiler (``bench --profile``)
and ``bench explain`` all make their ONNX Runtime sessions here, so what they look at is what the benchmark ran.

A session runs ``DEPLOY_LEVEL`` graph optimisation (``ORT_ENABLE_ALL``), sequential execution, inter-op 1 and
``threads`` intra-op threads. Other levels are for instrumentation only: explain's reference and instrumented
captures run ``ORT_DISABLE_ALL``, because even the basic level folds and fuses away the tensors it compares.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from core.artifact import Artifact
from runtimes.base import LayerTimes, NodeTime
from runtimes.deps import require
from runtimes.ort_placement import CPU

DEPLOY_LEVEL = "ORT_ENABLE_ALL"  # what the benchmark runs
QUIET = 3  # log_severity_level: errors only (profiling and instrumented sessions warn about what they change)


def session_options(ort, threads: int, *, level: str = DEPLOY_LEVEL, profile_prefix: str | None = None,
                    quiet: bool = False):
    """``ort.SessionOptions`` as the adapter runs a model; ``profile_prefix``: ORT's profiler on, its trace
    written there."""
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if quiet:
        so.log_severity_level = QUIET
    return so


def cpu_session(model: str | Path | bytes, threads: int, **settings):
    """A session on ORT's CPU provider over an ONNX file (a path) or a serialised model (bytes); ``settings``:
    :func:`session_options`'s keywords."""
    ort = require("onnxruntime", "ort")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(ort, threads, **settings), providers=[CPU])


def cpu_layer_times(artifact: Artifact, inputs: np.ndarray, threads: int, warmup: int, runs: int) -> LayerTimes:
    """Kernel time per op type over ``runs`` profiled runs after ``warmup``, from ORT's profiler.

    One trace event per node and run (``cat == "Node"``, name ending ``_kernel_time``, ``args.op_name`` the op
    that ran after ORT's fusions, ``dur`` in microseconds); warm-up runs end with the last warm-up ``model_run``.
    """
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        session = cpu_session(artifact.onnx_path, threads, profile_prefix=str(Path(tmp) / "trace"), quiet=True)
        feeds = {artifact.input_name: inputs}
        for _ in range(warmup + runs):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"])
    cutoff = model_runs[warmup - 1]["ts"] + model_runs[warmup - 1]["dur"] if warmup else 0
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    per_node: dict[str, float] = defaultdict(float)
    ran: dict[str, tuple[str, str]] = {}
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= cutoff:
            op = event["args"].get("op_name", "?")
            totals[op] += event["dur"]
            counts[op] += 1
            node = event["name"].removesuffix("_kernel_time")
            per_node[node] += event["dur"]
            ran[node] = (op, _shapes(event["args"].get("output_type_shape", [])))
    nodes = {name: NodeTime(ran[name][0], total, ran[name][1]) for name, total in per_node.items()}
    return LayerTimes(dict(totals), dict(counts), {}, nodes)


def _shapes(outputs: list[dict]) -> str:
    """ORT's ``[{"float": [8, 64, 32, 32]}]`` as ``float[8,64,32,32]``."""
    return ",".join(f"{kind}[{','.join(map(str, dims))}]" for output in outputs for kind, dims in output.items())
