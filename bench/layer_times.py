"""Where a model's time goes: the top ops by time per inference, from the runtime's own profiler
(``python -m bench run ... --profile N``): ORT's profiler or OpenVINO's per-layer counters, whichever runtimes can
profile (``Runtime.can_profile``); each runtime profiles in a session made as its adapter makes one.

It runs after the timed cell, in a session of its own (profiling slows every run), with the cell's model,
batch, precision and threads on the CPU. The op names are what ran, after the runtime's own fusions (ORT:
``FusedMatMul``, ``QuickGelu``...; OpenVINO: ``FullyConnected``, ``Subgraph``...), so the table shows what a
graph pass could still change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.artifact import Artifact
from runtimes import get_runtime
from runtimes.base import LayerTimes, NodeTime, RuntimeOptions

WARMUP, RUNS = 5, 20


def _rows(times: LayerTimes, runs: int, top: int, grand: float) -> list[dict]:
    rows = [{"op": op, "nodes": times.nodes[op] // max(runs, 1), "ms_per_run": total / runs / 1e3,
             "share": total / grand, "kernel": ", ".join(sorted(times.kernels.get(op, ())))}
            for op, total in sorted(times.microseconds.items(), key=lambda item: -item[1])]
    return rows[:top]


def profile_table(runtime: str, manifest: Path, batch: int, threads: int, top: int, title: str,
                  precision: str | None = None) -> str:
    """The markdown table of the top ``top`` op types of one model on ``runtime`` (CPU); ``precision``: the
    precision the cell asked (OpenVINO's hint; None: the model's). Raises RuntimeUnavailable for a runtime that
    cannot profile."""
    artifact = Artifact.from_manifest(manifest)
    x = np.random.default_rng(0).standard_normal((batch, *artifact.input_shape[1:])).astype(np.float32)
    options = RuntimeOptions(precision=precision or artifact.precision, threads=threads, batch=batch)
    times = get_runtime(runtime).layer_times(artifact, x, options, WARMUP, RUNS)
    grand = sum(times.microseconds.values()) or 1.0  # every op's time: the shares of op and node rows alike
    rows = _rows(times, RUNS, top, grand)
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
    if times.per_node:
        lines += ["", f"Top {top} nodes (the runtime's node names; a fused node carries one of its ops' names):", "",
                  "| node | op | ms/run | share | output shape | kernel |", "|---|---|---:|---:|---|---|"]
        lines += [f"| {name} | {node.op} | {node.microseconds / RUNS / 1e3:.3f} | {node.microseconds / grand:.1%} | "
                  f"{node.shape} | {node.kernel} |" for name, node in _top_nodes(times, top)]
    return "\n".join(lines) + "\n"


def _top_nodes(times: LayerTimes, top: int) -> list[tuple[str, NodeTime]]:
    return sorted(times.per_node.items(), key=lambda item: -item[1].microseconds)[:top]
