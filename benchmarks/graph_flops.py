"""GEMM work of an ONNX model and the machine's measured sgemm peak, for ``graph_speedup.py``.

FLOPs = 2 x MACs of MatMul, Gemm, Conv (groups included), ConvTranspose and ONNX Runtime's fused forms, with
shapes from ONNX shape inference at a fixed batch. Elementwise ops, Softmax and normalisation are not counted
(memory-bound and small next to the GEMMs), so "achieved GFLOP/s" is GEMM work per second of the whole model.

The peak is the best of several float32 [n, n] x [n, n] products: numpy's BLAS, and a one-MatMul ONNX model
(constant weight, as the models' Linear layers are) on ONNX Runtime with the thread count the models run with.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GEMM_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "FusedMatMul", "FusedGemm", "FusedConv"}


def fixed_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs' symbolic batch dim is ``batch``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    return fixed


def shapes_at_batch(model: onnx.ModelProto, batch: int) -> dict[str, tuple[int, ...]]:
    """Fully known tensor shapes with the symbolic batch set to ``batch``."""
    fixed = fixed_batch(model, batch)
    del fixed.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    shapes = {}
    for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        if not v.type.tensor_type.HasField("shape"):
            continue  # rank unknown (e.g. a com.microsoft op shape inference does not know): not a scalar
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = tuple(d.dim_value for d in dims)
    shapes.update({t.name: tuple(t.dims) for t in model.graph.initializer})
    return shapes


def _attr(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """MACs of one GEMM-like node, or None when a shape is unknown."""
    op, out = node.op_type, shapes.get(node.output[0])
    first = shapes.get(node.input[0])
    if out is None or first is None:
        return None
    if op in ("MatMul", "FusedMatMul"):
        return int(np.prod(out)) * (first[-2] if op == "FusedMatMul" and _attr(node, "transA", 0) else first[-1])
    if op in ("Gemm", "FusedGemm"):
        return int(np.prod(out)) * (first[0] if _attr(node, "transA", 0) else first[1])
    weight = shapes.get(node.input[1])
    if weight is None:
        return None
    if op in ("Conv", "FusedConv"):
        return int(np.prod(out)) * int(np.prod(weight[1:]))  # weight[1] is already Cin / group
    if op == "ConvTranspose":
        return int(np.prod(first)) * int(np.prod(weight[1:]))  # weight: [Cin, Cout / group, k...]
    return None


def count_macs(model: onnx.ModelProto, batch: int) -> dict:
    """Total MACs at ``batch``, the split by op type, and the GEMM nodes whose shapes were not inferred."""
    shapes = shapes_at_batch(model, batch)
    weights = {t.name for t in model.graph.initializer}
    by_op: dict[str, int] = defaultdict(int)
    unknown = []
    for node in model.graph.node:
        if node.op_type not in GEMM_OPS:
            continue
        macs = node_macs(node, shapes)
        if macs is None:
            unknown.append(node.name)
            continue
        kind = node.op_type
        if kind in ("MatMul", "FusedMatMul") and node.input[1] not in weights:
            kind = "attention MatMul"
        by_op[kind] += macs
    return {"batch": batch, "macs": sum(by_op.values()), "by_op": dict(by_op), "unknown": unknown}


def best_seconds(fn: Callable[[], object], runs: int) -> float:
    """The fastest of ``runs`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_model(n: int) -> onnx.ModelProto:
    """One float32 MatMul: [batch, n] x a constant [n, n]."""
    weight = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "sgemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def sgemm_peak(n: int, threads: int, runs: int) -> dict[str, float]:
    """Peak sgemm GFLOP/s measured now: numpy (its BLAS's own thread count) and ONNX Runtime at ``threads``."""
    import onnxruntime as ort

    flops = 2.0 * n**3
    a = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((n, n)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(matmul_model(n).SerializeToString(), options, providers=["CPUExecutionProvider"])
    return {"numpy": flops / best_seconds(lambda: a @ b, runs) / 1e9,
            "ort_matmul": flops / best_seconds(lambda: session.run(None, {"x": a}), runs) / 1e9}
