"""The throughput scenario's loop: keep the runtime's N requests in flight and time each one.

The issuing thread waits for a free slot, reads the clock and starts a request; the request's completion
callback (on whichever thread the runtime finishes it) reads the clock again. So each sample is one request's
latency under load, from its start to its result, and images/s is ``batch x completed requests`` over the wall
time from the first start to the last completion, as benchmark_app computes it in its async mode. The same
rule as the latency scenario ends the loop: both the minimum count and the minimum duration reached (or the
safety cap); the requests still in flight then finish and are counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from runtimes.base import Done, Requests

Clock = Callable[[], int]


class RequestStalled(RuntimeError):
    """A request did not report completion in time (a runtime that lost a callback)."""


@dataclass
class PoolRun:
    samples_ns: list[int]
    wall_ns: int
    stopped_by: str  # "target" | "max_duration"


class _Tally:
    """Shared by the issuing thread and the completion callbacks: free slots, finished requests, errors."""

    def __init__(self, size: int, clock: Clock, stall_s: float) -> None:
        self.free = threading.Semaphore(size)
        self.finished: list[tuple[int, int]] = []  # (start, end) in clock ns; list.append is atomic
        self.errors: list[BaseException] = []
        self.clock, self.stall_s = clock, stall_s

    def callback(self, t0: int) -> Done:
        def done(error: BaseException | None) -> None:
            t1 = self.clock()
            if error is None:
                self.finished.append((t0, t1))
            else:
                self.errors.append(error)
            self.free.release()

        return done

    def take_slot(self) -> None:
        if not self.free.acquire(timeout=self.stall_s):
            raise RequestStalled(f"no request finished within {self.stall_s:g} s")


def drive(pool: Requests, count: int, min_ns: int, max_ns: int, clock: Clock, stall_s: float,
          in_flight: int | None = None) -> PoolRun:
    """Keep ``in_flight`` (default ``pool.size``) requests in flight until ``count`` finished and ``min_ns``
    passed, or ``max_ns`` passed."""
    width = min(in_flight or pool.size, pool.size)
    tally = _Tally(width, clock, stall_s)
    stopped_by, holding = "target", 0
    start = clock()
    try:
        while True:
            tally.take_slot()
            holding, now = 1, clock()
            elapsed = now - start
            if tally.errors or (elapsed >= min_ns and len(tally.finished) >= count):
                break
            if elapsed >= max_ns:
                stopped_by = "max_duration"
                break
            pool.start(tally.callback(now))
            holding = 0  # the slot now belongs to the request until its callback
    except RequestStalled:
        raise
    except BaseException:
        _drain(tally, width - holding)  # never leave requests running into a closed runtime
        raise
    _drain(tally, width - holding)
    if tally.errors:
        raise tally.errors[0]
    ends = [t1 for _, t1 in tally.finished]
    wall = (max(ends) if ends else clock()) - start
    return PoolRun([t1 - t0 for t0, t1 in tally.finished], wall, stopped_by)


def _drain(tally: _Tally, slots: int) -> None:
    """Wait until the requests in flight have finished (their slots are free again)."""
    for _ in range(slots):
        tally.take_slot()


def why_not_faster(requests: int, threads_per_request: int | None, cores_busy: float | None,
                   usable_cores: int, load_average: float | None = None) -> list[str]:
    """Notes for a throughput record that could not beat one request at a time, and why, from what ran."""
    notes = []
    if requests == 1:
        notes.append("1 request in flight: nothing ran concurrently, so images/s cannot exceed the latency "
                     "scenario's")
    if cores_busy is not None and threads_per_request:
        expected = min(usable_cores, requests * threads_per_request)
        if cores_busy < 0.75 * expected:
            load = f"; load average {load_average:.1f} on {usable_cores} cores" if load_average is not None else ""
            notes.append(f"the process kept {cores_busy:.2f} of {expected} cores busy during the timed loop: its "
                         f"requests were not all running at once (the runtime serialises them, e.g. holds the GIL "
                         f"or a lock, or other processes took the CPU{load})")
    return notes
