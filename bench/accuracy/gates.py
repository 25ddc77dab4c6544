"""Drift gates: per-precision thresholds a cell's drift figures must meet (``bench.yaml: gates``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from core.metrics import DriftResult

log = logging.getLogger(__name__)

# Per-precision thresholds. "cosine" gates the *minimum* per-image cosine: one image pushed far off is the
# failure a drift check exists to catch, and a mean over 50,000 images would hide it (see "cosine_mean").
DEFAULT_GATES: dict[str, dict[str, float]] = {
    "fp32": {"agreement": 1.0, "max_abs_diff": 1e-4},
    "fp16": {"agreement": 0.99, "cosine": 0.999},
    "bf16": {"agreement": 0.99, "cosine": 0.999},
    "int8": {"agreement": 0.95, "cosine": 0.99},
    "tf32": {"agreement": 0.99, "cosine": 0.9999},  # fp32 asked, TF32 matmuls ran (GPU): 10-bit mantissa
}
# gate key -> (DriftResult field, direction): "min" means value >= threshold passes.
GATE_METRICS = {
    "agreement": ("agreement", "min"),
    "max_abs_diff": ("max_abs_diff", "max"),
    "mean_abs_diff": ("mean_abs_diff", "max"),
    "cosine": ("cosine_min", "min"),
    "cosine_mean": ("cosine_mean", "min"),
    "top1_delta": ("top1_delta", "min"),
    "unreadable_images": ("unreadable_images", "max"),
}
# Images that could not be decoded are left out of the figures; how many may be is a gate of every precision.
DEFAULT_UNREADABLE = 0



def evaluate_gates(drift: DriftResult | Mapping[str, Any], precision: str,
                   gates: Mapping[str, Mapping[str, float]] = DEFAULT_GATES) -> dict:
    """Check ``drift`` against the thresholds for ``precision``.

    Returns ``{"passed", "precision", "checks": [{metric, threshold, value, passed}]}``. Non-finite logits
    always fail. A metric that could not be computed (e.g. ``top1_delta`` without labels) has ``value`` and
    ``passed`` None and does not decide the outcome.
    """
    d = drift.to_dict() if isinstance(drift, DriftResult) else dict(drift)
    checks = [
        {"metric": "nonfinite_values", "threshold": 0, "value": d["nonfinite_values"],
         "passed": d["nonfinite_values"] == 0},
    ]
    if d.get("reference_nonfinite_values"):
        checks.append({"metric": "reference_nonfinite_values", "threshold": 0,
                       "value": d["reference_nonfinite_values"], "passed": False})
    thresholds = gates.get(precision)
    if thresholds is None:
        log.info("no drift thresholds for precision %r; only finiteness and unreadable images are checked",
                 precision)
        thresholds = {}
    if d.get("unreadable_images") is not None and "unreadable_images" not in thresholds:
        thresholds = {**thresholds, "unreadable_images": DEFAULT_UNREADABLE}
    for key, threshold in thresholds.items():
        if key not in GATE_METRICS:
            raise ValueError(f"unknown gate {key!r}; known: {', '.join(GATE_METRICS)}")
        field, direction = GATE_METRICS[key]
        value = d.get(field)
        if value is None:
            passed = None
        else:
            passed = value >= threshold if direction == "min" else value <= threshold
        checks.append({"metric": key, "threshold": threshold, "value": value, "passed": passed})
    return {"passed": all(c["passed"] is not False for c in checks), "precision": precision, "checks": checks}


def drift_failed(gates: Mapping[str, Any] | None) -> bool:
    """Whether a check on the logits failed (not only the count of unreadable images): what explain can trace."""
    if not gates or gates.get("passed") is not False:
        return False
    checks = gates.get("checks") or []
    return not checks or any(c["passed"] is False and c["metric"] != "unreadable_images" for c in checks)
