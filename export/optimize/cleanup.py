"""Passes that remove what computes nothing: Identity, inference Dropout, x+0 / x*1, Reshape and Transpose chains,
and computed Reshape targets that are constants in disguise."""

from __future__ import annotations

import numpy as np
import onnx

from export.optimize.graph import GraphView, attr, note, set_attr
from export.optimize.shapes import RESHAPES, Dims, shapes_of

# Pass: Identity removal

def remove_identity(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop Identity nodes (paddle2onnx writes one per in-place/assign op: 86 in LeViT_128S).

    Runtimes elide most of them, but they split patterns that other passes and runtime fusers match
    (e.g. Add -> Identity -> ReduceMean) and inflate the node count.
    """
    g = GraphView(model)
    for node in [n for n in g.nodes if n.op_type == "Identity" and n.domain in ("", "ai.onnx")]:
        if not g.bypass(node, node.input[0]):
            note(f"kept {node.name}: its output is a graph output it cannot take over")
    return g.finish()


def remove_dropout(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop inference-mode Dropout nodes whose mask output is unused (they compute Identity)."""
    g = GraphView(model)
    users = g.consumers()
    for node in [n for n in g.nodes if n.op_type == "Dropout" and n.domain in ("", "ai.onnx")]:
        mask = node.output[1] if len(node.output) > 1 else ""
        mask_used = bool(mask) and (bool(users.get(mask)) or mask in g.pinned)
        mode = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
        if not mask_used and mode is not None and not mode.any():
            g.bypass(node, node.input[0])
    return g.finish()


# Pass: Reshape / Flatten chains

def _reshape_target(g: GraphView, node: onnx.NodeProto) -> list[int] | None:
    if node.op_type != "Reshape" or len(node.input) < 2:
        return None
    shape = g.const(node.input[1])
    return None if shape is None else [int(v) for v in shape.reshape(-1)]


def _is_noop_reshape(target: list[int], allowzero: bool, in_shapes: list[Dims] | None) -> bool:
    """True if Reshape(x, target) provably returns x's shape (checked in every shape view).

    Every entry must match x's dim (an explicit size equal to x's dim, or 0 = copy when allowzero is off);
    one -1 may stand anywhere, since with all other dims equal it resolves to x's dim there.
    """
    if not in_shapes or target.count(-1) > 1:
        return False
    for in_shape in in_shapes:
        if len(in_shape) != len(target):
            return False
        for want, have in zip(target, in_shape, strict=True):
            if want == -1 or (want == 0 and not allowzero):
                continue
            if have != want:
                return False
    return True


def collapse_reshapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reshape(Reshape|Flatten(x)) -> Reshape(x), and drop Reshapes that return their input's shape.

    A Reshape only reads its input's element count and order, so an inner reshape never matters to an
    outer one (a 0 "copy" entry of the outer one must then mean the same dim of x, which is checked). After
    BN folding, LeViT's Linear is MatMul -> Reshape[-1, C] -> Reshape[-1, N, C], which is the MatMul's own
    shape: both go.
    """
    g = GraphView(model)
    for _ in range(8):  # chains are short; each round removes one level
        changed = False
        shapes = shapes_of(g)
        producers = g.producers()
        for node in list(g.nodes):
            target = _reshape_target(g, node)
            if target is None:
                continue
            allowzero = bool(attr(node, "allowzero", 0))
            inner = producers.get(node.input[0])
            if inner is not None and inner.op_type in RESHAPES and inner.domain in ("", "ai.onnx"):
                copies = [i for i, v in enumerate(target) if v == 0 and not allowzero]
                if all(shapes.same_dim(inner.output[0], i, inner.input[0], i) for i in copies):
                    node.input[0] = inner.input[0]
                    changed = True
            if _is_noop_reshape(target, allowzero, shapes.of(node.input[0])):
                changed |= g.bypass(node, node.input[0])
        if not changed:
            break
        g.prune()  # drop dead inner reshapes before the next round
    return g.finish()



# Pass: Transpose chains

def _perm(node: onnx.NodeProto, rank: int | None) -> list[int] | None:
    perm = attr(node, "perm")
    if perm is not None:
        return list(perm)
    return list(range(rank))[::-1] if rank else None


def merge_transposes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Transpose(Transpose(x, p1), p2) -> Transpose(x, p1[p2]); an identity permutation is dropped."""
    g = GraphView(model)
    shapes = shapes_of(g)
    for _ in range(8):
        changed = False
        producers = g.producers()
        for node in list(g.nodes):
            if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
                continue
            rank = shapes.rank(node.input[0])
            p2 = _perm(node, rank)
            inner = producers.get(node.input[0])
            if p2 is not None and inner is not None and inner.op_type == "Transpose":
                p1 = _perm(inner, len(p2))
                if p1 is not None:
                    set_attr(node, "perm", [p1[i] for i in p2])
                    node.input[0] = inner.input[0]
                    p2, changed = [p1[i] for i in p2], True
            if p2 is not None and p2 == sorted(p2):
                changed |= g.bypass(node, node.input[0])
        if not changed:
            break
        g.prune()
    return g.finish()



# Pass: neutral elementwise ops

_NEUTRAL = {"Add": (0.0, (0, 1)), "Sub": (0.0, (1,)), "Mul": (1.0, (0, 1)), "Div": (1.0, (1,))}


def _broadcasts_into(const: np.ndarray, shapes: list[Dims] | None) -> bool:
    """True if adding/multiplying ``const`` keeps the other operand's shape (it never expands it)."""
    if const.size == 1 and const.ndim == 0:
        return True
    if not shapes:
        return False
    for shape in shapes:
        if const.ndim > len(shape):
            return False
        tail = shape[len(shape) - const.ndim:]
        if any(c != 1 and c != s for c, s in zip(const.shape, tail, strict=True)):
            return False
    return True


def remove_neutral_elementwise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop x + 0, x - 0, x * 1 and x / 1 (constant operand, same dtype, no broadcast that grows x).

    paddle2onnx writes ``scale(q, s, bias=0)`` as Mul -> Add(0.0) before every attention MatMul (11 in
    LeViT_128S, 9 in MobileViT_XXS); the Add(0) hides the Mul from ONNX Runtime's MatMulScaleFusion. The only
    value change is -0.0 + 0.0 = +0.0.
    """
    g = GraphView(model)
    shapes = shapes_of(g)
    for node in list(g.nodes):
        spec = _NEUTRAL.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if spec is None or len(node.input) != 2:
            continue
        neutral, const_positions = spec
        for pos in const_positions:
            const = g.const(node.input[pos])
            data = node.input[1 - pos]
            if const is None or g.const(data) is not None or const.dtype.kind != "f":
                continue
            if np.all(const == neutral) and _broadcasts_into(const, shapes.of(data)):
                if g.bypass(node, data):
                    break
    return g.finish()



# Pass: computed Reshape targets -> constants

def static_reshape_targets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace a Reshape target computed from Shape/Slice/Concat by a constant (0 = copy, -1 = infer).

    paddle2onnx spells ``flatten(start_axis)`` with a dynamic batch as Shape -> Slice -> Concat -> Reshape
    (1 in LeViT, 10 in MobileViT). Each output dim is written as its number when it is the same at every
    probe batch, else 0 when it provably equals the input's dim at that axis, else -1 (at most one). The
    Shape/Slice/Concat chain then dies. Runtimes get a static-rank, constant-target Reshape they can fold.
    """
    g = GraphView(model)
    shapes = shapes_of(g)
    for node in g.nodes:
        if node.op_type != "Reshape" or g.const(node.input[1]) is not None or attr(node, "allowzero", 0):
            continue
        out_rank = shapes.rank(node.output[0])
        if out_rank is None or shapes.rank(node.input[0]) is None:
            continue
        target = []
        for axis in range(out_rank):
            value = shapes.const_dim(node.output[0], axis)
            if value is not None and value != 0:
                target.append(value)
            elif axis < shapes.rank(node.input[0]) and shapes.same_dim(node.output[0], axis, node.input[0], axis):
                target.append(0)
            else:
                target.append(-1)
        if target.count(-1) <= 1:
            node.input[1] = g.add_init(f"{node.name}_shape", np.asarray(target, dtype=np.int64))
    return g.finish()


