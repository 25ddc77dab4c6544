"""Deferred imports of optional runtime packages, and small host helpers the adapters share.

Nothing here imports a heavy package at module import time: ``runtimes.*`` must import on a machine with
only the base dependencies (see house style 12.2).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np

from runtimes.base import RuntimeUnavailable


class MissingDependency(RuntimeUnavailable):
    """An optional package an adapter needs is not installed."""

    def __init__(self, module: str, extra: str, note: str = "") -> None:
        self.module, self.extra = module, extra
        suffix = f" ({note})" if note else ""
        super().__init__(f"{module} is not installed; pip install -e .[{extra}]{suffix}")


def is_installed(module: str) -> bool:
    """True when ``module`` can be found, without importing it (dotted names import their parent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or a broken __spec__
        return False


def require(module: str, extra: str, note: str = "") -> ModuleType:
    """Import ``module`` now, or raise :class:`MissingDependency` naming the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, extra, note) from exc


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


def check_device(runtime: str, device: str, allowed: tuple[str, ...]) -> tuple[str, int]:
    """Split ``"cuda:1"`` into ``("cuda", 1)`` and check the kind is one the runtime offers."""
    kind, _, index = device.lower().partition(":")
    if kind not in allowed:
        choices = ", ".join(allowed)
        raise ValueError(f"runtime {runtime!r} does not support device {device!r}; choose one of {choices}")
    if index and not index.isdigit():
        raise ValueError(f"device index must be an integer, got {device!r}")
    return kind, int(index or 0)


def static_shape(shape: list, batch: int) -> list[int]:
    """Replace a symbolic leading (batch) dimension with ``batch``; other dimensions must be fixed."""
    if not shape:
        raise ValueError("an empty shape has no batch dimension")
    lead = shape[0]
    if isinstance(lead, int) and lead > 0 and lead != batch:
        raise ValueError(f"the model has a fixed batch of {lead}; batch {batch} was asked")
    rest = list(shape[1:])
    if any(not (isinstance(d, int) and d > 0) for d in rest):
        raise ValueError(f"only the batch dimension may be dynamic, got shape {shape}")
    return [batch, *rest]


def feed_batch(feeds: dict[str, np.ndarray], input_name: str) -> tuple[np.ndarray, int]:
    """The single input array of ``feeds`` (keyed by the model's input name) and its batch size."""
    if set(feeds) != {input_name}:
        raise ValueError(f"expected one feed named {input_name!r}, got {sorted(feeds)}")
    array = np.ascontiguousarray(feeds[input_name])  # runtimes that share host memory need C order
    return array, int(array.shape[0])
