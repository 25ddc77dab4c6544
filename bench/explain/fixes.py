"""The suggested fix for an int8 model: re-quantise with the offending layers kept in float and measure the
agreement that comes back (the evidence for the accuracy-aware option of the reduced-precision stage).

The quantisation calls here are small and local (NNCF post-training quantisation to an OpenVINO IR, ONNX
Runtime static QDQ) rather than the export stage's recipes (``export.quantize``): they re-create an int8 model
from what its manifest records (``reduced_precision``: method, model type, preset, ignored scope, calibration
set), which a model quantised by another tool can carry too, and add only the layers kept in float.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.explain.compare import JUMP, Explanation

log = logging.getLogger(__name__)

# ONNX op type -> the OpenVINO op type its ONNX frontend makes (what NNCF IgnoredScope(types=...) names).
ONNX_TO_OV_TYPE = {"BatchNormalization": "BatchNormInference", "Conv": "Convolution", "HardSwish": "HSwish",
                   "MatMul": "MatMul", "Gemm": "MatMul", "Add": "Add", "Mul": "Multiply", "Softmax": "Softmax",
                   "ReduceMean": "ReduceMean", "Sigmoid": "Sigmoid", "LayerNormalization": "MVN",
                   "Transpose": "Transpose", "Reshape": "Reshape", "Concat": "Concat"}
NNCF, ORT_QDQ = "nncf", "ort-qdq"


@dataclass
class FixTrial:
    """One re-quantisation with some layers kept in float, and the agreement it recovered."""

    description: str
    ignored_names: list[str]
    ignored_types: list[str]  # ONNX op types
    top1_agree: int
    n: int
    cosine_min: float
    seconds: float
    passes_gates: bool | None = None
    model: str | None = None  # where the re-quantised model was written, when it was kept


Requantize = Callable[[list[str], list[str]], Path]  # (node names, ONNX op types) -> the new model file
Evaluate = Callable[[Path], dict[str, Any]]  # model file -> {"top1_agree", "n", "cosine_min", "passes_gates"}


def offenders(ex: Explanation, n: int = 5) -> list[dict[str, Any]]:
    """Layers to keep in float, worst first: the deployed run's first divergence when there is one, then (when
    the instrumented run describes the deployed one) the rows that cross the threshold with a real jump."""
    found = []
    if ex.deployed is not None and ex.deployed.first:
        found.append(ex.deployed.first)
    if ex.faithful or not found:
        found += [r for r in ex.top if r["rel_l2"] > ex.threshold and r["growth"] >= JUMP]
    unique = {(r["node"], r.get("stage")): r for r in found}
    return list(unique.values())[:n]


def fix_nodes(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Node names to keep in float for these rows (a quantisation row names its producer and consumers)."""
    return list(dict.fromkeys(n for r in rows for n in (r.get("fix_nodes") or r["node"]).split()))


def fix_plans(ex: Explanation, top_n: int = 5) -> list[tuple[str, list[str], list[str]]]:
    """(description, node names, ONNX op types) to try, smallest change first: the offenders by name; with the
    nodes around the quantised tensors they read or make (ORT quantises an output from its producer's side,
    NNCF from the consumers'); every jumping layer when the instrumented run is faithful; every node of the
    offenders' dominant op type."""
    top = offenders(ex, top_n)
    if not top:
        return []
    names = list(dict.fromkeys(r["node"] for r in top))
    plans = [(f"{len(names)} offending layer(s) by name", names, [])]
    around = fix_nodes(top)  # with the producers/consumers of the quantised tensors involved
    if around != names:
        plans.append((f"{len(names)} offending layer(s) and the quantisation of what they read or make",
                      around, []))
    if ex.faithful:
        jumping = [r for r in ex.rows if r["growth"] is not None and r["rel_l2"] > ex.threshold
                   and r["growth"] >= JUMP]
        if len(jumping) > len(top):
            plans.append((f"all {len(jumping)} jumping layers by name", fix_nodes(jumping), []))
    types: dict[str, int] = {}
    for r in top:
        types[r["op_type"]] = types.get(r["op_type"], 0) + 1
    dominant = max(types, key=lambda t: types[t])
    plans.append((f"every {dominant} (op type of {types[dominant]}/{len(top)} offenders)", [], [dominant]))
    return plans


def try_fixes(plans: Sequence[tuple[str, list[str], list[str]]], requantize: Requantize, evaluate: Evaluate,
              keep: bool = False, deadline: Any = None) -> list[FixTrial]:
    """Run each plan: re-quantise, measure. ``deadline`` (capture.Deadline) is checked before each trial."""
    trials = []
    for description, names, op_types in plans:
        if deadline is not None:
            deadline.check(f"fix trial '{description}'")
        t0 = time.perf_counter()
        path = requantize(names, op_types)
        result = evaluate(path)
        trials.append(FixTrial(description, names, op_types, int(result["top1_agree"]), int(result["n"]),
                               float(result["cosine_min"]), time.perf_counter() - t0,
                               result.get("passes_gates"), str(path) if keep else None))
    return trials


# --- the quantisers ------------------------------------------------------------------------------------------

def method_of(reduced_precision: Mapping[str, Any] | None, model_format: str) -> str:
    """``nncf`` or ``ort-qdq``: from the manifest's ``reduced_precision.method``, else from the file format."""
    method = str((reduced_precision or {}).get("method") or "").lower()
    if "nncf" in method or "openvino" in method:
        return NNCF
    if any(word in method for word in ("ort", "onnxruntime", "qdq", "quantize_static")):
        return ORT_QDQ
    return NNCF if model_format == "openvino-ir" else ORT_QDQ


