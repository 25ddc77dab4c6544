"""One explain from an artifact: find its fp32 reference, build the reference and candidate captures the way
the benchmark runs the model, compare them on a few images, suggest (and for int8, try) a fix, and write the
CSV, the plot and the record section.

Reduced-precision artifacts follow the export stage's contract (core/manifest.py): ``precision`` "int8" or
"fp16", ``graph.format`` "onnx" (ORT QDQ int8, fp16 ONNX) or "openvino-ir" (NNCF int8 IR), ``reduced_precision``
(method, parameters, calibration set) and ``source.manifest``: the fp32 export it was built from, which is the
reference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.explain.capture import Deadline, ExplainTimeout
from bench.explain.compare import Explanation, explain
from bench.explain.graph import GraphIndex, index_graph, reference_selection
from bench.explain.known import known_issues
from bench.explain.report import CSV_NAME, PLOT_NAME, plot, section, write_csv
from core.artifact import Artifact, ArtifactError
from core.manifest import ManifestError

log = logging.getLogger(__name__)

# Why a runtime that cannot be explained (``Runtime.can_explain`` false) is not (said in the CLI error and the
# record); a runtime not named here gets a plain "cannot explain".
UNSUPPORTED = {
    "paddle": "Paddle is the reference, not a candidate: explain the ONNX export on ort or ov with --against paddle "
              "to compare it with Paddle's own intermediate values",
    "trt": "TensorRT needs an NVIDIA GPU (none here); Polygraphy-style marking of every ONNX output "
           "(`polygraphy run model.onnx --trt --onnxrt --trt-outputs mark all --onnx-outputs mark all`) is the "
           "equivalent on a GPU machine",
}


class ExplainError(RuntimeError):
    """The explain cannot run for this target (the message says why and what to do)."""


def why_not_explained(runtime: str) -> str | None:
    """Why ``runtime`` (a registry name) cannot be explained, or None when it can: its class says
    (``can_explain``) and a capture instruments it here (``make_capture``)."""
    from runtimes import get_runtime
    from runtimes.base import RuntimeUnavailable

    try:
        explainable = get_runtime(runtime).can_explain
    except (ValueError, RuntimeUnavailable) as exc:
        return str(exc)
    if not explainable:
        return UNSUPPORTED.get(runtime, f"cannot explain {runtime}: its adapter does not offer it (can_explain)")
    return None if runtime in CAPTURES else f"cannot explain {runtime}: no capture instruments it here"


@dataclass
class ExplainSettings:
    images: int = 8  # images compared layer by layer
    top: int = 10
    threshold: float | None = None  # None: per precision (compare.DEFAULT_THRESHOLDS)
    chunk: int = 2  # images per instrumented run
    search: str = "auto"  # deployed-run search: auto (when the instrumented run is not faithful) | always | never
    fixes: bool = True  # int8: re-quantise with the offending layers kept in float and measure
    eval_images: int = 64  # images a fix trial is measured on (the evaluation set, up to this many)
    time_limit_s: float | None = None
    calibration: str | None = None  # images for re-quantising, when the manifest records none
    gates: dict = field(default_factory=dict)  # bench.yaml gates; empty: bench.accuracy.gates.DEFAULT_GATES
    keep_fix_models: bool = True  # keep each fix trial's model under <out_dir>/fixes (False: a temporary folder)


@dataclass
class Target:
    """What is explained: ``artifact`` run by ``runtime`` at ``precision``, against ``reference``."""

    runtime: str
    precision: str  # what runs: the model file's for ort and int8; the hint for ov fp32/bf16/fp16
    artifact: Artifact
    reference: Artifact
    batch: int = 8  # the deployed batch of a dynamic-batch model (ov)
    threads: int = 1
    prefer_images: tuple[str, ...] = ()  # e.g. the flipped images of a failed drift gate
    against: str = "onnx"  # "onnx": ORT fp32 on the fp32 export | "paddle": Paddle's own values (bench.explain.paddle)

    @property
    def label(self) -> str:
        return f"{self.runtime}-{self.precision}"

    @property
    def reference_label(self) -> str:
        if self.against == "paddle":
            return f"Paddle fp32 ({self.reference.manifest.paddle_model['model_file']})"
        return f"ORT fp32 ({self.reference.model_path.name})"


def reference_of(artifact: Artifact) -> Artifact:
    """The fp32 ONNX export a candidate is compared with: the manifest's ``source.manifest``, else itself."""
    source = (artifact.manifest.source or {}).get("manifest")
    if source:
        path = Path(source) if Path(source).is_absolute() else artifact.root / source
        try:
            reference = Artifact.from_manifest(path, verify=True)
        except (ManifestError, ArtifactError) as exc:
            raise ExplainError(f"{artifact.model}: the fp32 export it was built from is unusable: {exc}") from None
    elif artifact.precision == "fp32" and artifact.format == "onnx":
        reference = artifact
    else:
        raise ExplainError(f"{artifact.model}: a {artifact.precision} {artifact.format} model whose manifest names "
                           f"no fp32 source (source.manifest); the explain needs the fp32 export as reference")
    if reference.precision != "fp32" or reference.format != "onnx":
        raise ExplainError(f"{reference.manifest_path}: the reference must be an fp32 ONNX export, got "
                           f"{reference.precision} {reference.format}")
    return reference


