"""The int8 recipes' choices, made and recorded (no paddle, tiny graphs): ONNX Runtime's graph form before
quantizing (attention scale folded, MatMul + bias as QGemm) and LayerNormalization kept float; NNCF quantizing a
depthwise convolution per output channel once OpenVINO's constants are folded."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(5)


def _save(path, nodes, inits, x_shape, opset=17):
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    onnx.save(model, str(path))
    return path


def tiny_transformer(path, n: int = 16, c: int = 32, heads: int = 2):
    """LayerNorm -> q, k, v projections (bias) -> scaled attention -> output projection (bias) -> residual."""
    d = c // heads
    w = {f"w{p}": (RNG.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32) for p in "qkvo"}
    b = {f"b{p}": (RNG.standard_normal(c) * 0.1).astype(np.float32) for p in "qvo"}
    inits = {**w, **b, "g": np.ones(c, np.float32), "beta": np.zeros(c, np.float32),
             "heads": np.array([0, 0, heads, d], np.int64), "flat": np.array([0, 0, c], np.int64),
             "scale": np.float32(d ** -0.5)}
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "beta"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "wq"], ["qm"]), helper.make_node("Add", ["qm", "bq"], ["qb"]),
             helper.make_node("Reshape", ["qb", "heads"], ["qr"]),
             helper.make_node("Transpose", ["qr"], ["q"], perm=[0, 2, 1, 3]),
             helper.make_node("Mul", ["q", "scale"], ["qs"]),
             helper.make_node("MatMul", ["ln", "wk"], ["km"]), helper.make_node("Reshape", ["km", "heads"], ["kr"]),
             helper.make_node("Transpose", ["kr"], ["kt"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["qs", "kt"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
             helper.make_node("MatMul", ["ln", "wv"], ["vm"]), helper.make_node("Add", ["vm", "bv"], ["vb"]),
             helper.make_node("Reshape", ["vb", "heads"], ["vr"]),
             helper.make_node("Transpose", ["vr"], ["v"], perm=[0, 2, 1, 3]),
             helper.make_node("MatMul", ["attn", "v"], ["ctx"]),
             helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["ctx_t", "flat"], ["ctx_f"]),
             helper.make_node("MatMul", ["ctx_f", "wo"], ["om"]), helper.make_node("Add", ["om", "bo"], ["ob"]),
             helper.make_node("Add", ["x", "ob"], ["y"])]
    return _save(path, nodes, inits, ["batch", n, c])


def test_ort_int8_forms_the_graph_keeps_layernorm_float_and_records_both(tmp_path):
    from export.quantize.ort_int8 import INT8_FORM, ort_int8

    images = RNG.standard_normal((16, 16, 32)).astype(np.float32)
    out = tmp_path / "int8.onnx"
    described = ort_int8(tiny_transformer(tmp_path / "fp32.onnx"), images, out, keep_head_float=False, threads=1)
    parameters, census = described["parameters"], described["census"]
    form = parameters["graph_form"]
    assert form["passes"] == list(INT8_FORM)
    deltas = {r["pass"]: r["op_delta"] for r in form["reports"]}
    assert deltas["fold_attention_scale"] == {"Mul": -1}  # the scale went into the query weights
    assert deltas["matmul_bias_to_gemm"]["Gemm"] == 3  # q, v and the output projection had biases
    assert all(r["max_abs_change"] <= r["change_limit"] for r in form["reports"])
    assert parameters["op_types_kept_float"] == ["LayerNormalization"]
    assert "LayerNormalization" not in parameters["op_types_to_quantize"]
    assert census["ort_cpu_int8_kernels"].get("QGemm") == 3 and "QLinearMul" not in census["ort_cpu_int8_kernels"]
    assert {"LayerNormalization", "Softmax"} <= set(census["ort_cpu_float_ops"])
    model = onnx.load(str(out))  # the LayerNorm reads its own float weights, not dequantized int8 ones
    producer = {o: n for n in model.graph.node for o in n.output}
    (norm,) = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert all(name not in producer for name in norm.input[1:])


def tiny_depthwise(path, c: int = 8):
    """Depthwise 3x3 -> SiLU -> pointwise 1x1 -> global pool: a MobileNetV2 block's middle."""
    inits = {"dw": (RNG.standard_normal((c, 1, 3, 3)) * 0.3).astype(np.float32),
             "pw": (RNG.standard_normal((c, c, 1, 1)) * 0.3).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "dw"], ["d"], group=c, pads=[1, 1, 1, 1], name="depthwise"),
             helper.make_node("Sigmoid", ["d"], ["s"]), helper.make_node("Mul", ["d", "s"], ["a"]),
             helper.make_node("Conv", ["a", "pw"], ["p"], name="pointwise"),
             helper.make_node("GlobalAveragePool", ["p"], ["y"])]
    return _save(path, nodes, inits, ["batch", c, 8, 8])


