"""Deployment budgets: what ``bench recommend``, ``bench tune`` and the report's *Recommendation* section choose
under. One objective (lowest latency or highest throughput) and the constraints every choice must meet: a
latency ceiling, a throughput floor, a largest drop of top-1 (in percentage points), and optionally the batch.

Given on the command line (``add_budget_arguments``) or in bench.yaml's ``recommend:`` section
(``parse_section``); every budget must be a positive number, or the error names the flag or key.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from core.yamlio import ConfigReader

OBJECTIVES = ("latency", "throughput")
PERCENTILES = ("p50", "p90", "p95", "p99")
DEFAULT_PERCENTILE = "p90"
SECTION_KEYS = ("objective", "max_latency_ms", "min_throughput", "max_drop", "percentile", "batch")


class BudgetError(ValueError):
    """A budget that is not a positive number, or an objective or percentile not offered."""


@dataclass(frozen=True)
class Budgets:
    """The objective and the constraints; None: no such constraint."""

    objective: str = "latency"  # "latency": lowest latency at ``percentile`` | "throughput": most images/s
    max_latency_ms: float | None = None  # judged on ``percentile`` of the latency of one batch (request)
    min_throughput: float | None = None  # images/s
    max_drop: float | None = None  # percentage points of top-1, judged on the upper end of the 95 % interval
    percentile: str = DEFAULT_PERCENTILE
    batch: int | None = None  # only configurations at this batch

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise BudgetError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.percentile not in PERCENTILES:
            raise BudgetError(f"percentile must be one of {', '.join(PERCENTILES)}, got {self.percentile!r}")
        for name, flag in (("max_latency_ms", "--max-latency-ms"), ("min_throughput", "--min-throughput"),
                           ("max_drop", "--max-drop"), ("batch", "--batch")):
            value = getattr(self, name)
            if value is not None and not _positive(value):
                raise BudgetError(f"{flag} must be a positive number, got {value!r}")
        if self.max_drop is not None and self.max_drop > 100:
            raise BudgetError(f"--max-drop is in percentage points of top-1 (0-100], got {self.max_drop!r}")

    def flags(self) -> list[str]:
        """The command-line flags that set these budgets (``bench recommend``'s)."""
        out = ["--objective", self.objective]
        for flag, value in (("--max-latency-ms", self.max_latency_ms), ("--min-throughput", self.min_throughput),
                            ("--max-drop", self.max_drop), ("--batch", self.batch)):
            out += [flag, f"{value:g}"] if value is not None else []
        return out + (["--percentile", self.percentile] if self.percentile != DEFAULT_PERCENTILE else [])

    def describe(self) -> str:
        """One line: the objective and every constraint, as judged."""
        goal = (f"lowest {self.percentile} latency" if self.objective == "latency" else "highest images/s")
        limits = []
        if self.max_latency_ms is not None:
            limits.append(f"{self.percentile} latency <= {self.max_latency_ms:g} ms")
        if self.min_throughput is not None:
            limits.append(f"throughput >= {self.min_throughput:g} images/s")
        if self.max_drop is not None:
            limits.append(f"top-1 drop <= {self.max_drop:g} points (upper end of its 95 % interval)")
        where = f" at batch {self.batch}" if self.batch is not None else ""
        return goal + where + (" with " + " and ".join(limits) if limits else "")


def _positive(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0)


def default_objective(max_latency_ms: float | None, min_throughput: float | None) -> str:
    """With a latency ceiling alone, the most images/s under it; otherwise the lowest latency."""
    return "throughput" if max_latency_ms is not None and min_throughput is None else "latency"


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not _positive(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def add_budget_arguments(p: argparse.ArgumentParser, objective_required: bool = False) -> None:
    """The budget flags ``recommend``, ``tune`` and ``report`` share (argparse exits 2 on a bad value)."""
    default = "" if objective_required else (" (default: throughput when only --max-latency-ms is given, else "
                                             "latency)")
    p.add_argument("--objective", choices=OBJECTIVES, required=objective_required,
                   help="latency: the lowest latency at --percentile; throughput: the most images/s" + default)
    p.add_argument("--max-latency-ms", type=_positive_number, metavar="X",
                   help="latency ceiling per batch (request) in ms, judged on --percentile")
    p.add_argument("--min-throughput", type=_positive_number, metavar="N", help="throughput floor in images/s")
    p.add_argument("--max-drop", type=_positive_number, metavar="P",
                   help="largest top-1 drop from Paddle in percentage points, judged on the upper end of its 95 %% "
                        "interval (on labels when the records have them, else on agreement with Paddle); not the "
                        "int8 recipe's --max-drop of python -m export")
    p.add_argument("--percentile", choices=PERCENTILES, default=None,
                   help=f"the latency percentile the budgets and the objective judge (default {DEFAULT_PERCENTILE})")


def budgets_from_args(args: argparse.Namespace, batch: int | None = None) -> Budgets:
    """``Budgets`` from the flags of ``add_budget_arguments``; ``BudgetError`` when they do not make one."""
    objective = args.objective or default_objective(args.max_latency_ms, args.min_throughput)
    return Budgets(objective, args.max_latency_ms, args.min_throughput, args.max_drop,
                   args.percentile or DEFAULT_PERCENTILE, batch)


def given_on_command_line(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None for name in ("objective", "max_latency_ms", "min_throughput",
                                                            "max_drop", "percentile"))


def parse_section(reader: ConfigReader, data: Any) -> Budgets | None:
    """bench.yaml's ``recommend:`` section; None when it sets no budget (the report then has no
    *Recommendation* section)."""
    d = reader.mapping(data, "recommend", SECTION_KEYS)
    numbers = {}
    for key in ("max_latency_ms", "min_throughput", "max_drop"):
        if d.get(key) is not None:
            numbers[key] = reader.number(d[key], f"recommend.{key}", positive=True)
    if not numbers:
        return None
    objective = d.get("objective")
    if objective is not None:
        reader.choice(objective, "recommend.objective", OBJECTIVES, what="objective")
    percentile = reader.choice(d.get("percentile") or DEFAULT_PERCENTILE, "recommend.percentile", PERCENTILES,
                               what="percentile")
    batch = reader.positive_int(d["batch"], "recommend.batch") if d.get("batch") is not None else None
    try:
        return Budgets(objective or default_objective(numbers.get("max_latency_ms"), numbers.get("min_throughput")),
                       percentile=percentile, batch=batch, **numbers)
    except BudgetError as exc:
        raise reader.fail("recommend", str(exc)) from None
