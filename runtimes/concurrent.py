"""What the adapters share for the throughput scenario: the number of requests in flight, the threads each one
gets, and a request pool over blocking engine calls.

Engines whose call blocks until the result is ready (ONNX Runtime ``run``, a Paddle predictor, a TensorRT
context followed by a stream synchronise) get :class:`ThreadedRequests`: one worker thread per request, each
owning its own engine call and buffers. The calls overlap only if the engine releases the GIL while it runs;
the harness measures how many cores the process kept busy, so a runtime that serialises its requests shows.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from runtimes.base import Done, Requests

log = logging.getLogger(__name__)


def plan_requests(asked: int | None, recommended: int, why: str) -> tuple[int, str]:
    """(requests in flight, where that number came from): the number asked, else the runtime's own."""
    if asked is not None:
        return asked, "asked"
    return max(1, recommended), why


def threads_per_request(total: int, requests: int) -> int:
    """The threads each request gets when ``total`` are split among ``requests`` (at least one each)."""
    return max(1, total // max(1, requests))


def throughput_effective(requests: int, source: str, threads: int, how: str) -> dict[str, Any]:
    """The ``effective`` entries every adapter records for the throughput scenario."""
    return {"scenario": "throughput", "requests": requests, "requests_source": source,
            "threads_per_request": threads, "concurrency": how}


class ThreadedRequests(Requests):
    """One worker thread per request; ``start`` hands the completion callback to an idle worker, which runs
    its own blocking ``run`` and then calls it."""

    def __init__(self, runs: Sequence[Callable[[], Any]], name: str,
                 setup: Callable[[], Any] | None = None) -> None:
        """``setup`` runs once on each worker thread before its first request (e.g. select the CUDA device,
        which is per thread)."""
        if not runs:
            raise ValueError("a request pool needs at least one request")
        self.size = len(runs)
        self._setup = setup
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, args=(run,), name=f"{name}-request-{i}", daemon=True)
                         for i, run in enumerate(runs)]
        for worker in self._workers:
            worker.start()

    def start(self, done: Done) -> None:
        self._pending.put(done)

    def _work(self, run: Callable[[], Any]) -> None:
        ready = self._setup is None
        while True:
            done = self._pending.get()
            if done is None:
                return
            try:
                if not ready:
                    self._setup()
                    ready = True
                run()
            except BaseException as exc:  # handed to the harness, which raises it
                done(exc)
            else:
                done(None)

    def close(self) -> None:
        for _ in self._workers:
            self._pending.put(None)
        for worker in self._workers:
            worker.join(timeout=60)
            if worker.is_alive():
                log.warning("request thread %s did not stop", worker.name)