def test_nncf_quantizes_a_depthwise_convolution_per_output_channel_after_constants_are_folded(tmp_path):
    """OpenVINO reads a grouped Conv's weights as a Reshape of the constant; NNCF 3.4 then gave the weights one
    scale per channel and kernel column ([C,1,1,1,3]), which OpenVINO's CPU plugin cannot run in int8."""
    import openvino as ov

    from export.quantize.ov_int8 import ov_int8

    images = RNG.standard_normal((32, 8, 8, 8)).astype(np.float32)
    described = ov_int8(tiny_depthwise(tmp_path / "fp32.onnx"), images, None, "dynamic", tmp_path / "int8.xml",
                        keep_head_float=False, threads=1)
    assert described["parameters"]["constant_folding"] == {"before_nncf": True, "group_convolution_weights_folded": 1}
    model = ov.Core().read_model(str(tmp_path / "int8.xml"))
    (conv,) = [op for op in model.get_ops() if op.get_type_name() == "GroupConvolution"]
    dequantize = conv.input_value(1).get_node()  # int8 constant -> Convert [-> Subtract] -> Multiply(scale)
    assert dequantize.get_type_name() == "Multiply"
    (scale,) = [i.get_source_output().get_node() for i in dequantize.inputs()
                if i.get_source_output().get_node().get_type_name() == "Constant"]
    assert list(scale.get_output_shape(0)) == [8, 1, 1, 1, 1]  # one scale per output channel


def tiny_shape_computed(path, c: int = 8):
    """Depthwise conv, then a Reshape whose target is computed from the input's own shape (Shape -> Gather ->
    Concat), as paddle2onnx writes MobileViT's unfold without the graph passes."""
    inits = {"dw": (RNG.standard_normal((c, 1, 3, 3)) * 0.3).astype(np.float32),
             "zero": np.array([0], np.int64), "rest": np.array([c * 4, 16], np.int64),
             "w": (RNG.standard_normal((16, 4)) * 0.3).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "dw"], ["d"], group=c, pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "zero"], ["n"]),
             helper.make_node("Concat", ["n", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["d", "target"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    return _save(path, nodes, inits, ["batch", c, 8, 8])


def test_ov_int8_of_a_dynamic_batch_export_keeps_its_dynamic_batch(tmp_path):
    """Constants are folded while the batch is still dynamic: folded at the calibration batch of 1, the Reshape's
    computed target became a constant with batch 1 and the IR could not take its dynamic batch back."""
    import openvino as ov

    from export.quantize.ov_int8 import ov_int8

    fp32 = tiny_shape_computed(tmp_path / "fp32.onnx")
    images = RNG.standard_normal((32, 8, 8, 8)).astype(np.float32)
    described = ov_int8(fp32, images, None, "dynamic", tmp_path / "int8.xml", keep_head_float=False, threads=1)
    assert described["parameters"]["constant_folding"]["group_convolution_weights_folded"] == 1
    core = ov.Core()
    int8 = core.compile_model(core.read_model(str(tmp_path / "int8.xml")), "CPU")
    reference = core.compile_model(core.read_model(str(fp32)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = images[:3]  # another batch than the calibration's
    got, want = int8(x)[0], reference(x)[0]
    assert got.shape == want.shape == (3, 32, 4)
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
