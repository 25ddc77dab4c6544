"""Tensor shapes for the passes: ONNX shape inference at two probe batches, helped by numpy shape arithmetic.

ONNX shape inference cannot resolve a Reshape's -1 against a symbolic batch, so shapes are inferred with the
batch fixed to each of ``PROBE_BATCHES`` and a fact is accepted only if it holds at both; shape arithmetic
(Shape/Slice/Concat/Gather...) is evaluated in numpy where ONNX's data propagation stops (opset 13). Weights
never enter shape inference (they travel as typed inputs).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.optimize.graph import GraphView, attr

# Shape ops whose output is a pure re-indexing of their input in row-major order.
RESHAPES = ("Reshape", "Flatten")

Dims = tuple[int | None, ...]

# Batch sizes at which shapes are evaluated when the batch is symbolic: two, so a dim that depends on the
# batch is never mistaken for a constant. The models here have shapes affine in the batch.
PROBE_BATCHES = (1, 7)


class Shapes:
    """Tensor shapes as concrete dims, evaluated once per probe batch.

    ONNX shape inference cannot resolve a Reshape's -1 against a symbolic batch (LeViT's token count comes out
    as ``unk__0``), so the graph is inferred with the batch fixed to each probe value instead. A fact about a
    dim (e.g. "the last dim is 256", "these two dims are equal") holds only if it holds in every view.
    """

    def __init__(self, views: list[dict[str, Dims]]) -> None:
        self.views = views

    def of(self, name: str) -> list[Dims] | None:
        """The shape in every view, or None when any view lacks it (or has an unknown dim)."""
        found = [view.get(name) for view in self.views]
        if any(shape is None or any(d is None for d in shape) for shape in found):
            return None
        return found  # type: ignore[return-value]

    def rank(self, name: str) -> int | None:
        found = self.of(name)
        return len(found[0]) if found else None

    def const_dim(self, name: str, axis: int) -> int | None:
        """The dim at ``axis`` if it is the same number in every view (independent of the batch)."""
        found = self.of(name)
        if not found or not all(-len(s) <= axis < len(s) for s in found):
            return None
        values = {s[axis] for s in found}
        return values.pop() if len(values) == 1 else None

    def same_dim(self, a: str, axis_a: int, b: str, axis_b: int) -> bool:
        """Dims provably equal: equal in every view."""
        sa, sb = self.of(a), self.of(b)
        if not sa or not sb:
            return False
        try:
            return all(x[axis_a] == y[axis_b] for x, y in zip(sa, sb, strict=True))
        except IndexError:
            return False


def _infer_once(model: onnx.ModelProto) -> dict[str, Dims]:
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    shapes: dict[str, Dims] = {}
    for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    for t in model.graph.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def _infer(model: onnx.ModelProto, rounds: int = 4) -> dict[str, Dims]:
    """Shape inference, helped by evaluating shape arithmetic (Shape -> Slice -> Concat ...) in numpy.

    ONNX's own data propagation misses some of these at lower opsets (LeViT at opset 13: the flatten
    target Shape -> Slice -> Concat stays unknown, and so does every shape after it). Known shape values
    are substituted as initializers into a scratch copy and inference runs again.
    """
    shapes = _infer_once(model)
    known = 0
    for _ in range(rounds):
        values = _shape_values(model, shapes)
        if len(values) == known:
            break
        known = len(values)
        scratch = onnx.ModelProto()
        scratch.CopyFrom(model)
        kept = [n for n in scratch.graph.node if not all(o in values for o in n.output if o)]
        del scratch.graph.node[:]
        scratch.graph.node.extend(kept)
        scratch.graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in values.items())
        shapes.update({k: v for k, v in _infer_once(scratch).items() if None not in v or k not in shapes})
    return shapes


def _shape_values(model: onnx.ModelProto, shapes: dict[str, Dims]) -> dict[str, np.ndarray]:
    """Values of small integer tensors computable from known shapes (Shape, Slice, Concat, Gather, ...)."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
              if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and np.prod(t.dims) <= 16}
    produced: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        try:
            out = _eval_shape_op(node, values, shapes)
        except (ValueError, IndexError, TypeError):
            out = None
        if out is not None:
            values[node.output[0]] = produced[node.output[0]] = out
    return produced


