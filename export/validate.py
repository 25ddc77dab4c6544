"""Graph validation of an exported ONNX model: checker, strict shape inference, opset, op census."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from export.convert import ExportError


def validate(model_path: Path, opset_asked: int, strict: bool = True) -> dict:
    """Full-check ``model_path`` and describe it; raises ExportError on any defect.

    ``strict=False`` is for a runtime-specific graph (com.microsoft ops the ONNX checker cannot know): it is
    loaded and described, and its correctness rests on the per-pass check and parity.
    """
    import onnx

    try:
        if strict:
            onnx.checker.check_model(str(model_path), full_check=True)
        model = onnx.load(str(model_path))
        inferred = onnx.shape_inference.infer_shapes(model, check_type=strict, strict_mode=strict, data_prop=True)
    except Exception as exc:  # checker and inference raise several onnx-specific types
        raise ExportError(f"{model_path.name} fails ONNX validation: {str(exc).splitlines()[0]}") from None
    written = default_opset(model)
    if written != opset_asked:
        raise ExportError(f"asked for opset {opset_asked} but the file declares opset {written}")
    census = Counter(node.op_type for node in model.graph.node)
    return {
        "opset_written": written,
        "ir_version": model.ir_version,
        "node_count": len(model.graph.node),
        "op_census": dict(sorted(census.items())),
        "inputs": [_value_info(v) for v in model.graph.input],
        "outputs": [_value_info(v) for v in inferred.graph.output],
    }


def default_opset(model) -> int:
    return next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def _value_info(value) -> dict:
    from onnx import helper

    tensor = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    return {
        "name": value.name,
        "shape": shape,
        "dtype": helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
    }
