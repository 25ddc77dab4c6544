"""Pass: MobileViT's unfold/fold as permutations that runtimes run fast.

A MobileViT block cuts its feature map into p x p patches before the transformer and puts it back after:
paddle2onnx writes each as one 6-D Transpose (unfold ``[B,C,nh,p,nw,p] -> [B,p,p,nh,nw,C]``, fold the inverse).
ONNX Runtime's CPU Transpose has no fast kernel for such a permutation (MobileViT_XXS at batch 8: Transposes
19 % of its ORT time, 8.6 % after this pass and the qkv split), and its graph optimiser merges a plain two-step
spelling back into the one 6-D Transpose. The same permutations are written here as steps it keeps and runs
with its blocked copies: unfold = SpaceToDepth + a 3-D Transpose, fold = a Transpose that moves whole rows of
C values + a 3-D Transpose. Pure data movement: the outputs are bit-identical.
"""

from __future__ import annotations

import onnx
from onnx import helper

from export.optimize.graph import GraphView, attr, is_standard, note
from export.optimize.shapes import Shapes, shapes_of

UNFOLD = [0, 3, 5, 2, 4, 1]  # [B, C, nh, ph, nw, pw] -> [B, ph, pw, nh, nw, C]
FOLD = [0, 5, 3, 1, 4, 2]  # [B, ph, pw, nh, nw, C] -> [B, C, nh, ph, nw, pw]


def _dims(shapes: Shapes, name: str) -> list[int] | None:
    """The dims of ``name`` after the batch, when all are the same at every probe batch."""
    rank = shapes.rank(name)
    if rank is None:
        return None
    dims = [shapes.const_dim(name, axis) for axis in range(1, rank)]
    return None if None in dims else dims  # type: ignore[return-value]


def _transpose(g: GraphView, anchor: onnx.NodeProto, data: str, perm: list[int], out: str) -> onnx.NodeProto:
    return helper.make_node("Transpose", [data], [out], name=g.fresh(f"{anchor.name}_transpose"), perm=perm)


def _finish(g: GraphView, node: onnx.NodeProto, steps: list[onnx.NodeProto], flat: str,
            out_dims: list[int]) -> None:
    """Put ``steps`` in place of ``node``; ``flat`` holds its output in another shape of the same order.

    A sole Reshape reader takes ``flat`` directly (a reshape only reads the element order); otherwise one
    Reshape gives ``flat`` the node's own output shape and name.
    """
    reader = g.sole_consumer(node.output[0], g.consumers())
    target = g.const(reader.input[1]) if reader is not None and is_standard(reader, "Reshape") else None
    if target is not None and (attr(reader, "allowzero", 0) or not (target == 0).any()):
        reader.input[0] = flat  # a 0 (copy this dim) would read another input shape: not taken over
    else:
        steps.append(g.reshape_node(node.name, flat, [-1, *out_dims], node.output[0]))
    at = g.nodes.index(node)
    g.nodes[at:at + 1] = steps


def _unfold_steps(g: GraphView, node: onnx.NodeProto, shapes: Shapes) -> bool:
    """Transpose(Reshape(x[B,C,H,W]), UNFOLD) -> SpaceToDepth(x) -> [B*p*p, C, N] -> [B*p*p, N, C]."""
    inner = g.producers().get(node.input[0])
    if inner is None or not is_standard(inner, "Reshape"):
        return False
    x = inner.input[0]
    six, four = _dims(shapes, node.input[0]), _dims(shapes, x)
    if six is None or four is None or len(six) != 5 or len(four) != 3:
        return False
    channels, nh, ph, nw, pw = six
    if ph != pw or four != [channels, nh * ph, nw * pw] or not shapes.same_dim(x, 0, node.input[0], 0):
        return False
    name = node.name or node.output[0]
    s2d, rows, flat = g.fresh(f"{name}_s2d"), g.fresh(f"{name}_rows"), g.fresh(f"{name}_tokens")
    steps = [helper.make_node("SpaceToDepth", [x], [s2d], name=g.fresh(f"{name}_space_to_depth"), blocksize=ph),
             g.reshape_node(node.name, s2d, [-1, channels, nh * nw], rows),
             _transpose(g, node, rows, [0, 2, 1], flat)]
    _finish(g, node, steps, flat, [ph, pw, nh, nw, channels])
    return True


def _fold_steps(g: GraphView, node: onnx.NodeProto, shapes: Shapes) -> bool:
    """Transpose(y[B,p,p,nh,nw,C], FOLD) -> [B,nh,p,nw,p,C] (rows of C) -> [B, H*W, C] -> [B, C, H*W]."""
    six = _dims(shapes, node.input[0])
    if six is None or len(six) != 5:
        return False
    ph, pw, nh, nw, channels = six
    name = node.name or node.output[0]
    rows, pixels, flat = g.fresh(f"{name}_rows"), g.fresh(f"{name}_pixels"), g.fresh(f"{name}_planes")
    steps = [_transpose(g, node, node.input[0], [0, 3, 1, 4, 2, 5], rows),
             g.reshape_node(node.name, rows, [-1, nh * ph * nw * pw, channels], pixels),
             _transpose(g, node, pixels, [0, 2, 1], flat)]
    _finish(g, node, steps, flat, [channels, nh, ph, nw, pw])
    return True


def split_patch_transposes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Write each 6-D unfold/fold Transpose as the cheaper steps above (shapes must be known and static but
    for the batch; an unfold needs square patches for SpaceToDepth)."""
    g = GraphView(model)
    shapes = shapes_of(g)
    for node in [n for n in g.nodes if is_standard(n, "Transpose")]:
        perm = list(attr(node, "perm") or [])
        if node.output[0] in g.pinned or perm not in (UNFOLD, FOLD):
            continue
        done = (_unfold_steps if perm == UNFOLD else _fold_steps)(g, node, shapes)
        if not done:
            note(f"kept {node.name}: its shapes are not known or its patches are not square")
    return g.finish()
