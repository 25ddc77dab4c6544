"""YAML configuration reading with errors that name the file, the line and the key.

``load_yaml`` gives the data and, for every key path (``sweep.runtimes[2]``), the line it is on, so a value
error can point at the line as well as a syntax error does: ``bench.yaml:14: sweep.runtimes[2]: unknown
runtime 'tensorrtx'; allowed: ...``. ``ConfigReader`` holds the value checks every config section uses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration (file or CLI value) is invalid; the message says where and what is allowed."""


def load_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """(data, key path -> 1-based line); ``ConfigError`` with line and column for a syntax error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        raise ConfigError(f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")) from None
    lines: dict[str, int] = {}
    if node is not None:
        _collect_lines(node, "", lines)
    return data, lines


def _collect_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            lines[path] = key.start_mark.line + 1
            _collect_lines(value, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            lines[path] = item.start_mark.line + 1
            _collect_lines(item, path, lines)


class ConfigReader:
    """Value checks that name the source, line and key path of the value at fault."""

    def __init__(self, source: str, lines: dict[str, int] | None = None) -> None:
        self.source = source
        self.lines = lines or {}

    def fail(self, key: str, message: str) -> ConfigError:
        line = self.lines.get(key)
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def mapping(self, data: Any, key: str, allowed: tuple[str, ...] | None) -> dict:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise self.fail(key, f"expected a mapping, got {type(data).__name__}")
        for k in data:
            if not isinstance(k, str):
                raise self.fail(key, f"keys must be strings, got {k!r}")
            if allowed is not None and k not in allowed:
                raise self.fail(f"{key}.{k}" if key else k, f"unknown key; allowed: {', '.join(allowed)}")
        return data

    def sequence(self, data: Any, key: str, allow_empty: bool = False) -> list:
        if isinstance(data, str) or not isinstance(data, list):
            raise self.fail(key, f"expected a list, got {data!r}")
        if not data and not allow_empty:
            raise self.fail(key, "must not be empty")
        return data

    def choice(self, value: Any, key: str, allowed: tuple[str, ...], what: str) -> str:
        if value not in allowed:
            raise self.fail(key, f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def integer(self, value: Any, key: str, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(key, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def positive_int(self, value: Any, key: str) -> int:
        return self.integer(value, key, minimum=1)

    def number(self, value: Any, key: str, positive: bool = False) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise self.fail(key, f"expected a number {bound}, got {value!r}")
        return float(value)

    def wrap(self, key: str, error: Exception) -> ConfigError:
        """A ``ConfigError`` for ``key`` from an error raised by a lookup (unknown model, runtime, ...)."""
        return self.fail(key, str(error))
