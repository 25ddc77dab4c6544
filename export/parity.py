"""Numeric parity between Paddle and the exported ONNX model, measured with ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.metrics import compute_drift
from export.convert import ExportError

# fp32 export: the same function, up to kernel rounding. The limit scales with the logits' magnitude above 1:
# a float32 sum carries about 1e-7 relative error per step, so logits of size 20 (a trained classifier) may
# differ by more than 1e-4 between two correct fp32 implementations. Logits within [-1, 1] (the `seeded`
# parity weights) are held to 1e-4 itself.
MAX_ABS_DIFF = 1e-4


def tolerance_for(reference: np.ndarray, base: float = MAX_ABS_DIFF) -> float:
    finite = np.abs(reference[np.isfinite(reference)])
    return base * max(1.0, float(finite.max()) if finite.size else 1.0)


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Max/mean abs diff, per-row cosine (min), top-1 agreement between two ``[N, C]`` logit arrays.

    The figures come from the drift metrics (``core.metrics``), so an export and a benchmark measure the
    same way; this keeps the manifest's field names.
    """
    drift = compute_drift(reference, candidate).to_dict()
    return {
        "n": drift["n"],
        "max_abs_diff": drift["max_abs_diff"],
        "mean_abs_diff": drift["mean_abs_diff"],
        "cosine_min": drift["cosine_min"],
        "top1_agreement": drift["agreement"],
        "top1_flips": drift["flipped"],
        "finite": drift["finite"],
    }


def ort_logits(onnx_path: Path, inputs: np.ndarray, batch: int | None) -> np.ndarray:
    """Run the ONNX file on ORT CPU; a fixed-batch model gets padded chunks of its batch size."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    step = batch or 16
    outputs = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start : start + step]
        real = len(chunk)
        if batch and real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        outputs.append(session.run(None, {name: chunk})[0][:real])
    return np.concatenate(outputs)


class ParityError(ExportError):
    """The ONNX model does not compute Paddle's function; the export keeps its files for ``bench explain``."""


def check(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float | None = None) -> dict:
    """Compare and raise ExportError when the export does not compute Paddle's function."""
    figures = compare(reference, candidate)
    tolerance = tolerance_for(reference) if tolerance is None else tolerance
    figures["tolerance"] = tolerance
    figures["tolerance_rule"] = f"{MAX_ABS_DIFF:g} x max(1, max |reference logit|)"
    max_diff = figures["max_abs_diff"]  # None when no row is finite
    figures["passed"] = bool(
        figures["finite"]
        and max_diff is not None
        and max_diff <= tolerance
        and figures["top1_agreement"] == 1.0
    )
    if not figures["passed"]:
        shown = "n/a" if max_diff is None else f"{max_diff:.3g}"
        raise ParityError(
            f"parity failed on {name}: max abs diff {shown} (limit {tolerance:g}), "
            f"top-1 agreement {figures['top1_agreement']:.1%}, finite={figures['finite']}"
        )
    return figures