def pick_images(reference: Artifact, count: int, prefer: tuple[str, ...] = ()) -> tuple[np.ndarray, list[str]]:
    """``count`` images of the export's evaluation set (the ``prefer`` names first), preprocessed as the
    benchmark does; a synthetic set when the export stored none."""
    from bench.accuracy.drift_pass import DriftSettings, open_drift_dataset

    dataset = open_drift_dataset(DriftSettings(), reference)
    chosen: dict[str, np.ndarray] = {}
    rest: list[tuple[str, np.ndarray]] = []
    for batch in dataset.batches(16):
        for name, image in zip(batch.names, batch.images, strict=True):
            if name in prefer and len(chosen) < count:
                chosen[name] = image
            elif len(rest) < count:
                rest.append((name, image))
    for name, image in rest[: count - len(chosen)]:
        chosen[name] = image
    if not chosen:
        raise ExplainError(f"{reference.model}: no image to compare on")
    return np.stack(list(chosen.values())).astype(np.float32), list(chosen)


def reference_capture(target: Target, graph: GraphIndex, candidate: Any) -> Any:
    """What the candidate is compared with: ORT fp32 on the fp32 export, or Paddle running its own model."""
    from bench.explain.ort import OrtCapture

    select = reference_selection(graph, [candidate])
    if target.against != "paddle":
        return OrtCapture(target.reference.model_path, graph, label="ort-fp32-reference", threads=target.threads,
                          select=select)
    from bench.explain.paddle import PaddleCapture

    files = target.reference.paddle_files
    if files is None or not files[0].is_file():
        raise ExplainError(f"{target.reference.manifest_path}: no Paddle model beside the export (paddle/), so "
                           "there are no Paddle values to compare with; use --against onnx")
    return PaddleCapture(files[0], graph, select=select)


def _ort_capture(target: Target, graph: GraphIndex, chunk: int) -> Any:
    from bench.explain.ort import OrtCapture

    return OrtCapture(target.artifact.model_path, graph, label=target.label, precision=target.precision,
                      threads=target.threads, select=graph.selection())


def _ov_capture(target: Target, graph: GraphIndex, chunk: int) -> Any:
    from bench.explain.ov import OvCapture

    return OvCapture(target.artifact.model_path, graph, label=target.label, precision=target.precision,
                     batch=target.batch, chunk=chunk, threads=target.threads, select=graph.selection())


# The runtimes whose classes say they can be explained, and the capture that instruments each.
CAPTURES = {"ort": _ort_capture, "ov": _ov_capture}


