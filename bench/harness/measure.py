"""The measurement harness: one protocol for every runtime.

load (timed) -> prepare (untimed) -> first run (cold, recorded apart) -> warmup -> timed loop.
The timed loop runs until BOTH ``iterations`` and ``min_duration_s`` are reached, or ``max_duration_s`` is
hit (a safety cap, recorded in ``stopped_by``). Each iteration is timed with ``perf_counter_ns``.

Scopes (what lies inside each timed iteration):
  compute  ``run()`` only: inputs are already where the runtime needs them (device memory, bound tensors).
  end2end  ``prepare(host numpy) + run() + outputs()``: host inputs in, host outputs out, as an app sees it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bench.harness.stats import LatencyStats, throughput_ips
from core.artifact import Artifact
from runtimes.base import Runtime

log = logging.getLogger(__name__)

SCOPES = ("compute", "end2end")


@dataclass(frozen=True)
class MeasureParams:
    warmup: int = 10
    iterations: int = 50
    min_duration_s: float = 2.0
    max_duration_s: float = 30.0
    scope: str = "compute"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope {self.scope!r} is not one of {', '.join(SCOPES)}")
        if self.warmup < 0 or self.iterations < 1:
            raise ValueError("warmup must be >= 0 and iterations >= 1")
        if self.min_duration_s < 0 or self.max_duration_s <= 0:
            raise ValueError("min_duration_s must be >= 0 and max_duration_s > 0")


@dataclass
class Measurement:
    """What the harness measured. ``samples_ns`` are kept for tests and raw dumps, not written by default."""

    scope: str
    load_s: float
    first_run_ms: float
    latency: LatencyStats
    device_latency: LatencyStats | None
    throughput_ips: float
    wall_s: float
    warmup: int
    stopped_by: str  # "target" (iterations and duration reached) | "max_duration"
    samples_ns: list[int] = field(default_factory=list, repr=False)

    def timing_dict(self) -> dict:
        return {
            "scope": self.scope,
            "load_s": self.load_s,
            "first_run_ms": self.first_run_ms,
            "latency_ms": self.latency.to_dict(),
            "device_latency_ms": self.device_latency.to_dict() if self.device_latency else None,
            "throughput_ips": self.throughput_ips,
            "wall_s": self.wall_s,
            "warmup": self.warmup,
            "stopped_by": self.stopped_by,
        }


def synthetic_feeds(artifact: Artifact, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded N(0, 1) inputs: timing does not depend on values, and the same seed gives the same tensor.

    Drawn in float32 directly (a float64 draw first would need twice the memory of the input)."""
    shape = artifact.batch_shape(batch)
    data = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    return {artifact.input_name: np.ascontiguousarray(data.astype(artifact.input_dtype, copy=False))}


def measure(runtime: Runtime, artifact: Artifact, batch: int, params: MeasureParams,
            feeds: dict[str, np.ndarray] | None = None) -> Measurement:
    """Drive ``runtime`` (fresh, not loaded) through the protocol and return what was measured."""
    feeds = feeds if feeds is not None else synthetic_feeds(artifact, batch, params.seed)

    t0 = time.perf_counter_ns()
    runtime.load(artifact)
    load_s = (time.perf_counter_ns() - t0) / 1e9

    runtime.prepare(feeds)
    step = _step(runtime, params.scope, feeds)

    t0 = time.perf_counter_ns()
    step()
    first_run_ms = (time.perf_counter_ns() - t0) / 1e6

    for _ in range(params.warmup):
        step()

    samples, device_ms, wall_ns, stopped_by = _timed_loop(runtime, step, params)
    device = LatencyStats.from_samples_ms(device_ms) if device_ms else None
    if stopped_by == "max_duration":
        log.warning("%s: stopped at max_duration_s=%s after %d of %d iterations", runtime.name,
                    params.max_duration_s, len(samples), params.iterations)
    return Measurement(
        scope=params.scope,
        load_s=load_s,
        first_run_ms=first_run_ms,
        latency=LatencyStats.from_samples_ns(samples),
        device_latency=device,
        throughput_ips=throughput_ips(batch, len(samples), wall_ns / 1e9),
        wall_s=wall_ns / 1e9,
        warmup=params.warmup,
        stopped_by=stopped_by,
        samples_ns=samples,
    )


def _step(runtime: Runtime, scope: str, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    if scope == "compute":
        return runtime.run

    def end2end() -> None:
        runtime.prepare(feeds)
        runtime.run()
        runtime.outputs()

    return end2end


def _timed_loop(runtime: Runtime, step: Callable[[], object],
                params: MeasureParams) -> tuple[list[int], list[float], int, str]:
    clock = time.perf_counter_ns
    min_ns, max_ns = int(params.min_duration_s * 1e9), int(params.max_duration_s * 1e9)
    samples: list[int] = []
    record = samples.append  # bound once: the loop's own cost lands in the wall time and so in throughput
    device_ms: list[float] = []
    # Adapters without device timers keep the base method; skip the call rather than collect Nones.
    device_time = None if type(runtime).device_time_ms is Runtime.device_time_ms else runtime.device_time_ms
    iterations, stopped_by = params.iterations, "target"
    start = clock()
    while True:
        t0 = clock()
        step()
        t1 = clock()
        record(t1 - t0)
        if device_time is not None:  # read outside the timed region
            dt = device_time()
            if dt is not None:
                device_ms.append(dt)
        elapsed = t1 - start
        if elapsed >= min_ns and len(samples) >= iterations:
            break
        if elapsed >= max_ns:
            stopped_by = "max_duration"
            break
    return samples, device_ms, clock() - start, stopped_by
