"""Runtime registry: names map to ``"module:Class"`` strings, imported only when a runtime is selected.

Built-in runtimes are listed below; third-party adapters register through the entry point group
``paddle_onnx_bench.runtimes`` (name = registry key, value = ``"package.module:Class"``). Importing this
package never imports paddle, onnxruntime, openvino or tensorrt. What a runtime can do is its class's to say
(``runtimes.base``); :func:`capabilities` and :func:`runtimes_that` ask it, and ``runtimes.contract`` checks
an adapter (a plugin's too) keeps the contract.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from runtimes.base import Availability, RuntimeUnavailable, describe_fields
from runtimes.deps import MissingDependency, is_installed

if TYPE_CHECKING:
    from runtimes.base import Runtime

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "paddle_onnx_bench.runtimes"

_BUILTIN: dict[str, str] = {
    "paddle": "runtimes.paddle:PaddleRuntime",
    "ort": "runtimes.ort:OrtRuntime",
    "ov": "runtimes.ov:OpenVinoRuntime",
    "trt": "runtimes.trt:TrtRuntime",
    "null": "runtimes.null:NullRuntime",
}
_ALIASES = {"onnxruntime": "ort", "openvino": "ov", "tensorrt": "trt", "paddle_inference": "paddle"}
# Checked with find_spec before importing the adapter, so probe() can name the missing package cheaply.
_REQUIRES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "paddle": (("paddle", "export", ""),),
    "ort": (("onnxruntime", "ort", ""),),
    "ov": (("openvino", "ov", ""),),
    "trt": (("tensorrt", "trt", "TensorRT 10.x: tensorrt-cu13>=10.13.2,<11; needs an NVIDIA GPU"),),
}
# Runtimes for testing the harness itself; hidden from list_runtimes() unless asked for.
TEST_RUNTIMES = frozenset({"null"})


@functools.cache
def _plugins() -> dict[str, str]:
    """Entry-point runtimes as ``name -> "module:Class"``; a bad entry is logged and skipped."""
    found: dict[str, str] = {}
    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken distribution's metadata must not take the registry down
        log.warning("could not read %s entry points: %s", ENTRY_POINT_GROUP, exc)
        return found
    for ep in eps:
        name = ep.name.lower()
        if name in _BUILTIN or name in _ALIASES:
            log.warning("runtime plugin %r (%s) ignored: a built-in runtime has that name", name, ep.value)
        elif ":" not in ep.value:
            log.warning("runtime plugin %r ignored: value %r is not 'module:Class'", name, ep.value)
        else:
            found[name] = ep.value
    return found


def refresh_plugins() -> None:
    """Forget the cached entry points (after installing a plugin in a running process)."""
    _plugins.cache_clear()


def _targets() -> dict[str, str]:
    return {**_plugins(), **_BUILTIN}


def canonical_name(name: str) -> str:
    """Resolve aliases (``onnxruntime`` -> ``ort``); raise ValueError naming the known runtimes if unknown."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _targets():
        raise ValueError(f"unknown runtime {name!r}; known runtimes: {', '.join(sorted(_targets()))}")
    return key


def is_runtime(name: str) -> bool:
    try:
        canonical_name(name)
    except ValueError:
        return False
    return True


def list_runtimes(available_only: bool = False, include_test: bool = False) -> list[str]:
    """Registered runtime names, sorted. Test runtimes (``null``) only with ``include_test``."""
    names = sorted(n for n in _targets() if include_test or n not in TEST_RUNTIMES)
    if available_only:
        names = [n for n in names if probe(n).available]
    return names


def get_runtime(name: str) -> type[Runtime]:
    """The adapter class for ``name``, importing its module now.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        RuntimeUnavailable: the module or a package it imports at module level cannot be imported.
    """
    from runtimes.base import Runtime

    key = canonical_name(name)
    target = _targets()[key]
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        if key not in _BUILTIN:
            log.warning("runtime plugin %r (%s) failed to load: %s", key, target, exc)
        raise RuntimeUnavailable(f"runtime {key!r} could not be imported from {target}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise RuntimeUnavailable(f"runtime {key!r}: {target} is not a runtimes.base.Runtime subclass")
    return cls


def probe(name: str, device: str | None = None) -> Availability:
    """Can ``name`` run here (on ``device``, if given)? Never raises; the reason carries the install hint."""
    try:
        key = canonical_name(name)
    except ValueError as exc:
        return Availability(name=name, available=False, reason=str(exc))
    for module, extra, note in _REQUIRES.get(key, ()):
        if not is_installed(module):
            return Availability(name=key, available=False, reason=str(MissingDependency(module, extra, note)))
    try:
        cls = get_runtime(key)
        # A plugin's probe() may not take a device; it then answers for the runtime as a whole.
        if device is not None and "device" in inspect.signature(cls.probe).parameters:
            return cls.probe(device=device)
        return cls.probe()
    except Exception as exc:  # probe must never raise; a broken adapter is reported, not propagated
        log.warning("probing runtime %r failed: %s", key, exc)
        return Availability(name=key, available=False, reason=f"{type(exc).__name__}: {exc}")


def runtime_aliases() -> dict[str, list[str]]:
    """Registry key -> the other names it is accepted under (``ort``: ``onnxruntime``)."""
    found: dict[str, list[str]] = {}
    for alias, key in _ALIASES.items():
        found.setdefault(key, []).append(alias)
    return found


def describe_options(name: str) -> str:
    """The runtime's own options as ``name=default`` pairs, for ``bench list`` and error messages."""
    try:
        cls = get_runtime(name)
    except (ValueError, RuntimeUnavailable):
        return ""
    return ", ".join(f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING else f.name
                     for f in dataclasses.fields(cls.Options))


def option_help(name: str) -> list[dict[str, Any]]:
    """Name, type, default and meaning of each of the runtime's own options (``bench list --options``)."""
    return describe_fields(get_runtime(name).Options)


def capabilities(name: str) -> dict[str, Any]:
    """What runtime ``name`` can do, as its class declares it."""
    cls = get_runtime(name)
    return {"precisions": list(cls.precisions), "devices": list(cls.devices), "formats": list(cls.formats),
            "throughput": cls.supports_throughput(), "profile": cls.can_profile(), "explain": cls.can_explain,
            "int8_from_export": cls.int8_from_export, "runs_paddle_model": cls.runs_paddle_model}


def runtimes_that(test: Callable[[type[Runtime]], bool], include_test: bool = False) -> list[str]:
    """The registered runtimes whose class passes ``test`` (e.g. ``lambda cls: cls.can_profile()``), sorted; one
    that cannot be imported here is left out."""
    found = []
    for name in list_runtimes(include_test=include_test):
        try:
            cls = get_runtime(name)
        except RuntimeUnavailable:
            continue
        if test(cls):
            found.append(name)
    return found


def probe_all(include_test: bool = False) -> dict[str, Availability]:
    return {name: probe(name) for name in list_runtimes(include_test=include_test)}


__all__ = [
    "ENTRY_POINT_GROUP",
    "TEST_RUNTIMES",
    "canonical_name",
    "capabilities",
    "describe_options",
    "get_runtime",
    "is_runtime",
    "list_runtimes",
    "option_help",
    "probe",
    "probe_all",
    "refresh_plugins",
    "runtime_aliases",
    "runtimes_that",
]
