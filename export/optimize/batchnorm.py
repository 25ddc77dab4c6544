"""Pass: fold inference BatchNormalization into the Conv, Gemm or MatMul next to it (exact up to float32 rounding).

paddle2onnx writes LeViT's Linear + BatchNorm1D as MatMul -> Reshape[-1, C] -> BatchNormalization ->
Reshape[-1, N, C] (46 times in LeViT_128S); the BN folds into the MatMul weights plus a bias, after which the
Reshape pair is a no-op that ``collapse_reshapes`` removes.

Names keep their meaning: a tensor name of paddle2onnx's (``p2o.pd_op.batch_norm_.3.0``) stands for the value of
that Paddle op's output, which is what ``bench explain --against paddle`` matches Paddle's values by. So the
node that now computes the BN's value writes the BN's output name, and the tensors whose values the fold changed
(a Conv's output before its BN, a MatMul chain's) get new names instead of keeping ones that would lie.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper

from export.optimize.graph import GraphView, attr, note, set_attr
from export.optimize.shapes import RESHAPES, is_last_axis_vector, shapes_of

# Pass: BatchNormalization folding

def _bn_affine(g: GraphView, bn: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """Inference BN as y = x * s + t per channel (float64), or None if it is not a constant inference BN."""
    if len(bn.input) < 5 or attr(bn, "training_mode", 0) or attr(bn, "spatial", 1) == 0:
        return None  # training mode, or opset < 9 per-element statistics
    if any(o for o in list(bn.output)[1:]):
        return None  # running-stat outputs requested: a training-mode graph
    values = [g.const(name) for name in bn.input[1:5]]
    if any(v is None for v in values):
        return None
    scale, bias, mean, var = (np.asarray(v, dtype=np.float64).reshape(-1) for v in values)
    eps = float(attr(bn, "epsilon", 1e-5))
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


def _fold_bn_into_conv(g: GraphView, conv: onnx.NodeProto, bn: onnx.NodeProto, s: np.ndarray, t: np.ndarray) -> bool:
    """Conv(x, W, b) -> BN  ==  Conv(x, W * s[:, None...], b * s + t): channel axis 1 is Conv's output axis."""
    w = g.const(conv.input[1])
    if w is None or w.shape[0] != s.size:
        return False
    b = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(s.size)
    if b is None:
        return False
    w_new = (w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
    b_new = (b.astype(np.float64) * s + t).astype(w.dtype)
    conv.input[1] = g.add_init(conv.input[1], w_new)
    if len(conv.input) > 2:
        conv.input[2] = g.add_init(conv.input[2] or f"{conv.name}_bias", b_new)
    else:
        conv.input.append(g.add_init(f"{conv.name}_bias", b_new))
    return _absorb(g, bn)


def _fold_bn_into_gemm(g: GraphView, gemm: onnx.NodeProto, bn: onnx.NodeProto, s: np.ndarray, t: np.ndarray) -> bool:
    """Gemm -> BN (2-D, channel = column): scale B's columns and fold beta*C*s + t into a new C."""
    b = g.const(gemm.input[1])
    if b is None or b.ndim != 2:
        return False
    trans_b = bool(attr(gemm, "transB", 0))
    n = b.shape[0] if trans_b else b.shape[1]
    if n != s.size:
        return False
    beta = float(attr(gemm, "beta", 1.0))
    c = g.const(gemm.input[2]) if len(gemm.input) > 2 and gemm.input[2] else np.zeros(n)
    if c is None or (c.ndim and c.shape[-1] not in (1, n)) or c.ndim > 2:
        return False
    b_new = b.astype(np.float64) * (s[:, None] if trans_b else s[None, :])
    c_new = (beta * c.astype(np.float64)) * s + t
    gemm.input[1] = g.add_init(gemm.input[1], b_new.astype(b.dtype))
    c_name = g.add_init(f"{gemm.name}_C", np.asarray(c_new, dtype=b.dtype))
    if len(gemm.input) > 2:
        gemm.input[2] = c_name
    else:
        gemm.input.append(c_name)
    set_attr(gemm, "beta", 1.0)
    return _absorb(g, bn)


def _reshape_chain_to_matmul(g: GraphView, bn: onnx.NodeProto, shapes, producers, users):
    """Walk back from BN over Reshape/Flatten (and one bias Add) to a MatMul with a constant 2-D weight.

    Returns (matmul, bias_add or None, the tensors walked over) when BN's channel axis provably is the MatMul's
    output column:
    BN's input must be 2-D [M, N] (channel = last axis), every tensor on the way must have last dim N
    (a row-major reshape that keeps the last dim keeps each element's column), and every intermediate
    tensor must be read by the next node only.
    """
    n = shapes.const_dim(bn.input[0], -1)
    if shapes.rank(bn.input[0]) != 2 or n is None:
        return None
    name, add, walked = bn.input[0], None, []
    while True:
        node = producers.get(name)
        if node is None or g.sole_consumer(name, users) is None:
            return None
        walked.append(name)
        rank = shapes.rank(node.output[0])
        if rank is None or shapes.const_dim(node.output[0], -1) != n:
            return None
        if node.op_type in RESHAPES:
            name = node.input[0]
            continue
        if node.op_type == "Add" and add is None:
            bias_index = next((i for i in (0, 1) if g.const(node.input[i]) is not None), None)
            if bias_index is None:
                return None
            if not is_last_axis_vector(g.const(node.input[bias_index]), n, rank):
                return None
            add, name = node, node.input[1 - bias_index]
            continue
        if node.op_type == "MatMul":
            w = g.const(node.input[1])
            if w is None or w.ndim != 2 or w.shape[1] != n or g.const(node.input[0]) is not None:
                return None
            return node, add, walked
        return None



def _fold_bn_into_matmul(g: GraphView, bn, s, t, shapes, producers, users) -> bool:
    """MatMul(x, W) [-> Add(b)] [-> Reshape/Flatten ...] -> BN  ==  MatMul(x, W*s) -> Add(b*s + t) [-> ...].

    This is LeViT's Linear + BatchNorm1D, which paddle2onnx writes as MatMul -> Reshape[-1, C] -> BN ->
    Reshape[-1, N, C]. The bias Add goes right after the MatMul, where the runtimes fuse it into the GEMM.
    """
    found = _reshape_chain_to_matmul(g, bn, shapes, producers, users)
    if found is None:
        return False
    matmul, add, walked = found
    w = g.const(matmul.input[1])
    matmul.input[1] = g.add_init(matmul.input[1], (w.astype(np.float64) * s[None, :]).astype(w.dtype))
    if add is not None:
        bias_index = 0 if g.const(add.input[0]) is not None else 1
        b = np.broadcast_to(g.const(add.input[bias_index]).reshape(-1), s.shape).astype(np.float64)
        add.input[bias_index] = g.add_init(add.input[bias_index], (b * s + t).astype(w.dtype))
    else:
        out = g.fresh(f"{matmul.output[0]}_bn")
        bias = g.add_init(f"{bn.input[1]}_folded_bias", t.astype(w.dtype))
        add = helper.make_node("Add", [out, bias], [matmul.output[0]], name=g.fresh(f"{bn.name}_bias"))
        matmul.output[0] = out
        g.insert_after(matmul, add)
    for name in walked[1:]:  # now scaled and shifted: not the values their names stand for
        _rename(g, name, g.fresh(f"{name}_folded"))
    return _absorb(g, bn)


def _fold_bn_into_next_matmul(g: GraphView, bn, s, t, shapes, users) -> bool:
    """BN([M, C]) -> MatMul(., W[C, K]) [-> Add(b)]  ==  MatMul(x, s[:, None] * W) -> Add(t @ W + b).

    LeViT's head: mean over tokens -> BatchNorm1D -> Linear. Only a 2-D BN input qualifies (its channel
    axis is then the contracted axis), and every reader of the BN must be such a MatMul.
    """
    readers = users.get(bn.output[0], [])
    if shapes.rank(bn.input[0]) != 2 or not readers or bn.output[0] in g.pinned:
        return False
    for mm in readers:
        w = g.const(mm.input[1])
        if mm.op_type != "MatMul" or mm.input[0] != bn.output[0] or w is None or w.ndim != 2 or w.shape[0] != s.size:
            return False
    for mm in readers:
        w = g.const(mm.input[1]).astype(np.float64)
        dtype = g.const(mm.input[1]).dtype
        after = users.get(mm.output[0], [])
        add = after[0] if len(after) == 1 and after[0].op_type == "Add" and mm.output[0] not in g.pinned else None
        bias_index = None
        if add is not None:
            bias_index = next((i for i in (0, 1) if g.const(add.input[i]) is not None), None)
            b = g.const(add.input[bias_index]) if bias_index is not None else None
            if b is None or not is_last_axis_vector(b, w.shape[1], 2):
                add = None
        mm.input[1] = g.add_init(mm.input[1], (s[:, None] * w).astype(dtype))
        mm.input[0] = bn.input[0]
        shift = t @ w
        if add is not None:
            b = np.broadcast_to(g.const(add.input[bias_index]).reshape(-1).astype(np.float64), shift.shape)
            add.input[bias_index] = g.add_init(add.input[bias_index], (b + shift).astype(dtype))
            _rename(g, mm.output[0], g.fresh(f"{mm.output[0]}_folded"))  # short of its shift now
        else:
            out = g.fresh(f"{mm.output[0]}_bn")
            bias = g.add_init(f"{bn.input[1]}_folded_shift", shift.astype(dtype))
            new_add = helper.make_node("Add", [out, bias], [mm.output[0]], name=g.fresh(f"{bn.name}_shift"))
            mm.output[0] = out
            g.insert_after(mm, new_add)
    g.remove(bn)
    return True


def _rename(g: GraphView, old: str, new: str) -> None:
    """Give the tensor ``old`` (an intermediate, read by the fold's chain only) the name ``new``."""
    for node in g.nodes:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    g.replace_uses(old, new)


def _absorb(g: GraphView, bn: onnx.NodeProto) -> bool:
    """Remove a folded BN; the node before it now writes the BN's output name (the value that name stands for).
    Where that is unsafe (a pinned or shared input), the BN is bypassed instead."""
    data_in, out = bn.input[0], bn.output[0]
    producer = g.producers().get(data_in)
    if (producer is None or data_in in g.pinned or data_in in g.graph_inputs or out in g.subgraph_reads
            or len(g.consumers().get(data_in, [])) != 1):
        return g.bypass(bn, data_in)
    g.remove(bn)
    producer.output[list(producer.output).index(data_in)] = out
    return True


def fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold every inference BatchNormalization into the Conv/Gemm/MatMul before it, or the MatMul after it.

    Exact up to float32 rounding of the new weights (computed in float64): BN is a per-channel affine map,
    and a Conv/Gemm/MatMul output channel is a linear function of its weights. A BN that fits none of the
    shapes stays (and is named in the report's notes). Folding never changes an existing tensor's shape, so
    one shape inference up front serves the whole pass.
    """
    g = GraphView(model)
    shapes = shapes_of(g)
    folded: Counter = Counter()
    for bn in [n for n in g.nodes if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")]:
        affine = _bn_affine(g, bn)
        if affine is None:
            note(f"kept {bn.name}: not a constant inference-mode BatchNormalization")
            continue
        s, t = affine
        kind = _fold_one_bn(g, bn, s, t, shapes)
        if kind:
            folded[kind] += 1
        else:
            note(f"kept {bn.name}: no foldable Conv/Gemm/MatMul next to it")
    note("folded into " + (", ".join(f"{k}: {v}" for k, v in folded.items()) or "nothing"))
    return g.finish()


def _fold_one_bn(g: GraphView, bn: onnx.NodeProto, s: np.ndarray, t: np.ndarray, shapes) -> str | None:
    """Try each fold in turn; the name of the one that applied, else None."""
    producers, users = g.producers(), g.consumers()
    prev = producers.get(bn.input[0])
    if prev is not None and g.sole_consumer(bn.input[0], users) is not None and prev.domain in ("", "ai.onnx"):
        if prev.op_type == "Conv" and _fold_bn_into_conv(g, prev, bn, s, t):
            return "Conv"
        if prev.op_type == "Gemm" and _fold_bn_into_gemm(g, prev, bn, s, t):
            return "Gemm"
    if _fold_bn_into_matmul(g, bn, s, t, shapes, producers, users):
        return "preceding MatMul (across Reshape)"
    if _fold_bn_into_next_matmul(g, bn, s, t, shapes, users):
        return "following MatMul"
    return None

