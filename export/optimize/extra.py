"""Opt-in passes: MatMul + bias -> Gemm (standard ONNX) and ONNX Runtime's offline graph (com.microsoft ops, ONNX
Runtime only; onnxruntime is imported when that pass runs).

onnxslim 0.1.98 was tried on these exports: after the portable passes it removes nothing more on LeViT or
MobileViT (opsets 13 and 17), so it is not a pass here and not a dependency."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from export.optimize.graph import GraphView
from export.optimize.shapes import Shapes, is_last_axis_vector, shapes_of

# Pass: MatMul + bias -> Gemm

def _gemm_candidate(g: GraphView, mm: onnx.NodeProto, shapes: Shapes, users) -> tuple | None:
    """(add, bias[N], back target or None for 2-D) when MatMul(x, W) -> Add(b) can become a Gemm."""
    w = g.const(mm.input[1])
    add = g.sole_consumer(mm.output[0], users)
    rank = shapes.rank(mm.input[0])
    if w is None or w.ndim != 2 or add is None or add.op_type != "Add" or rank is None or rank < 2:
        return None
    if g.const(mm.input[0]) is not None or shapes.rank(add.output[0]) != rank:
        return None
    bias_pos = 1 if add.input[0] == mm.output[0] else 0
    bias = g.const(add.input[bias_pos])
    if add.input[1 - bias_pos] != mm.output[0] or not is_last_axis_vector(bias, w.shape[1], 1):
        return None
    if rank == 2:
        return add, np.broadcast_to(bias.reshape(-1), (w.shape[1],)), None
    back = [shapes.const_dim(add.output[0], axis) for axis in range(rank)]
    if back.count(None) > 1:
        return None  # two batch-dependent dims: no constant target can restore the shape
    return add, np.broadcast_to(bias.reshape(-1), (w.shape[1],)), [-1 if d is None else d for d in back]


def matmul_bias_to_gemm(model: onnx.ModelProto) -> onnx.ModelProto:
    """MatMul(x[..., K], W[K, N]) + b[N]  ->  Reshape(x, [-1, K]) -> Gemm(x, W, b) -> Reshape(back).

    ONNX Runtime fuses a bias Add into the GEMM only for 2-D MatMul inputs; LeViT's and MobileViT's
    Linear layers run on 3-D [batch, tokens, C] tensors, so each costs a separate Add pass over its output
    (77 Add nodes in LeViT_128S after BN folding). The Reshapes are views in ORT, and OpenVINO reads either
    spelling as FullyConnected with bias. The way back is a constant target: the dims that do not depend on
    the batch, and -1 for the one that does.
    """
    g = GraphView(model)
    shapes = shapes_of(g)
    users = g.consumers()
    for mm in [n for n in g.nodes if n.op_type == "MatMul" and n.domain in ("", "ai.onnx")]:
        found = _gemm_candidate(g, mm, shapes, users)
        if found is None:
            continue
        add, bias, back = found
        k = g.const(mm.input[1]).shape[0]
        bias_name = g.add_init(f"{add.name}_bias", np.ascontiguousarray(bias, dtype=g.const(mm.input[1]).dtype))
        chain: list[onnx.NodeProto] = []
        x, y = mm.input[0], add.output[0]
        if back is not None:
            x = g.fresh(f"{mm.input[0]}_2d")
            y = g.fresh(f"{add.output[0]}_2d")
            target = g.add_init(f"{mm.name}_to2d", np.asarray([-1, k], dtype=np.int64))
            chain.append(helper.make_node("Reshape", [mm.input[0], target], [x], name=g.fresh(f"{mm.name}_to2d")))
        chain.append(helper.make_node("Gemm", [x, mm.input[1], bias_name], [y], name=g.fresh(f"{mm.name}_gemm")))
        if back is not None:
            target = g.add_init(f"{mm.name}_back", np.asarray(back, dtype=np.int64))
            chain.append(helper.make_node("Reshape", [y, target], [add.output[0]], name=g.fresh(f"{mm.name}_back")))
        anchor = mm
        for node in chain:
            g.insert_after(anchor, node)
            anchor = node
        g.remove(mm)
        g.remove(add)
    return g.finish()



# Pass: ONNX Runtime offline optimisation (runtime-specific)

def ort_offline(model: onnx.ModelProto) -> onnx.ModelProto:
    """Save ONNX Runtime's ORT_ENABLE_EXTENDED graph (com.microsoft fused ops): runs on ORT only.

    EXTENDED, not ALL: the ALL level adds NCHWc layout nodes chosen for this CPU, which ORT documents as
    unsafe to save and reload elsewhere.
    """
    import os
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-offline-") as tmp:
        out = os.path.join(tmp, "model.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = out
        so.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return onnx.load(out)
