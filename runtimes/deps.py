"""Optional runtime packages: found without importing, imported on demand, and reported as missing with
the pip extra that installs them. Nothing here imports a heavy package at module import time, so every
``runtimes.*`` module imports on a machine with only the base dependencies."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

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
