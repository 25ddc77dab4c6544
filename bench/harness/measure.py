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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bench.harness.process import UsageTracker, wants_gpu
from bench.harness.stats import LatencyStats, throughput_ips
from bench.harness.throughput import Clock, drive, why_not_faster
from core.artifact import Artifact
from core.cores import usable_cpus
from runtimes.base import SCENARIOS, Runtime

__all__ = ["SCENARIOS", "SCOPES", "MeasureParams", "Measurement", "measure", "synthetic_feeds"]

log = logging.getLogger(__name__)

SCOPES = ("compute", "end2end")


def load_average() -> float | None:
    """The machine's 1-minute load average (other processes' demand for the CPU), where the OS has one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


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
    scenario: str = "latency"
    requests: int = 1  # in flight during the timed loop
    cores_busy: float | None = None  # process CPU seconds / wall seconds over the timed loop
    notes: list[str] = field(default_factory=list)  # the harness's remarks (why throughput did not scale)
    memory: dict | None = None  # bench.harness.process.UsageTracker.memory()
    samples_ns: list[int] = field(default_factory=list, repr=False)

    def timing_dict(self) -> dict:
        return {
            "scope": self.scope,
            "scenario": self.scenario,
            "requests": self.requests,
            "load_s": self.load_s,
            "first_run_ms": self.first_run_ms,
            "latency_ms": self.latency.to_dict(),
            "device_latency_ms": self.device_latency.to_dict() if self.device_latency else None,
            "throughput_ips": self.throughput_ips,
            "wall_s": self.wall_s,
            "warmup": self.warmup,
            "stopped_by": self.stopped_by,
            "cores_busy": self.cores_busy,
            "notes": list(self.notes),
        }


@dataclass
class _Loops:
    """What one scenario's loops produced, before the statistics."""

    first_run_ms: float
    warmup: int
    samples_ns: list[int]
    device_ms: list[float]
    wall_ns: int
    stopped_by: str
    requests: int = 1


def synthetic_feeds(artifact: Artifact, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded N(0, 1) inputs: timing does not depend on values, and the same seed gives the same tensor.

    Drawn in float32 directly (a float64 draw first would need twice the memory of the input)."""
    shape = artifact.batch_shape(batch)
    data = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    return {artifact.input_name: np.ascontiguousarray(data.astype(artifact.input_dtype, copy=False))}


def measure(runtime: Runtime, artifact: Artifact, batch: int, params: MeasureParams,
            feeds: dict[str, np.ndarray] | None = None, usage: UsageTracker | None = None) -> Measurement:
    """Drive ``runtime`` (fresh, not loaded) through the protocol of its scenario (``runtime.options``) and
    return what was measured, with the process's memory per phase (``usage``: a fresh tracker by default)."""
    feeds = feeds if feeds is not None else synthetic_feeds(artifact, batch, params.seed)
    usage = usage if usage is not None else UsageTracker(gpu=wants_gpu(runtime.options.device))
    clock = time.perf_counter_ns  # looked up per call, so tests can drive the harness with a fake clock

    with usage.phase("load"):
        t0 = clock()
        runtime.load(artifact)
        load_s = (clock() - t0) / 1e9
    scenario = "throughput" if runtime.throughput else "latency"
    loops = (_throughput_loops if runtime.throughput else _latency_loops)(runtime, params, feeds, usage, clock)

    samples, wall_ns = loops.samples_ns, loops.wall_ns
    if loops.stopped_by == "max_duration":
        log.warning("%s: stopped at max_duration_s=%s after %d of %d iterations", runtime.name,
                    params.max_duration_s, len(samples), params.iterations)
    cores_busy = usage.phases["timed"].cores_busy
    notes = []
    if usage.method == "sampled":
        notes.append(f"resident memory was sampled every {usage.sample_ms:g} ms during the timed loop "
                     f"(/proc/self/clear_refs refused): a thread of this process woke that often")
    if runtime.throughput:
        notes += why_not_faster(loops.requests, runtime.effective.get("threads_per_request"), cores_busy,
                                len(usable_cpus()), load_average())
    return Measurement(
        scope=params.scope, load_s=load_s, first_run_ms=loops.first_run_ms,
        latency=LatencyStats.from_samples_ns(samples),
        device_latency=LatencyStats.from_samples_ms(loops.device_ms) if loops.device_ms else None,
        throughput_ips=throughput_ips(batch, len(samples), wall_ns / 1e9), wall_s=wall_ns / 1e9,
        warmup=loops.warmup, stopped_by=loops.stopped_by, scenario=scenario, requests=loops.requests,
        cores_busy=cores_busy, notes=notes, memory=usage.memory(), samples_ns=samples,
    )


def _latency_loops(runtime: Runtime, params: MeasureParams, feeds: dict[str, np.ndarray], usage: UsageTracker,
                   clock: Clock) -> _Loops:
    """One request at a time: first run (cold), warm-up, timed loop."""
    with usage.phase("warmup"):
        step, first_run_ms = warm_up(runtime, params, feeds, clock)
    with usage.phase("timed"):
        samples, device_ms, wall_ns, stopped_by = _timed_loop(runtime, step, params)
    return _Loops(first_run_ms, params.warmup, samples, device_ms, wall_ns, stopped_by)


def warm_up(runtime: Runtime, params: MeasureParams, feeds: dict[str, np.ndarray],
            clock: Clock) -> tuple[Callable[[], object], float]:
    """Prepare the feeds, one cold run, then ``params.warmup`` runs: the step to time, and the cold run's ms."""
    runtime.prepare(feeds)
    step = timed_step(runtime, params.scope, feeds)
    t0 = clock()
    step()
    first_run_ms = (clock() - t0) / 1e6
    for _ in range(params.warmup):
        step()
    return step, first_run_ms


def _throughput_loops(runtime: Runtime, params: MeasureParams, feeds: dict[str, np.ndarray],
                      usage: UsageTracker, clock: Clock) -> _Loops:
    """The runtime's requests kept in flight: one cold request alone, a warm-up that runs every request at
    least once, then the timed loop under the same count-and-duration rule."""
    min_ns, max_ns = int(params.min_duration_s * 1e9), int(params.max_duration_s * 1e9)
    stall_s = max(120.0, 4 * params.max_duration_s)
    pool = None
    try:
        with usage.phase("warmup"):
            runtime.prepare(feeds)
            pool = runtime.requests(end2end=params.scope == "end2end")
            first = drive(pool, 1, 0, max_ns, clock, stall_s, in_flight=1)
            warmup = max(params.warmup, pool.size)
            drive(pool, warmup, 0, max_ns, clock, stall_s)
        with usage.phase("timed"):
            timed = drive(pool, params.iterations, min_ns, max_ns, clock, stall_s)
    finally:
        if pool is not None:
            pool.close()
    return _Loops(first.samples_ns[0] / 1e6, warmup, timed.samples_ns, [], timed.wall_ns, timed.stopped_by,
                  pool.size)


def timed_step(runtime: Runtime, scope: str, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
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
