"""Decode and preprocess image files in worker processes, in order, a bounded number at a time.

A data set of 50,000 images must neither wait on one core's decoding nor be held in memory: ``preprocessed``
keeps at most ``window`` images in flight (submitted or finished but not yet taken), so memory stays flat in
the number of images, and the workers prepare the next batches while the runtime runs the current one.
Workers are spawned, not forked: the parent may hold runtime threads (OpenVINO, ONNX Runtime) that a fork
would copy in an unknown state. A failure is one image's outcome, never the stream's.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import NamedTuple

import numpy as np

from core.cores import usable_cpus
from core.preprocess import ImageError, Preprocess
from core.proc import _parent_death_signal


class Outcome(NamedTuple):
    """One image: its tensor (None when it could not be made), why not, and whether resizing enlarged it."""

    array: np.ndarray | None
    reason: str | None
    enlarged: bool = False


_PREPROCESS: Preprocess | None = None  # set in each worker by _start


def _start(preprocess: Preprocess, parent: int) -> None:
    global _PREPROCESS
    _PREPROCESS = preprocess
    # One worker per core already: OpenCV's own threads (one per core, in every worker) would only contend.
    import cv2

    cv2.setNumThreads(1)
    # A worker dies with the process it decodes for, even one killed by SIGKILL (a cluster node's shard process
    # when its node goes): orphaned, it would wait on its queue forever. (Tied to the thread that started the
    # pool, which is the one consuming the stream.)
    _parent_death_signal(parent)()


def _failure(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"


def preprocess_one(preprocess: Preprocess, path: str) -> Outcome:
    try:
        bgr = preprocess.decode(path)
        enlarged = preprocess.enlarges(bgr.shape[1], bgr.shape[0])
        return Outcome(preprocess.normalise(preprocess.crop_of(bgr)), None, enlarged)
    except Exception as exc:  # any decoder failure is one bad file, not a failed pass
        return Outcome(None, _failure(exc))


def check_one(preprocess: Preprocess, path: str) -> Outcome:
    """Decode only: whether the file is an image PaddleClas's decoder reads."""
    try:
        bgr = preprocess.decode(path)
        return Outcome(None, None, preprocess.enlarges(bgr.shape[1], bgr.shape[0]))
    except Exception as exc:
        return Outcome(None, _failure(exc))


def _preprocess_in_worker(paths: list[str]) -> list[Outcome]:
    return [preprocess_one(_PREPROCESS, path) for path in paths]


def _check_in_worker(paths: list[str]) -> list[Outcome]:
    return [check_one(_PREPROCESS, path) for path in paths]


_IN_WORKER = {preprocess_one: _preprocess_in_worker, check_one: _check_in_worker}
CHUNK = 4  # images per task: one round trip to a worker costs about as much as decoding a small JPEG


def default_workers() -> int:
    """One worker per core this process may use."""
    return max(1, len(usable_cpus()))


def _chunks(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(paths)
    while chunk := list(islice(iterator, size)):
        yield chunk


def stream(step: Callable[[Preprocess, str], Outcome], preprocess: Preprocess, paths: Iterable[str],
           workers: int = 1, window: int = 32) -> Iterator[Outcome]:
    """``step(preprocess, path)`` for every path, in order; ``workers`` > 1 runs it in that many processes,
    ``CHUNK`` images per task, with at most ``window`` images in flight."""
    if workers <= 1:
        for path in paths:
            yield step(preprocess, path)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start, initargs=(preprocess, os.getpid()))
    pending: deque[Future] = deque()
    tasks = max(workers, window // CHUNK)
    try:
        chunks = _chunks(paths, CHUNK)
        for chunk in islice(chunks, tasks):
            pending.append(pool.submit(_IN_WORKER[step], chunk))
        while pending:
            outcomes = pending.popleft().result()
            following = next(chunks, None)
            if following is not None:
                pending.append(pool.submit(_IN_WORKER[step], following))
            yield from outcomes
    finally:
        # An abandoned stream (an error downstream, Ctrl-C) stops its workers instead of finishing the queue.
        _shut_down(pool)


def _shut_down(pool: ProcessPoolExecutor) -> None:
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    except RuntimeError:
        # An interrupt (SIGTERM, Ctrl-C) raised while submit() waited for the pool's manager thread to start: the
        # thread runs, but its start was never seen, so joining it refuses. Wait for the start, then shut down
        # again, so the interrupt (not this error) is what leaves the stream.
        manager = pool._executor_manager_thread
        if manager is not None and manager._started.wait(timeout=10):
            pool.shutdown(wait=True, cancel_futures=True)
        # Never launched: no thread to join; the workers end with this process (their parent-death signal).


def preprocessed(preprocess: Preprocess, paths: Iterable[str], workers: int = 1,
                 window: int = 32) -> Iterator[Outcome]:
    """The model's input tensor of every image, in order (``Outcome.array`` None for a bad image)."""
    return stream(preprocess_one, preprocess, paths, workers, window)


def checked(preprocess: Preprocess, paths: Iterable[str], workers: int = 1, window: int = 64) -> Iterator[Outcome]:
    """Decode every image once (no resizing), in order: which ones cannot be read, and why."""
    return stream(check_one, preprocess, paths, workers, window)
