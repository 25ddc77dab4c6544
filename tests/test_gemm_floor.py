"""benchmarks/gemm_floor.py: the GEMM skeleton whose time bounds what an exact graph rewrite can reach."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from conftest import load_benchmark
from onnx import TensorProto, helper, numpy_helper


def tiny_model() -> onnx.ModelProto:
    """Conv -> BN -> Relu -> Conv (a chain), Flatten (a break), MatMul -> +bias -> HardSwish -> MatMul (a chain),
    a residual Add (a break) -> MatMul -> *scale -> Softmax (a chain)."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [init("c1", 4, 3, 3, 3), init("c2", 2, 4, 3, 3), init("scale", 4), init("shift", 4), init("mean", 4),
             numpy_helper.from_array(np.ones(4, np.float32), "var"), init("w1", 8, 5), init("b1", 5),
             init("w2", 5, 8), init("w3", 8, 6), numpy_helper.from_array(np.float32(0.25), "alpha")]
    nodes = [
        helper.make_node("Conv", ["x", "c1"], ["a1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["a1", "scale", "shift", "mean", "var"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["a3"]),
        helper.make_node("Conv", ["a3", "c2"], ["a4"], strides=[2, 2], name="conv2"),
        helper.make_node("Flatten", ["a4"], ["f"]),
        helper.make_node("MatMul", ["f", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["m2"]),
        helper.make_node("HardSwish", ["m2"], ["m3"]),
        helper.make_node("MatMul", ["m3", "w2"], ["m4"], name="fc2"),
        helper.make_node("Add", ["f", "m4"], ["r"]),  # residual: two activations
        helper.make_node("MatMul", ["r", "w3"], ["m5"], name="fc3"),
        helper.make_node("Mul", ["m5", "alpha"], ["m6"]),
        helper.make_node("Softmax", ["m6"], ["y"], name="softmax"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 6, 6])
    graph = helper.make_graph(nodes, "tiny", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_skeleton_keeps_the_gemms_and_softmax_and_their_chains():
    floor = load_benchmark("gemm_floor")
    skeleton, inputs = floor.gemm_skeleton(tiny_model(), batch=2)
    by_name = {node.name: node for node in skeleton.graph.node}
    assert Counter(n.op_type for n in skeleton.graph.node) == {"Conv": 2, "MatMul": 3, "Softmax": 1}
    assert by_name["conv2"].input[0] == "a1"  # through BN and Relu: the convolutions stay a chain
    assert by_name["fc2"].input[0] == "m1"  # through the bias Add and HardSwish
    assert by_name["softmax"].input[0] == "m5"  # through the constant scale
    # after the Flatten and the residual Add the chain breaks: those tensors are fed, at the batch asked
    assert inputs == {"x": (2, 3, 6, 6), "f": (2, 8), "r": (2, 8)}
    assert by_name["fc1"].input[0] == "f" and by_name["fc3"].input[0] == "r"
    # what no kept node reads is an output, so nothing is pruned; weights ride along, BN's do not
    assert [o.name for o in skeleton.graph.output] == ["a4", "m4", "y"]
    assert {t.name for t in skeleton.graph.initializer} == {"c1", "c2", "w1", "w2", "w3"}


def test_the_skeleton_runs_on_onnx_runtime_with_its_outputs_bound_once():
    floor = load_benchmark("gemm_floor")
    skeleton, inputs = floor.gemm_skeleton(tiny_model(), batch=2)
    rng = np.random.default_rng(1)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in inputs.items()}
    bound = floor.OrtModel(skeleton, feeds, threads=1)
    bound.buffers[2][...] = np.nan
    bound.run()  # writes into the buffers bound at load
    expected = bound.session.run(None, feeds)
    for got, want in zip(bound.buffers, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.allclose(bound.buffers[2].sum(axis=1), 1.0)  # the Softmax ran on the chain's MatMul


def test_openvino_layers_sort_into_kept_work_and_the_rest():
    floor = load_benchmark("gemm_floor")
    assert floor.ov_kind("FullyConnected", set()) == "projection"
    assert floor.ov_kind("GroupConvolution", set()) == "convolution"
    assert floor.ov_kind("Subgraph", {"Transpose", "MatMul", "Softmax", "Add"}) == "attention"  # a fused attention
    assert floor.ov_kind("Subgraph", {"Mul", "HardSwish"}) == "other"  # a fused element-wise chain
    assert floor.ov_kind("Reorder", set()) == "other"
