"""Small host-side helpers every adapter shares: thread counts, device strings and input feeds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def default_threads() -> int:
    """One thread per physical core this process may run on (SMT siblings count once)."""
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
    else:
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:  # no sysfs (macOS, some containers): count logical CPUs
            cores.add(str(cpu))
    return max(1, len(cores))


def parse_device(runtime: str, device: str, allowed: tuple[str, ...]) -> tuple[str, int]:
    """Split ``"cuda:1"`` into ``("cuda", 1)`` and check the kind is one the runtime offers."""
    kind, _, index = device.lower().partition(":")
    if kind not in allowed:
        raise ValueError(f"runtime {runtime!r} does not support device {device!r}; choose one of "
                         f"{', '.join(allowed)}")
    if index and not index.isdigit():
        raise ValueError(f"device index must be an integer, got {device!r}")
    return kind, int(index or 0)


def feed_batch(feeds: dict[str, np.ndarray], input_name: str) -> tuple[np.ndarray, int]:
    """The single input array of ``feeds`` (keyed by the model's input name) and its batch size."""
    if set(feeds) != {input_name}:
        raise ValueError(f"expected one feed named {input_name!r}, got {sorted(feeds)}")
    array = np.ascontiguousarray(feeds[input_name])  # runtimes that share host memory need C order
    return array, int(array.shape[0])
