"""The accuracy axis of the report's latency-vs-accuracy figures: which metric (top-1 accuracy, or agreement with
Paddle for random weights), and each cell's value with its 95 % interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.report.results import Y_METRICS, Cell, ReportError


@dataclass
class YValue:
    value: float | None  # %
    lo: float | None
    hi: float | None
    source: str  # "drift", "reference", or why it is missing


def choose_y_metric(cells: Sequence[Cell], requested: str = "auto") -> str:
    """``top1`` if every drift result is labelled and no weights are seeded (random: ``seeded`` and
    ``seeded-calibrated``), else ``agreement``."""
    if requested not in Y_METRICS:
        raise ReportError(f"--y must be one of {', '.join(Y_METRICS)}, got {requested!r}")
    if requested != "auto":
        return requested
    with_drift = [(c, c.drift) for c in cells if c.ok and c.drift is not None]
    if with_drift and all(d.labelled and d.number("candidate_top1") is not None
                          and not str(c.weights).startswith("seeded")
                          for c, d in with_drift):
        return "top1"
    return "agreement"


def y_label(metric: str) -> str:
    return "top-1 accuracy (%)" if metric == "top1" else "top-1 agreement with Paddle (%)"


def y_value(cell: Cell, metric: str, cells: Sequence[Cell]) -> YValue:
    """The cell's accuracy (or agreement) in % with its 95 % interval.

    Paddle FP32 without a drift result is the reference itself: 100 % agreement by definition, and its
    top-1 is the ``reference_top1`` that other runtimes' drift results of the same model report.
    """
    drift = cell.drift
    if cell.failed:
        return YValue(None, None, None, cell.status)
    if drift is None:
        if cell.runtime == "paddle" and cell.precision == "fp32":
            if metric == "agreement":
                return YValue(100.0, None, None, "reference")
            return _reference_top1(cell, cells)
        return YValue(None, None, None, "drift missing")
    if metric == "agreement":
        value, ci = drift.number("agreement"), drift.interval("agreement_ci")
    else:
        value, ci = drift.number("candidate_top1"), drift.top1_interval
    if value is None:
        return YValue(None, None, None, f"drift has no {'agreement' if metric == 'agreement' else 'top-1'}")
    lo, hi = (100 * ci[0], 100 * ci[1]) if ci else (None, None)
    return YValue(100 * value, lo, hi, "drift")


def _reference_top1(cell: Cell, cells: Sequence[Cell]) -> YValue:
    for other in cells:
        d = other.drift
        if (other is not cell and other.ok and d is not None and other.model == cell.model
                and other.weights == cell.weights and d.number("reference_top1") is not None):
            ci = d.reference_top1_interval
            return YValue(100 * d.number("reference_top1"), 100 * ci[0] if ci else None,
                          100 * ci[1] if ci else None,
                          f"reference_top1 of the {other.runtime} {other.precision} drift result")
    return YValue(None, None, None, "no reference_top1 recorded for this model")
