"""benchmarks/graph_flops.py: the GEMM work the graph-speed benchmark divides by, counted from the graph."""

from __future__ import annotations

import numpy as np
from conftest import load_benchmark
from onnx import TensorProto, helper, numpy_helper


def model_with(nodes, extra_inits=()):
    inits = [numpy_helper.from_array(np.ones((3, 4, 3, 3), np.float32), "conv_w"),
             numpy_helper.from_array(np.ones((3 * 5 * 5, 10), np.float32), "fc_w"), *extra_inits]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("MatMul", ["f", "fc_w"], ["y"]), helper.make_node("Identity", ["y"], ["out"]), *nodes],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 5, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def test_macs_of_conv_and_matmul_at_a_batch():
    flops = load_benchmark("graph_flops")
    count = flops.count_macs(model_with([]), batch=2)
    conv = 2 * 3 * 5 * 5 * (4 * 3 * 3)  # output elements x (Cin/group x k x k)
    matmul = 2 * 10 * 75
    assert count["by_op"] == {"Conv": conv, "MatMul": matmul} and count["macs"] == conv + matmul
    assert count["unknown"] == []


def test_a_tensor_of_unknown_shape_is_listed_not_read_as_a_scalar():
    """Behind a com.microsoft op (the ort level) shape inference knows the element type but no shape: the GEMM
    reading it is named as uncounted (it was read as a scalar, and the benchmark crashed on it)."""
    flops = load_benchmark("graph_flops")
    nodes = [helper.make_node("Shape", ["y"], ["s"]),
             helper.make_node("Unknown", ["s"], ["s2"], domain="com.microsoft"),  # a target shape ONNX cannot see
             helper.make_node("Reshape", ["y", "s2"], ["a"]),  # so: type float, no shape (not even a rank)
             helper.make_node("MatMul", ["a", "w2"], ["z"], name="after_reshape")]
    count = flops.count_macs(model_with(nodes, [numpy_helper.from_array(np.ones((10, 2), np.float32), "w2")]), 2)
    assert count["unknown"] == ["after_reshape"] and count["by_op"]["MatMul"] == 2 * 10 * 75
