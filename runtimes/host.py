"""Small host-side helpers every adapter shares: device strings and input feeds (the default thread count is
``core.cores.default_threads``, shared with the export and bench stages)."""

from __future__ import annotations

import numpy as np


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