def _eval_shape_op(node: onnx.NodeProto, values: dict[str, np.ndarray], shapes: dict[str, Dims]):
    op, ins = node.op_type, list(node.input)
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    if op == "Shape":
        shape = shapes.get(ins[0])
        if shape is None or None in shape:
            return None
        start, end = attr(node, "start", 0), attr(node, "end", None)
        return np.asarray(shape[start:end], dtype=np.int64)
    if op == "Constant":
        value_attr = next((a for a in node.attribute if a.name == "value"), None)
        value = numpy_helper.to_array(value_attr.t) if value_attr is not None else None
        return value if value is not None and value.dtype.kind == "i" else None
    if not ins or any(name and name not in values for name in ins):
        return None
    args = [values[name] if name else None for name in ins]
    if op == "Slice":
        data, starts, ends = args[0], args[1], args[2]
        axes = args[3] if len(args) > 3 and args[3] is not None else np.arange(len(starts))
        steps = args[4] if len(args) > 4 and args[4] is not None else np.ones(len(starts), dtype=np.int64)
        index = [slice(None)] * data.ndim
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            index[int(a)] = slice(int(s), int(e), int(st))
        return data[tuple(index)]
    if op == "Concat":
        return np.concatenate(args, axis=attr(node, "axis", 0))
    if op == "Gather":
        return np.take(args[0], args[1], axis=attr(node, "axis", 0))
    if op in ("Unsqueeze", "Squeeze"):
        axes = args[1] if len(args) > 1 else attr(node, "axes", None)
        if op == "Unsqueeze":
            out = args[0]
            for axis in sorted(int(a) % (out.ndim + len(axes)) for a in axes):
                out = np.expand_dims(out, axis)
            return out
        return np.squeeze(args[0], axis=None if axes is None else tuple(int(a) for a in axes))
    if op == "Cast" and attr(node, "to", 0) in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return args[0].astype(helper.tensor_dtype_to_np_dtype(attr(node, "to", 0)))
    if op in ("Add", "Sub", "Mul") and all(a.dtype.kind == "i" for a in args):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](args[0], args[1])
    if op == "Div" and all(a.dtype.kind == "i" for a in args) and np.all(args[0] >= 0) and np.all(args[1] > 0):
        return args[0] // args[1]
    return None


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto | None:
    """A copy with every input's symbolic first dim set to ``batch``; None if another dim is symbolic."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                if axis != 0:
                    return None
                dim.Clear()
                dim.dim_value = batch
    del fixed.graph.output[:]
    fixed.graph.output.extend(onnx.ValueInfoProto(name=o.name) for o in model.graph.output)
    return fixed




# Initializers up to this many elements travel into shape inference with their values (shape arithmetic);
# larger ones (weights) only as typed inputs, so inference never serialises hundreds of MB of weights.
_SMALL_INIT = 64


def shapes_of(g: GraphView) -> Shapes:
    """Shapes of the graph as currently edited (shape inference on a weight-free snapshot, per probe batch)."""
    snapshot = onnx.ModelProto()
    for field_name in ("ir_version", "producer_name", "domain", "model_version"):
        setattr(snapshot, field_name, getattr(g.model, field_name))
    snapshot.opset_import.extend(g.model.opset_import)
    snapshot.functions.extend(g.model.functions)
    graph = snapshot.graph
    graph.name = g.graph.name
    graph.input.extend(g.graph.input)
    graph.output.extend(g.graph.output)
    graph.node.extend(g.nodes)
    for name, tensor in g.inits.items():
        if int(np.prod(tensor.dims)) <= _SMALL_INIT:
            graph.initializer.append(tensor)
        elif name not in g.graph_inputs:
            graph.input.append(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
    fixed = [_with_batch(snapshot, b) for b in PROBE_BATCHES]
    if any(f is None for f in fixed):
        return Shapes([_infer(snapshot)])  # other symbolic dims: only fully known shapes count
    return Shapes([_infer(f) for f in fixed])



def is_last_axis_vector(value: np.ndarray | None, n: int, rank: int) -> bool:
    """True if ``value`` broadcasts along the last axis only (scalar, [n], [1, ..., n]) without raising rank."""
    if value is None or value.ndim > rank or value.size not in (1, n):
        return False
    return value.ndim == 0 or value.shape[-1] == value.size
