"""Where a graph rewrite moved the values: the first tensor, in graph order, that both graphs compute and that
differs between them beyond float32 rounding. Run only when a pass failed its check, to name the layer."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

# A tensor counts as moved when it changed by more than this fraction of its largest value (above 1): well
# above float32 rounding of an exact rewrite, well below what a wrong weight does.
MOVED = 1e-3


def _float_tensors(model: onnx.ModelProto) -> list[str]:
    """Float tensors computed by the graph's nodes, in node order (shape inference gives their types)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    return [name for node in model.graph.node for name in node.output
            if name and types.get(name) == TensorProto.FLOAT]


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                for n in names if n not in present)
    return exposed


def _values(model: onnx.ModelProto, names: list[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(_with_outputs(model, names).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    outputs = session.run(names, {session.get_inputs()[0].name: inputs})
    return dict(zip(names, outputs, strict=True))


def _producer(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if name in n.output), None)


def first_moved_tensor(before: onnx.ModelProto, after: onnx.ModelProto, inputs: np.ndarray) -> str | None:
    """A phrase naming the first shared tensor the rewrite moved (with its producer), or None if none did."""
    shared = [n for n in _float_tensors(after) if n in set(_float_tensors(before))]
    if not shared:
        return None
    old, new = _values(before, shared, inputs), _values(after, shared, inputs)
    for name in shared:
        a, b = old[name].astype(np.float64), new[name].astype(np.float64)
        if a.shape != b.shape:
            change, scale = float("inf"), 1.0
        else:
            change = float(np.abs(a - b).max()) if a.size else 0.0
            scale = max(1.0, float(np.abs(a).max()) if a.size else 0.0)
        if not change <= MOVED * scale:
            node = _producer(after, name)
            where = f"{node.op_type} node {node.name!r}" if node is not None else "a graph input"
            return f"first moved at tensor {name!r} ({where}): max abs change {change:.3g} on values up to {scale:.3g}"
    return None
