"""Run the passes of an optimisation level, each one checked, and describe them for the manifest.

Every pass must keep the opset and the graph's inputs and outputs. With check inputs, each pass's output is run
on ONNX Runtime with its own graph optimisations disabled (so ORT's fusions cannot hide a wrong rewrite) and
compared with the stage before it. An exact rewrite still rounds in float32, and how far float32 rounding moves
the outputs depends on the model: the limit is the larger of ``STEP_TOLERANCE`` x max(1, largest |output|) (the
parity rule) and ``ULP_FACTOR`` x the model's float32 sensitivity, how far its outputs move when every input
moves by one float32 ulp (LeViT_384 with seeded-calibrated weights: up to 3.5e-3 on logits near 24, more than
the first rule allows, and about what folding its BatchNorms moves them). A pass beyond the limit fails by name,
with the first tensor it moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
# A rewrite that is exact in real arithmetic moves float32 outputs by about what a one-ulp nudge of the inputs
# does (LeViT_384 seeded-calibrated: folding BatchNorm 2.2e-3, the nudge 1.8e-3; 3.9e-3 and 3.5e-3 with weights
# calibrated on Pillow-resized images); a wrong rewrite moves them by orders of magnitude more.
ULP_FACTOR = 4.0

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
    "fold_attention_scale": attention.fold_attention_scale,
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
    float32_sensitivity: float | None = None  # the outputs' move under a one-ulp nudge of the check inputs

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
            "float32_sensitivity": self.float32_sensitivity,
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


def change_limit(outputs: list[np.ndarray], tolerance: float, sensitivity: float = 0.0) -> float:
    """The larger of ``tolerance`` x max(1, the largest |value| of ``outputs``) and ``ULP_FACTOR`` x
    ``sensitivity`` (the outputs' move under a one-ulp nudge of the inputs)."""
    largest = max((float(np.abs(o).max()) for o in outputs if o.size), default=0.0)
    scaled = tolerance * max(1.0, largest) if np.isfinite(largest) else tolerance
    return max(scaled, ULP_FACTOR * sensitivity) if np.isfinite(sensitivity) else scaled


def float32_sensitivity(model: onnx.ModelProto, inputs: np.ndarray, outputs: list[np.ndarray]) -> float:
    """How far ``outputs`` (of ``inputs``) move when every input moves by one float32 ulp: the size of float32
    rounding in this model, amplified as the model amplifies it."""
    nudged = np.nextafter(inputs, np.array(np.inf, dtype=inputs.dtype)) if inputs.dtype.kind == "f" else inputs
    return max_change(outputs, reference_outputs(model, nudged))


def optimize(model: onnx.ModelProto, level: str, check_inputs: np.ndarray | None = None,
             tolerance: float = STEP_TOLERANCE) -> tuple[onnx.ModelProto, list[PassReport]]:
    """Run the passes of ``level`` in order; the model and one report per pass.

    With ``check_inputs`` (one batch for the model's first input), every pass's outputs are compared with the
    stage before it and an OptimizeError names the first pass that moves them beyond ``tolerance`` (scaled by
    the outputs' magnitude above 1).
    """
    return run_passes(model, check_level(level).passes, check_inputs, tolerance)


def run_passes(model: onnx.ModelProto, names: Sequence[str], check_inputs: np.ndarray | None = None,
               tolerance: float = STEP_TOLERANCE) -> tuple[onnx.ModelProto, list[PassReport]]:
    """Run the passes called ``names`` (keys of ``PASSES``) in order, each checked as :func:`optimize` says."""
    reports = []
    previous = reference_outputs(model, check_inputs) if check_inputs is not None else None
    sensitivity = float32_sensitivity(model, check_inputs, previous) if previous is not None else None
    for name in names:
        before = model
        model, report = run_pass(name, PASSES[name], model)
        if previous is not None:
            try:
                current = reference_outputs(model, check_inputs)
            except Exception as exc:  # onnxruntime raises its own types for a graph it cannot load
                raise OptimizeError(f"pass {name} made a graph ONNX Runtime cannot run: "
                                    f"{str(exc).splitlines()[0]}") from None
            report.max_abs_change = max_change(previous, current)
            report.change_limit = change_limit(previous, tolerance, sensitivity)
            report.float32_sensitivity = sensitivity
            if report.max_abs_change > report.change_limit:
                raise OptimizeError(_moved_message(name, report, before, model, check_inputs))
            previous = current
        reports.append(report)
    return model, reports


def _moved_message(name: str, report: PassReport, before: onnx.ModelProto, after: onnx.ModelProto,
                   inputs: np.ndarray) -> str:
    from export.optimize.locate import first_moved_tensor

    try:
        where = first_moved_tensor(before, after, inputs)
    except Exception as exc:  # locating is a hint; the failure itself must be reported
        where = f"the tensor could not be located ({type(exc).__name__})"
    return (f"pass {name} moved the outputs by {report.max_abs_change:.3g} (limit {report.change_limit:.3g}, "
            f"float32 sensitivity {report.float32_sensitivity:.3g}); {where or 'no shared tensor moved'}; "
            f"export with --optimize none to skip the passes")
