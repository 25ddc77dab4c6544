"""Typed reads of the two record sections kept as the runs wrote them: ``drift`` (``core.metrics.DriftResult``
as a dict, plus where the reference and the data came from) and ``gates`` (``bench.accuracy.gates``).

The report and the comparison read these only through ``Drift`` and ``Gates``: a number is a finite number
or None, an interval a pair of finite numbers or None, whatever the record holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.records import Record, finite
from core.metrics import wilson_interval


def interval(value: Any) -> tuple[float, float] | None:
    """A recorded ``[lo, hi]`` pair of finite numbers, else None."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    lo, hi = finite(value[0]), finite(value[1])
    return None if lo is None or hi is None else (lo, hi)


def wilson_ci(p: float | None, n: float | None) -> tuple[float, float] | None:
    """The 95 % Wilson interval of a proportion ``p`` of ``n`` (None when either is unknown)."""
    if p is None or not n:
        return None
    return wilson_interval(round(p * n), int(n))


@dataclass(frozen=True)
class Drift:
    """A record's drift section (``core.metrics.DriftResult`` as a dict, as measured), read by name."""

    data: dict[str, Any]

    @classmethod
    def of(cls, record: Record) -> Drift | None:
        return cls(record.drift) if isinstance(record.drift, dict) else None

    def number(self, key: str) -> float | None:
        return finite(self.data.get(key))

    def interval(self, key: str) -> tuple[float, float] | None:
        return interval(self.data.get(key))

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    @property
    def labelled(self) -> bool:
        return bool(self.data.get("labelled"))

    @property
    def finite(self) -> bool | None:
        value = self.data.get("finite")
        return value if isinstance(value, bool) else None

    @property
    def top1_interval(self) -> tuple[float, float] | None:
        """Top-1 carries no interval of its own: Wilson on ``n``."""
        return wilson_ci(self.number("candidate_top1"), self.number("n"))

    @property
    def reference_top1_interval(self) -> tuple[float, float] | None:
        return wilson_ci(self.number("reference_top1"), self.number("n"))


@dataclass(frozen=True)
class GateCheck:
    metric: Any
    value: Any
    threshold: Any
    passed: Any


@dataclass(frozen=True)
class Gates:
    """A record's gates section (``bench.accuracy.gates.evaluate_gates``), read by name."""

    passed: bool
    checks: tuple[GateCheck, ...]

    @classmethod
    def of(cls, record: Record) -> Gates | None:
        """None when the record has no gates result (no dict, or one without ``passed``)."""
        gates = record.gates
        if not isinstance(gates, dict) or "passed" not in gates:
            return None
        checks = tuple(GateCheck(c.get("metric"), c.get("value"), c.get("threshold"), c.get("passed"))
                       for c in gates.get("checks") or [] if isinstance(c, dict))
        return cls(bool(gates["passed"]), checks)

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if c.passed is False]
