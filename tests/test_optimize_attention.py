"""fold_attention_scale on small attention graphs (no paddle): the scale goes into the query projection, exactly
when it is a power of two, and nothing is folded where another reader would see the change."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.optimize.attention import fold_attention_scale
from export.optimize.driver import run_passes

RNG = np.random.default_rng(3)
N, C, HEADS = 6, 8, 2


def attention(scale: float | np.ndarray = 0.25, query_read_twice: bool = False) -> onnx.ModelProto:
    """x[B,N,C] -> q = MatMul+bias -> [B,N,h,d] -> [B,h,N,d] -> Mul(scale) -> q k^T -> Softmax (MobileViT's
    spelling after split_qkv_projection)."""
    d = C // HEADS
    inits = {"wq": RNG.standard_normal((C, C)).astype(np.float32), "bq": RNG.standard_normal(C).astype(np.float32),
             "wk": RNG.standard_normal((C, C)).astype(np.float32), "shape": np.array([0, 0, HEADS, d], np.int64),
             "scale": np.asarray(scale, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["qm"], name="q_matmul"),
             helper.make_node("Add", ["qm", "bq"], ["qb"], name="q_bias"),
             helper.make_node("Reshape", ["qb", "shape"], ["qr"]),
             helper.make_node("Transpose", ["qr"], ["q"], perm=[0, 2, 1, 3]),
             helper.make_node("Mul", ["q", "scale"], ["qs"], name="scale_mul"),
             helper.make_node("MatMul", ["x", "wk"], ["km"]),
             helper.make_node("Reshape", ["km", "shape"], ["kr"]),
             helper.make_node("Transpose", ["kr"], ["kt"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["qs", "kt"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["y"], axis=-1)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if query_read_twice:
        outputs.append(helper.make_tensor_value_info("q", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["batch", N, C])],
                              outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inferred = onnx.shape_inference.infer_shapes(model)  # the outputs' inferred types and shapes
    for output, found in zip(model.graph.output, inferred.graph.output, strict=True):
        output.CopyFrom(found)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_a_power_of_two_scale_goes_into_the_query_projection_bit_for_bit():
    model = attention(0.25)
    folded = fold_attention_scale(model)
    assert "Mul" not in [n.op_type for n in folded.graph.node]
    weights = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    q_matmul = next(n for n in folded.graph.node if n.name == "q_matmul")
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(weights[q_matmul.input[1]], original["wq"] * np.float32(0.25))
    x = RNG.standard_normal((3, N, C)).astype(np.float32)
    np.testing.assert_array_equal(run(folded, x), run(model, x))
    onnx.checker.check_model(folded, full_check=True)


def test_another_scale_moves_the_outputs_by_float32_rounding_only_and_the_driver_accepts_it():
    model = attention(1 / np.sqrt(5))
    x = RNG.standard_normal((2, N, C)).astype(np.float32)
    folded, (report,) = run_passes(model, ["fold_attention_scale"], x)
    assert report.changed == {"Mul": -1}
    assert 0 < report.max_abs_change <= report.change_limit
    np.testing.assert_allclose(run(folded, x), run(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", [attention(0.25, query_read_twice=True),  # q is also a graph output
                                   attention(np.full((1, HEADS, 1, 1), 0.25, np.float32))],  # not one value
                         ids=["query-read-elsewhere", "per-head-scale"])
def test_nothing_is_folded_where_the_change_would_show_or_the_scale_is_not_one_value(model):
    folded = fold_attention_scale(model)
    assert [n.op_type for n in folded.graph.node] == [n.op_type for n in model.graph.node]