def batches(images: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Full batches of ``batch`` (None: one image each); the last is padded by wrapping round."""
    if batch is None:
        return [images[i:i + 1] for i in range(len(images))]
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.resize(images, (batch - len(chunk), *images.shape[1:]))])
        out.append(np.ascontiguousarray(chunk))
    return out


def nncf_int8(onnx_path: Path, calibration: np.ndarray, out_xml: Path, *, batch: int | None = 8,
              parameters: Mapping[str, Any] | None = None, ignored_names: Sequence[str] = (),
              ignored_types: Sequence[str] = ()) -> Path:
    """NNCF post-training int8 of the fp32 ONNX as an OpenVINO IR (static ``batch``; None keeps it dynamic).

    ``parameters``: ``model_type`` ("transformer" or None for NNCF's DEFAULT preset), ``preset`` ("mixed" or
    "performance"), ``ignored_scope`` {names, types (OpenVINO types)}, and as the export stage records them
    ``calibration_batch`` (statistics gathered at that batch, default ``batch``) and ``fast_bias_correction``;
    ``ignored_types`` are ONNX op types.
    """
    import nncf
    import openvino as ov

    parameters = dict(parameters or {})
    model = ov.Core().read_model(str(onnx_path))
    name = model.inputs[0].get_any_name()
    if (parameters.get("constant_folding") or {}).get("before_nncf"):
        from export.quantize.ov_int8 import fold_constants

        fold_constants(model)  # as the candidate was made: grouped convolutions' weights as plain constants
    # Gather statistics the way the candidate was made (the export stage calibrates image by image): batched
    # statistics are not the same ranges, and a trial must differ from the candidate only in what it keeps float.
    calibration_batch = parameters.get("calibration_batch") or batch
    if calibration_batch is not None:
        model.reshape({name: [calibration_batch, *calibration.shape[1:]]})
    items = batches(calibration, calibration_batch)
    kwargs: dict[str, Any] = {}
    if "fast_bias_correction" in parameters:
        kwargs["fast_bias_correction"] = bool(parameters["fast_bias_correction"])
    if str(parameters.get("model_type") or "").lower() == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if parameters.get("preset"):
        kwargs["preset"] = getattr(nncf.QuantizationPreset, str(parameters["preset"]).upper())
    scope = parameters.get("ignored_scope") or {}
    names = [*scope.get("names", []), *ignored_names]
    types = [*scope.get("types", []), *(ONNX_TO_OV_TYPE.get(t, t) for t in ignored_types)]
    if names or types:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=names, types=types, validate=False)
    from export.quantize.ov_int8 import quiet_nncf

    with quiet_nncf():  # its INFO lines (every ignored node) and progress bars: not this tool's output
        quantized = nncf.quantize(model, nncf.Dataset(items), target_device=nncf.TargetDevice.CPU,
                                  subset_size=len(items), **kwargs)  # items, not images: each is one batch
    if calibration_batch != batch:
        quantized.reshape({name: [-1 if batch is None else batch, *calibration.shape[1:]]})
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=bool(parameters.get("compress_to_fp16", True)))
    return out_xml


def ort_int8_qdq(onnx_path: Path, calibration: np.ndarray, out_path: Path, *,
                 parameters: Mapping[str, Any] | None = None, nodes_to_exclude: Sequence[str] = ()) -> Path:
    """ORT static QDQ int8, calibrated image by image. Defaults: per-channel s8 weights, u8 activations,
    MinMax, every op of ORT's registries; ``parameters`` override them (``per_channel``, ``activation_type``,
    ``weight_type``, ``calibrate_method``, ``op_types_to_quantize``, ``nodes_to_exclude``, ``extra_options``).
    No ``quant_pre_process``: its optimiser renames nodes, so fewer reference tensors would keep their names.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    p = dict(parameters or {})
    name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
    feeds = iter([{name: calibration[i:i + 1]} for i in range(len(calibration))])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(onnx_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=bool(p.get("per_channel", True)),
                    activation_type=getattr(QuantType, p.get("activation_type", "QUInt8")),
                    weight_type=getattr(QuantType, p.get("weight_type", "QInt8")),
                    calibrate_method=getattr(CalibrationMethod, p.get("calibrate_method", "MinMax")),
                    op_types_to_quantize=p.get("op_types_to_quantize"),
                    nodes_to_exclude=[*p.get("nodes_to_exclude", []), *nodes_to_exclude],
                    extra_options=p.get("extra_options") or {})
    return out_path


def requantizer(method: str, onnx_path: Path, calibration: np.ndarray, folder: Path,
                parameters: Mapping[str, Any] | None, node_types: Mapping[str, str],
                batch: int | None) -> Requantize:
    """A callback that re-quantises the fp32 ONNX like the int8 candidate was, plus layers kept in float.
    ORT takes node names only, so an op type becomes every node of that type (``node_types``: name -> op)."""
    counter = iter(range(1_000_000))

    def requantize(names: list[str], op_types: list[str]) -> Path:
        trial = folder / f"trial-{next(counter)}"
        if method == NNCF:
            return nncf_int8(onnx_path, calibration, trial / "model.xml", batch=batch, parameters=parameters,
                             ignored_names=names, ignored_types=op_types)
        typed = [n for n, op in node_types.items() if op in op_types]
        return ort_int8_qdq(onnx_path, calibration, trial / "model.onnx", parameters=parameters,
                            nodes_to_exclude=[*names, *typed])

    return requantize
