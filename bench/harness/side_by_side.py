"""Several configurations measured side by side: loaded in one process, then timed in turns, block by block.

Sequential cells are minutes apart on a machine whose speed drifts by more than a cell's CV in minutes (two
configurations 15 % apart measured as tied, and the reverse): a choice between near-equals needs them measured
in the same minutes. ``bench tune``'s screening (the candidates of one runtime) and its final do it this way.

Each configuration keeps the latency protocol of ``measure``: load, one cold run, its warm-up; then rounds in
which each configuration, in turn (the order rotates every round), runs up to ``UNTIMED`` untimed runs (its
weights back in the caches after the others ran) and a timed block of at least ``block_s`` (``BLOCK_S``, shorter
for a cell of few seconds), until each has at least ``iterations`` runs and ``min_duration_s`` of timed runs, or
one reaches ``max_duration_s``. Each gets a ``Measurement`` of its own pooled runs; its throughput is its runs over
the sum of its blocks' time. Latency scenario only (a throughput scenario keeps requests in flight: no turns).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.harness.measure import Measurement, MeasureParams, synthetic_feeds, warm_up
from bench.harness.stats import LatencyStats, throughput_ips
from core.artifact import Artifact
from runtimes.base import Runtime

log = logging.getLogger(__name__)

# A turn: long enough that a runtime runs as it does in a continuous loop (0.1 s turns after a 20 ms pause read
# 18 % slower than measure()'s loop on LeViT_128S ov int8, each alone), short enough for several turns per cell:
# shorter turns when the cell's seconds are few (bench tune's screening), so each still gets MIN_TURNS of them.
BLOCK_S = 0.5
MIN_TURNS = 3
UNTIMED = 5  # runs at the start of each turn (at most a fifth of a turn): weights back in the caches, threads awake
PAUSE_S = 0.01  # between turns: the previous runtime's threads stop spinning


def block_s(params: MeasureParams) -> float:
    return min(BLOCK_S, max(params.min_duration_s / MIN_TURNS, 0.01))


@dataclass
class Contestant:
    """One configuration of a side-by-side measurement, and what happened to it."""

    runtime: Runtime
    artifact: Artifact
    batch: int
    load_s: float = 0.0
    first_run_ms: float = 0.0
    samples_ns: list[int] = field(default_factory=list)
    timed_ns: int = 0
    error: BaseException | None = None


def measure_side_by_side(contestants: Sequence[Contestant], params: MeasureParams) -> None:
    """Load, warm up and time every contestant in turns (module docstring); fills each one's figures, or its
    ``error`` (a contestant that fails is left out of the later turns; the others go on)."""
    clock = time.perf_counter_ns
    steps = {}
    for c in contestants:
        try:
            t0 = clock()
            c.runtime.load(c.artifact)
            c.load_s = (clock() - t0) / 1e9
            feeds = synthetic_feeds(c.artifact, c.batch, params.seed)
            steps[id(c)], c.first_run_ms = warm_up(c.runtime, params, feeds, clock)
        except Exception as exc:  # recorded as this contestant's error; the others are still measured
            log.debug("side by side: %s failed before timing", c.runtime.name, exc_info=True)
            c.error = exc
    running = [c for c in contestants if c.error is None]
    min_ns, max_ns, block_ns = int(params.min_duration_s * 1e9), int(params.max_duration_s * 1e9), \
        int(block_s(params) * 1e9)
    turn = 0
    while running and not all(len(c.samples_ns) >= params.iterations and c.timed_ns >= min_ns for c in running):
        if any(c.timed_ns >= max_ns for c in running):
            break
        order = running[turn % len(running):] + running[:turn % len(running)]
        turn += 1
        for c in order:
            time.sleep(PAUSE_S)
            try:
                started = clock()
                for _ in range(UNTIMED):
                    steps[id(c)]()  # untimed
                    if clock() - started >= block_ns // 5:
                        break
                started = clock()
                while True:
                    t0 = clock()
                    steps[id(c)]()
                    t1 = clock()
                    c.samples_ns.append(t1 - t0)
                    if t1 - started >= block_ns:
                        break
                c.timed_ns += clock() - started
            except Exception as exc:
                log.debug("side by side: %s failed while timed", c.runtime.name, exc_info=True)
                c.error = exc
        running = [c for c in running if c.error is None]


def measurement_of(c: Contestant, params: MeasureParams, others: int) -> Measurement:
    """The ``Measurement`` of one contestant that was timed."""
    stopped_by = "target" if len(c.samples_ns) >= params.iterations and c.timed_ns >= params.min_duration_s * 1e9 \
        else "max_duration"
    return Measurement(
        scope=params.scope, load_s=c.load_s, first_run_ms=c.first_run_ms,
        latency=LatencyStats.from_samples_ns(c.samples_ns), device_latency=None,
        throughput_ips=throughput_ips(c.batch, len(c.samples_ns), c.timed_ns / 1e9), wall_s=c.timed_ns / 1e9,
        warmup=params.warmup, stopped_by=stopped_by,
        notes=[f"measured side by side with {others} other configuration(s) in one process, in turns of "
               f"{block_s(params):g} s (bench.harness.side_by_side)"],
        samples_ns=c.samples_ns,
    )
