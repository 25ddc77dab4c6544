"""Run the passes of an optimisation level, each one checked, and describe them for the manifest.

Every pass must keep the opset and the graph's inputs and outputs. With check inputs, each pass's output is run
on ONNX Runtime with its own graph optimisations disabled (so ORT's fusions cannot hide a wrong rewrite) and
compared with the stage before it: an output that moves beyond ``STEP_TOLERANCE`` x max(1, largest |output|)
fails the pass, by name (float32 rounding of folded weights grows with the values, as in the parity limit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from export.optimize import attention, batchnorm, cleanup, extra, patches
from export.optimize.graph import census, collecting_notes, opset_of
from export.optimize.levels import check_level

Pass = Callable[[onnx.ModelProto], onnx.ModelProto]

# A pass is exact up to float32 rounding of folded weights, which grows with the values and the depth: observed
# <= 1.3e-7 on the seeded zoo models (logits below 1) and up to 2.4e-5 x the largest logit with seeded-calibrated
# weights (LeViT_128: 2.3e-4 on logits near 9.4, since BatchNorm scales re-estimated on real images are large).
# So a step may move the outputs as much as parity with Paddle allows: 1e-4 x max(1, largest |output|).
STEP_TOLERANCE = 1e-4

PASSES: dict[str, Pass] = {
    "remove_identity": cleanup.remove_identity,
    "remove_dropout": cleanup.remove_dropout,
    "remove_neutral_elementwise": cleanup.remove_neutral_elementwise,
    "fold_batchnorm": batchnorm.fold_batchnorm,
    "static_reshape_targets": cleanup.static_reshape_targets,
    "collapse_reshapes": cleanup.collapse_reshapes,
    "merge_transposes": cleanup.merge_transposes,
    "split_patch_transposes": patches.split_patch_transposes,
    "split_qkv_projection": attention.split_qkv_projection,
    "matmul_bias_to_gemm": extra.matmul_bias_to_gemm,
    "ort_offline": extra.ort_offline,
}


# Passes whose output holds runtime-specific ops that the ONNX checker cannot know.
NON_STANDARD_PASSES = frozenset({"ort_offline"})


class OptimizeError(RuntimeError):
    """A pass broke a rule (opset, inputs/outputs) or moved the model's outputs; the message names the pass."""


@dataclass
class PassReport:
    """One pass as it ran: node census before/after and how far it moved the outputs, for the manifest."""

    name: str
    nodes_before: int
    nodes_after: int
    census_before: dict[str, int]
    census_after: dict[str, int]
    seconds: float
    notes: list[str] = field(default_factory=list)
    max_abs_change: float | None = None  # vs the stage before, on the check inputs; None: not checked
    change_limit: float | None = None  # what max_abs_change had to stay within

    @property
    def changed(self) -> dict[str, int]:
        """Op types whose count changed, with the change (negative: removed)."""
        ops = set(self.census_before) | set(self.census_after)
        delta = {op: self.census_after.get(op, 0) - self.census_before.get(op, 0) for op in sorted(ops)}
        return {op: d for op, d in delta.items() if d}

    def to_dict(self) -> dict:
        return {
            "pass": self.name,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "op_delta": self.changed,
            "census_after": self.census_after,
            "max_abs_change": self.max_abs_change,
            "change_limit": self.change_limit,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def run_pass(name: str, fn: Pass, model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Run one pass and describe it; OptimizeError if it changed the opset or the graph's inputs/outputs."""
    before, start = census(model), time.perf_counter()
    with collecting_notes() as notes:
        try:
            out = fn(model)
        except Exception as exc:  # a defect in the pass: name it rather than print a traceback
            raise OptimizeError(f"pass {name} failed: {type(exc).__name__}: {exc}") from exc
    if name not in NON_STANDARD_PASSES:
        try:
            onnx.checker.check_model(out)
        except onnx.checker.ValidationError as exc:
            raise OptimizeError(f"pass {name} made an invalid ONNX graph: {str(exc).splitlines()[0]}") from None
    if opset_of(out) != opset_of(model):
        raise OptimizeError(f"pass {name} changed the opset {opset_of(model)} -> {opset_of(out)}")
    names = [[v.name for v in m.graph.input] + [v.name for v in m.graph.output] for m in (model, out)]
    if names[0] != names[1]:
        raise OptimizeError(f"pass {name} changed the graph's inputs or outputs")
    report = PassReport(name, len(model.graph.node), len(out.graph.node), before, census(out),
                        time.perf_counter() - start, notes)
    return out, report


def reference_outputs(model: onnx.ModelProto, inputs: np.ndarray) -> list[np.ndarray]:
    """Every graph output of ``model`` on ``inputs``, with ONNX Runtime's graph optimisations disabled."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})


def max_change(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    """The largest absolute difference over all outputs (inf when a shape differs or a value is not finite)."""
    worst = 0.0
    for a, b in zip(before, after, strict=True):
        if a.shape != b.shape:
            return float("inf")
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return worst if np.isfinite(worst) else float("inf")


def change_limit(outputs: list[np.ndarray], tolerance: float) -> float:
    """``tolerance`` x max(1, the largest |value| of ``outputs``)."""
    largest = max((float(np.abs(o).max()) for o in outputs if o.size), default=0.0)
    return tolerance * max(1.0, largest) if np.isfinite(largest) else tolerance


def optimize(model: onnx.ModelProto, level: str, check_inputs: np.ndarray | None = None,
             tolerance: float = STEP_TOLERANCE) -> tuple[onnx.ModelProto, list[PassReport]]:
    """Run the passes of ``level`` in order; the model and one report per pass.

    With ``check_inputs`` (one batch for the model's first input), every pass's outputs are compared with the
    stage before it and an OptimizeError names the first pass that moves them beyond ``tolerance`` (scaled by
    the outputs' magnitude above 1).
    """
    reports = []
    previous = reference_outputs(model, check_inputs) if check_inputs is not None else None
    for name in check_level(level).passes:
        model, report = run_pass(name, PASSES[name], model)
        if previous is not None:
            try:
                current = reference_outputs(model, check_inputs)
            except Exception as exc:  # onnxruntime raises its own types for a graph it cannot load
                raise OptimizeError(f"pass {name} made a graph ONNX Runtime cannot run: "
                                    f"{str(exc).splitlines()[0]}") from None
            report.max_abs_change = max_change(previous, current)
            report.change_limit = change_limit(previous, tolerance)
            if report.max_abs_change > report.change_limit:
                raise OptimizeError(f"pass {name} moved the outputs by {report.max_abs_change:.3g} "
                                    f"(limit {report.change_limit:.3g}); export with --optimize none to skip "
                                    f"the passes")
            previous = current
        reports.append(report)
    return model, reports
