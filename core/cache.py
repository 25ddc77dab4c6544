"""The one cache root for downloads (weights) and compiled engines."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PADDLE_ONNX_BENCH_CACHE"


def cache_root() -> Path:
    """$PADDLE_ONNX_BENCH_CACHE, else $XDG_CACHE_HOME (or ~/.cache) / paddle-onnx-bench."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paddle-onnx-bench"
