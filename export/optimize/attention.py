"""Passes on attention blocks: one projection per query, key and value instead of one fused projection cut apart
afterwards (``split_qkv_projection``), then the attention's scale folded into the query's projection
(``fold_attention_scale``).

One projection per part:

MobileViT computes q, k and v with one Linear and cuts its output per head as ``Reshape [B,N,3,h,d] ->
Transpose [2,0,3,1,4] -> Slice/Squeeze (or Gather) x 3``: a 5-D Transpose of the whole projection, which ONNX
Runtime splits into three transposes of its own, plus six slicing ops. Each part is instead computed by its own
MatMul (+ bias) on its weight columns, reshaped to ``[B,N,h,d]`` and transposed to ``[B,h,N,d]``: the same dot
products over the same inputs without the copies (GEMM work unchanged; bit-identical on the zoo models).
Interleaved A/B on MobileViT_XXS at batch 8, after split_patch_transposes: 0.93x on ONNX Runtime (A/A 0.97).
LeViT cuts its projection with one Split per block; one MatMul per part there measured inside the noise
(1.02x ORT, 0.97x OpenVINO), so it is not made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from export.optimize.graph import GraphView, attr, is_standard
from export.optimize.shapes import Shapes, shapes_of

QKV_TRANSPOSE = [2, 0, 3, 1, 4]  # [B, N, parts, h, d] -> [parts, B, h, N, d]


@dataclass
class _Projection:
    """MatMul(x, W) [+ b] -> Reshape [B, N, ..., h, c] whose intermediate tensors only this chain reads."""

    x: str
    weight: np.ndarray
    bias: np.ndarray | None
    nodes: list[onnx.NodeProto]


def _projection(g: GraphView, reshape: onnx.NodeProto, users) -> _Projection | None:
    producers = g.producers()
    node = producers.get(reshape.input[0])
    bias, chain = None, [reshape]
    if node is not None and is_standard(node, "Add") and g.sole_consumer(node.output[0], users) is reshape:
        consts = [g.const(name) for name in node.input]
        if sum(c is not None for c in consts) != 1:
            return None
        position = 0 if consts[0] is not None else 1
        bias, chain = consts[position], [node, *chain]
        node = producers.get(node.input[1 - position])
        if node is None or g.sole_consumer(node.output[0], users) is not chain[0]:
            return None
    if node is None or not is_standard(node, "MatMul") or g.sole_consumer(node.output[0], users) is not chain[0]:
        return None
    weight = g.const(node.input[1])
    if weight is None or weight.ndim != 2 or (bias is not None and bias.shape != (weight.shape[1],)):
        return None
    return _Projection(node.input[0], weight, bias, [node, *chain])


def _part_nodes(g: GraphView, anchor: onnx.NodeProto, proj: _Projection, columns: np.ndarray, heads: int,
                size: int, out: str) -> list[onnx.NodeProto]:
    """MatMul(x, W[:, columns]) [+ b[columns]] -> Reshape [0, 0, heads, size] written to ``out``."""
    name = anchor.name or out
    weight = g.add_init(f"{name}_weight", proj.weight[:, columns])
    product = g.fresh(f"{name}_product")
    nodes = [helper.make_node("MatMul", [proj.x, weight], [product], name=g.fresh(f"{name}_matmul"))]
    if proj.bias is not None:
        biased = g.fresh(f"{name}_biased")
        nodes.append(helper.make_node("Add", [product, g.add_init(f"{name}_bias", proj.bias[columns])], [biased],
                                      name=g.fresh(f"{name}_add")))
        product = biased
    nodes.append(g.reshape_node(name, product, [0, 0, heads, size], out))
    return nodes


def _part_index(g: GraphView, reader: onnx.NodeProto, users) -> tuple[int, onnx.NodeProto] | None:
    """(i, node whose output is part i) for Slice[i:i+1] on axis 0 -> Squeeze(0), or Gather(axis 0, i)."""
    if is_standard(reader, "Gather") and attr(reader, "axis", 0) == 0:
        index = g.const(reader.input[1])
        return (int(index.reshape(())), reader) if index is not None and index.ndim == 0 else None
    if not is_standard(reader, "Slice") or len(reader.input) < 4:
        return None
    values = [g.const(name) for name in reader.input[1:4]]
    values.append(g.const(reader.input[4]) if len(reader.input) > 4 and reader.input[4] else np.ones(1))
    if any(v is None or v.size != 1 for v in values):
        return None
    start, end, axis, step = (int(v.reshape(-1)[0]) for v in values)
    if axis != 0 or step != 1 or end != start + 1:
        return None
    squeeze = g.sole_consumer(reader.output[0], users)
    if squeeze is None or not is_standard(squeeze, "Squeeze"):
        return None
    squeeze_axes = g.const(squeeze.input[1]) if len(squeeze.input) > 1 else np.asarray(attr(squeeze, "axes"))
    if squeeze_axes is None or squeeze_axes.tolist() not in ([0], 0):
        return None
    return start, squeeze


def _split_mobilevit(g: GraphView, transpose: onnx.NodeProto, shapes: Shapes) -> bool:
    users = g.consumers()
    reshape = g.producers().get(transpose.input[0])
    if reshape is None or not is_standard(reshape, "Reshape") or \
            g.sole_consumer(reshape.output[0], users) is not transpose:
        return False
    dims = [shapes.const_dim(reshape.output[0], axis) for axis in range(1, 5)]
    proj = _projection(g, reshape, users)
    if proj is None or None in dims or shapes.rank(reshape.output[0]) != 5:
        return False
    _, parts, heads, size = dims
    readers = users.get(transpose.output[0], [])
    found = [_part_index(g, reader, users) for reader in readers]
    if transpose.output[0] in g.pinned or None in found or sorted(i for i, _ in found) != list(range(parts)) \
            or proj.weight.shape[1] != parts * heads * size:
        return False
    new: list[onnx.NodeProto] = []
    for index, last in found:
        out = last.output[0]
        columns = np.arange(index * heads * size, (index + 1) * heads * size)
        split = g.fresh(f"{out}_heads")
        new += _part_nodes(g, transpose, proj, columns, heads, size, split)
        new.append(helper.make_node("Transpose", [split], [out], name=g.fresh(f"{transpose.name}_part"),
                                    perm=[0, 2, 1, 3]))
    dead = {id(n) for n in (*proj.nodes, transpose, *readers)} | {id(last) for _, last in found}
    at = g.nodes.index(proj.nodes[0])
    g.nodes = [n for n in g.nodes[:at] if id(n) not in dead] + new + \
        [n for n in g.nodes[at:] if id(n) not in dead]
    return True


def split_qkv_projection(model: onnx.ModelProto) -> onnx.ModelProto:
    """Compute q, k and v with one MatMul each instead of cutting one projection (MobileViT's spelling)."""
    g = GraphView(model)
    shapes = shapes_of(g)
    for node in list(g.nodes):
        if is_standard(node, "Transpose") and list(attr(node, "perm") or []) == QKV_TRANSPOSE:
            _split_mobilevit(g, node, shapes)
    return g.finish()


# Pass: the attention's scale folded into the query projection

MOVERS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def _scale_of(g: GraphView, mul: onnx.NodeProto) -> tuple[float, str] | None:
    """(scale, data input) when ``mul`` multiplies a tensor by a one-element constant."""
    values = [g.const(name) for name in mul.input]
    if len(mul.input) != 2 or sum(v is not None for v in values) != 1:
        return None
    position = 0 if values[0] is not None else 1
    if values[position].size != 1 or values[position].dtype != np.float32:
        return None
    return float(values[position].reshape(-1)[0]), mul.input[1 - position]


def _query_projection(g: GraphView, tensor: str, users) -> tuple[onnx.NodeProto, onnx.NodeProto | None] | None:
    """(MatMul with a constant 2-D weight, its bias Add or None) that alone computes ``tensor`` through data
    movers only, every tensor on the way read by the next node alone: scaling the weight scales ``tensor``."""
    producers = g.producers()
    node = producers.get(tensor)
    while node is not None and is_standard(node, *MOVERS) and g.sole_consumer(node.input[0], users) is node:
        node = producers.get(node.input[0])
    bias = None
    if node is not None and is_standard(node, "Add"):
        consts = [g.const(name) for name in node.input]
        if sum(c is not None for c in consts) != 1:
            return None
        bias, data = node, node.input[1 if consts[0] is not None else 0]
        node = producers.get(data)
        if node is None or g.sole_consumer(data, users) is not bias:
            return None
    if node is None or not is_standard(node, "MatMul") or g.const(node.input[0]) is not None:
        return None
    weight = g.const(node.input[1])
    return (node, bias) if weight is not None and weight.ndim == 2 else None


def fold_attention_scale(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Mul(q, s)`` with a constant scalar ``s`` (the attention's 1/sqrt(d)) and ``q`` computed by its own
    projection (``split_qkv_projection``'s) through Reshape/Transpose only: ``s`` goes into the projection's weight
    and bias and the Mul over the whole query tensor is gone. ONNX Runtime (FusedMatMul's alpha) and OpenVINO (its
    fused attention) fold the fp32 Mul themselves; the int8 models keep it as a quantized Mul per block. Exact when
    ``s`` is a power of two (MobileViT_XXS: 1/4), else one float32 rounding of the weights."""
    g = GraphView(model)
    for mul in [n for n in g.nodes if is_standard(n, "Mul")]:
        users = g.consumers()
        found = _scale_of(g, mul)
        if found is None or mul.output[0] in g.pinned:
            continue
        scale, data = found
        projection = _query_projection(g, data, users) if g.sole_consumer(data, users) is mul else None
        if projection is None:
            continue
        matmul, bias = projection
        matmul.input[1] = g.add_init(f"{matmul.name}_scaled_weight", g.const(matmul.input[1]) * np.float32(scale))
        if bias is not None:
            position = 0 if g.const(bias.input[0]) is not None else 1
            bias.input[position] = g.add_init(f"{bias.name}_scaled_bias",
                                              g.const(bias.input[position]) * np.float32(scale))
        g.remove(mul)
        g.replace_uses(mul.output[0], data)
    return g.finish()
