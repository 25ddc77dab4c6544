"""Paddle Inference fp32 against the best fp32 configuration of the exported model, at batch 1, for
``graph_speedup.py``: Paddle (oneDNN, IR optimisation, the same threads: ``runtimes/paddle.py``) and every
(runtime, graph level) of the ONNX export take turns in the same interleaved rounds; per round the ratio is
Paddle's fastest run over the best configuration's fastest run in that round.

The best configuration is the one of lowest median time over the rounds. Paddle's settings are read back from
the predictor (``effective``) and printed with the ratio; a Paddle without oneDNN or IR optimisation is not at
its best, and the target is then not judged.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_targets import PADDLE_RATIO_TARGET, paddle_ceiling_note, paddle_verdict

PADDLE_BATCH = 1
# Between turns: Paddle's OpenMP threads spin for up to KMP_BLOCKTIME (200 ms) after a run; with graph_speedup's
# 50 ms pause they took the cores from the next configuration (OpenVINO MobileViT_XXS at batch 1: 12.1 ms
# between Paddle turns, 7.2 ms without Paddle in the rounds).
PAUSE_S = 0.3


def paddle_row(model: str, manifests: dict[str, Path], runtimes: list[str], threads: int, rounds: int,
               runs: int, load: Callable, time_interleaved: Callable) -> dict:
    """Paddle and each (runtime, level) at batch 1 in interleaved rounds; the ratio to the best per round."""
    from core.artifact import Artifact

    shape = Artifact.from_manifest(manifests["none"]).input_shape[1:]
    x = np.random.default_rng(1).standard_normal((PADDLE_BATCH, *shape)).astype(np.float32)
    adapters = {"paddle": load("paddle", manifests["none"], PADDLE_BATCH, threads, x)}
    try:
        for runtime in runtimes:
            for level, manifest in manifests.items():
                adapters[f"{runtime} {level}"] = load(runtime, manifest, PADDLE_BATCH, threads, x)
        best = time_interleaved(adapters, rounds, runs, pause=PAUSE_S)
        effective = dict(adapters["paddle"].effective)
    finally:
        for adapter in adapters.values():
            adapter.close()
    return summarize(model, best, effective)


def summarize(model: str, best: dict[str, list[float]], paddle_effective: dict) -> dict:
    """The best configuration is the one of lowest median (one fixed configuration, not the fastest of several
    per round, which would favour it by chance); the ratio is Paddle over it round by round."""
    medians = {name: statistics.median(times) for name, times in best.items()}
    chosen = min((name for name in best if name != "paddle"), key=medians.__getitem__)
    ratios = [p / b for p, b in zip(best["paddle"], best[chosen], strict=True)]
    ratio = statistics.median(ratios)
    return {"model": model, "batch": PADDLE_BATCH, "paddle_ms": medians["paddle"], "best": chosen,
            "best_ms": medians[chosen], "config_ms": medians, "ratio": ratio, "lo": min(ratios), "hi": max(ratios),
            "paddle_effective": {k: paddle_effective.get(k) for k in ("onednn", "ir_optim", "threads")},
            "verdict": paddle_verdict(ratio, paddle_effective)}


def with_ceiling(row: dict, gflop_per_image: float, peak_gflops: float, fma_gflops: float | None = None) -> dict:
    """``row`` with its ceilings: Paddle's time over the time one image's multiply-adds (every Conv and MatMul, as
    the graph states them) take at the run's sgemm peak, and at the CPU's FMA peak (``fma_peak.py``) when it was
    measured. No fp32 configuration of the exact graph runs faster than the first allows with today's kernels, and
    no kernel doing these multiply-adds in fp32 faster than the second: a target above it cannot be met here."""
    at_peak_ms = gflop_per_image / peak_gflops * 1e3
    ceiling = row["paddle_ms"] / at_peak_ms
    fma = {}
    if fma_gflops:
        fma = {"fma_gflops": fma_gflops, "at_fma_peak_ms": gflop_per_image / fma_gflops * 1e3}
        fma["fma_ceiling"] = row["paddle_ms"] / fma["at_fma_peak_ms"]
    return {**row, "at_peak_ms": at_peak_ms, "ceiling": ceiling, **fma,
            "ceiling_note": paddle_ceiling_note(ceiling, fma.get("fma_ceiling"))}


def format_row(row: dict) -> str:
    return (f"{row['model']:<14} paddle b{row['batch']} {row['paddle_ms']:8.2f} ms  best {row['best']} "
            f"{row['best_ms']:.2f} ms  ratio {row['ratio']:.2f}x [{row['lo']:.2f}..{row['hi']:.2f}]  "
            f"{row['verdict']}")


def fma_part(row: dict) -> str:
    if "fma_ceiling" not in row:
        return ""
    return f"; {row['fma_ceiling']:.1f}x at {row['at_fma_peak_ms']:.2f} ms at the FMA peak"


def markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", f"## Paddle Inference fp32 against the best fp32 configuration (batch {PADDLE_BATCH})", "",
             "Paddle Inference as `python -m bench --runtime paddle` runs it (settings read back below) and each "
             "runtime x graph level of the export, in the same interleaved rounds; best = the configuration of "
             "lowest median; ratio = median over rounds of Paddle's fastest run / the best configuration's in "
             "that round [range over rounds]; target: "
             f">= {PADDLE_RATIO_TARGET:g}x. Ceiling = Paddle ms / the ms of one image's multiply-adds at the "
             "run's sgemm peak (the GEMM table): the highest ratio any fp32 configuration of the exact graph "
             "could reach here with today's kernels; then the same at the CPU's fp32 FMA peak "
             "(`benchmarks/fma_peak.py`, when a C compiler was there to build it): the highest ratio any kernel "
             "doing the graph's multiply-adds in fp32 could reach on this CPU.", "",
             "| model | Paddle ms | Paddle settings | best configuration | best ms | other configurations ms | "
             "ratio | target | ceiling |", "|---|---:|---|---|---:|---|---|---|---|"]
    for r in rows:
        settings = ", ".join(f"{k} {v}" for k, v in r["paddle_effective"].items())
        others = ", ".join(f"{name} {ms:.2f}" for name, ms in r["config_ms"].items()
                           if name not in ("paddle", r["best"]))
        lines.append(f"| {r['model']} | {r['paddle_ms']:.2f} | {settings} | {r['best']} | {r['best_ms']:.2f} | "
                     f"{others} | {r['ratio']:.2f}x [{r['lo']:.2f}..{r['hi']:.2f}] | {r['verdict']} | "
                     + (f"{r['ceiling']:.1f}x at {r['at_peak_ms']:.2f} ms{fma_part(r)}: {r['ceiling_note']} |"
                        if "ceiling" in r else "not measured (no batch 8 GEMM figures) |"))
    return lines