def make_capture(target: Target, graph: GraphIndex, chunk: int) -> Any:
    """The candidate capture, set up as the benchmark's adapter runs the model."""
    return CAPTURES[target.runtime](target, graph, chunk)


@dataclass
class Outcome:
    explanation: Explanation
    graph: GraphIndex
    section: dict[str, Any]
    lines: list[str]


def run_explain(target: Target, settings: ExplainSettings, out_dir: Path | None) -> Outcome:
    """Explain ``target``; write ``layers.csv`` and ``error_along_depth.png`` into ``out_dir`` when given."""
    import onnx

    from bench.explain.report import format_text

    why = why_not_explained(target.runtime)
    if why:
        raise ExplainError(why)
    t0 = time.perf_counter()
    deadline = Deadline(settings.time_limit_s)
    graph = index_graph(onnx.load(str(target.reference.model_path)))
    images, names = pick_images(target.reference, settings.images, target.prefer_images)
    candidate = make_capture(target, graph, settings.chunk)
    reference = reference_capture(target, graph, candidate)
    ex = explain(reference, candidate, graph, images, chunk=settings.chunk, threshold=settings.threshold,
                 top_n=settings.top, search=settings.search, deadline=deadline)
    ex.settings["images"] = names
    known = known_issues(ex, graph)
    fix = suggest_fix(target, ex, graph, settings, deadline, out_dir)
    files = {}
    if out_dir is not None:
        files = {"csv": str(write_csv([ex], Path(out_dir) / CSV_NAME)),
                 "plot": str(plot([ex], graph, Path(out_dir) / PLOT_NAME,
                                  title=f"{target.artifact.model}: {target.label} vs {target.reference_label}"))}
    data = section(ex, known, fix, files, time.perf_counter() - t0)
    data["against"] = target.against
    return Outcome(ex, graph, data, format_text(ex, settings.top))


def suggest_fix(target: Target, ex: Explanation, graph: GraphIndex, settings: ExplainSettings,
                deadline: Deadline, out_dir: Path | None) -> dict[str, Any]:
    """What to keep in float, and for int8 models the measured result of doing it (``fixes.try_fixes``)."""
    from bench.explain.fixes import fix_plans

    plans = fix_plans(ex)
    if not plans:
        return {"plans": [], "trials": [], "untested": "nothing diverged", "suggestion": None}
    names, types = plans[0][1], plans[-1][2]
    fix: dict[str, Any] = {"plans": [{"description": d, "names": n, "types": t} for d, n, t in plans],
                           "trials": [], "untested": None, "suggestion": _suggestion(target, names, types)}
    if target.artifact.precision != "int8":
        fix["untested"] = f"a {target.precision} candidate is not re-quantised; the suggestion is the evidence"
    elif not settings.fixes:
        fix["untested"] = "fix trials switched off"
    else:
        try:
            fix["trials"] = _trials(target, plans, graph, settings, deadline, out_dir)
            fix["recovered"] = any(t["passes_gates"] for t in fix["trials"])
        except ExplainTimeout as exc:
            fix["untested"] = str(exc)
        except ExplainError as exc:
            fix["untested"] = str(exc)
    return fix


def _suggestion(target: Target, names: list[str], types: list[str]) -> str:
    kept = ", ".join(names) + (f" (or every {', '.join(types)})" if types else "")
    if target.artifact.precision == "int8":
        how = ("NNCF IgnoredScope(names=[...])" if target.artifact.format == "openvino-ir"
               else "ORT quantize_static(nodes_to_exclude=[...])")
        return f"keep {kept} in float: {how}"
    if target.precision == "fp16":
        return f"keep {kept} in fp32 (float16 converter node_block_list / op_block_list)"
    if target.precision == "fp32" and target.against == "paddle":
        return (f"{kept} computes differently from Paddle's own op: the conversion (paddle2onnx, a graph pass: try "
                f"--optimize none) or the runtime changed it; report it with layers.csv")
    if target.precision == "fp32":
        return (f"{kept} computes differently from ORT fp32 at the same precision: a runtime or export fault; "
                f"try another opset, or report it with layers.csv")
    return f"{kept} diverges at {target.precision}: run it at higher precision, try another opset, or report it"


def _trials(target: Target, plans: list, graph: GraphIndex, settings: ExplainSettings, deadline: Deadline,
            out_dir: Path | None) -> list[dict[str, Any]]:
    import tempfile
    from dataclasses import asdict

    from bench.explain.fixes import method_of, requantizer, try_fixes

    manifest = target.artifact.manifest
    calibration = calibration_images(target, settings)
    method = method_of(manifest.reduced_precision, target.artifact.format)
    parameters = (manifest.reduced_precision or {}).get("parameters") or {}
    lead = target.artifact.input_shape[0]
    static = lead if isinstance(lead, int) and lead > 0 else None
    evaluate = _evaluator(target, settings)
    with tempfile.TemporaryDirectory(prefix="explain-fix-") as tmp:
        keep = out_dir is not None and settings.keep_fix_models
        folder = Path(out_dir) / "fixes" if keep else Path(tmp)
        requantize = requantizer(method, target.reference.model_path, calibration, folder, parameters,
                                 graph.node_op_types(), static if method == "nncf" else None)
        trials = try_fixes(plans, requantize, evaluate, keep=keep, deadline=deadline)
    return [{**asdict(t), "method": method} for t in trials]


def calibration_images(target: Target, settings: ExplainSettings) -> np.ndarray:
    """The calibration set the int8 model was made with (``reduced_precision.calibration``), or
    ``settings.calibration``; never the evaluation images."""
    from core.datasets import DataError, open_dataset

    recorded = (target.artifact.manifest.reduced_precision or {}).get("calibration") or {}
    keys = ("folder", "list", "path", "file")
    where = settings.calibration or next((recorded[k] for k in keys if recorded.get(k)), None)
    if not where:
        raise ExplainError("the int8 manifest records no calibration set (reduced_precision.calibration.folder); "
                           "pass --calibration DIR to try the fixes")
    path = Path(where) if Path(where).is_absolute() or settings.calibration else target.artifact.root / where
    count = recorded.get("size") or recorded.get("count")
    if path.suffix == ".npy":  # preprocessed tensors [N, C, H, W], e.g. seeded inputs of a test model
        images = np.load(path).astype(np.float32)
        return images[: int(count)] if isinstance(count, int) and count > 0 else images
    try:
        dataset = open_dataset(str(path), preprocess=target.reference.preprocess)
        images = np.concatenate([b.images for b in dataset.batches(32)])
    except DataError as exc:
        raise ExplainError(f"calibration set {path}: {exc}") from None
    return images[: int(count)] if isinstance(count, int) and count > 0 else images


def _evaluator(target: Target, settings: ExplainSettings):
    """Measures a re-quantised model on the evaluation images against ORT fp32, judged by the int8 gates."""
    from bench.accuracy.gates import DEFAULT_GATES, evaluate_gates
    from bench.explain import ort, ov
    from core.metrics import compute_drift

    images, _ = pick_images(target.reference, settings.eval_images)
    reference = ort.deployed_logits(target.reference.model_path, images, target.threads)

    def evaluate(path: Path) -> dict[str, Any]:
        if path.suffix == ".xml":
            logits = ov.deployed_logits(path, images, "int8", target.batch, target.threads)
        else:
            logits = ort.deployed_logits(path, images, target.threads)
        drift = compute_drift(reference, logits).to_dict()
        gates = evaluate_gates(drift, "int8", settings.gates or DEFAULT_GATES)
        return {"top1_agree": round(drift["agreement"] * drift["n"]), "n": drift["n"],
                "cosine_min": drift["cosine_min"], "passes_gates": gates["passed"]}

    return evaluate
