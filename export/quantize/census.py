"""What a reduced-precision build changed, counted: for the manifest's ``reduced_precision.census``.

- OpenVINO IR (NNCF): FakeQuantize count, int8 weight constants, the layers that read a quantized tensor or an
  int8 weight (by op type and name); after compiling, how many layers the CPU plugin *runs* in int8
  (``runtimePrecision``: it keeps a quantized layer f32 when it has no int8 kernel, e.g. depthwise convolutions
  on AVX2).
- ONNX QDQ: Quantize/DequantizeLinear counts, op types wrapped in DQ -> op -> Q (what ORT turns into int8
  kernels); and the graph ORT actually runs on the CPU after its fusions (QLinearConv, QLinearMatMul, ...).
- fp16 ONNX: Casts from the conversion, fp16 initializers, and the Casts ORT's CPU provider adds on top.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

INT8_TYPES = frozenset({"i8", "u8"})
QUANTIZE_OPS = ("FakeQuantize", "FakeConvert")
# NNCF's weight decompression chain (int8 Constant -> Convert -> Subtract -> Multiply [-> Reshape]).
DECOMPRESSION = frozenset({"Convert", "Subtract", "Multiply", "Reshape", "Transpose"})
# Ops that only move data; reading a quantized tensor does not make them quantized layers.
MOVERS = frozenset({"Reshape", "Transpose", "ShapeOf", "Squeeze", "Unsqueeze", "VariadicSplit", "Split", "Concat",
                    "StridedSlice", "Slice", "Gather", "Broadcast"})
# Runtime layers that only hold or move data; their precision says nothing about the arithmetic.
RUNTIME_DATA_LAYERS = frozenset({"Input", "Output", "Parameter", "Result", "Const", "Constant", "Reorder",
                                 "Convert", "Reshape", "Transpose", "Concatenation", "Split", "Gather",
                                 "StridedSlice", "ShapeOf"})
# Runtime layers holding the multiply-accumulate work: their int8 share is the figure that decides speed.
HEAVY_LAYERS = frozenset({"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"})


def _int8_weight(node, depth: int = 5) -> bool:
    """An int8 Constant, a constant-only decompression chain from one, or a FakeQuantize on a constant."""
    kind = node.get_type_name()
    if kind == "Constant":
        return node.get_element_type().get_type_name() in INT8_TYPES
    if depth == 0:
        return False
    if kind in QUANTIZE_OPS:
        return node.input_value(0).get_node().get_type_name() == "Constant"
    if kind in DECOMPRESSION:
        return any(_int8_weight(i.get_source_output().get_node(), depth - 1) for i in node.inputs())
    return False


def _constant_chain(node, depth: int = 5) -> bool:
    if node.get_type_name() == "Constant":
        return True
    return depth > 0 and node.get_type_name() in DECOMPRESSION | set(QUANTIZE_OPS) and all(
        _constant_chain(i.get_source_output().get_node(), depth - 1) for i in node.inputs())


def quantized_layers(model) -> list:
    """Ops reading a FakeQuantize output or an int8 weight (data movers excluded)."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in QUANTIZE_OPS or op.get_type_name() in MOVERS or _constant_chain(op):
            continue
        sources = [i.get_source_output().get_node() for i in op.inputs()]
        if any(s.get_type_name() in QUANTIZE_OPS or _int8_weight(s) for s in sources):
            found.append(op)
    return found


def ov_census(model) -> dict[str, Any]:
    """What NNCF inserted into an ``ov.Model``."""
    types = Counter(op.get_type_name() for op in model.get_ops())
    int8_weights = sum(1 for op in model.get_ops() if op.get_type_name() == "Constant"
                       and op.get_element_type().get_type_name() in INT8_TYPES)
    layers = quantized_layers(model)
    return {
        "fake_quantize": types.get("FakeQuantize", 0),
        "fake_convert": types.get("FakeConvert", 0),
        "int8_weight_constants": int8_weights,
        "quantized_op_types": dict(Counter(op.get_type_name() for op in layers)),
        "quantized_layers": sorted(op.get_friendly_name() for op in layers),
    }


def ov_runtime_precisions(compiled) -> dict[str, Any]:
    """Per-layer precision the compiled model runs (rt_info ``runtimePrecision``), by runtime layer type."""
    by_type: dict[str, Counter] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in RUNTIME_DATA_LAYERS:
            continue
        by_type.setdefault(layer, Counter())[info["runtimePrecision"].astype(str)] += 1
    total = sum(sum(c.values()) for c in by_type.values())
    int8 = sum(n for c in by_type.values() for p, n in c.items() if p in INT8_TYPES)
    heavy = sum(sum(c.values()) for k, c in by_type.items() if k in HEAVY_LAYERS)
    heavy8 = sum(n for k, c in by_type.items() if k in HEAVY_LAYERS for p, n in c.items() if p in INT8_TYPES)
    return {"compute_layers": total, "int8_layers": int8, "matmul_conv_layers": heavy, "matmul_conv_int8": heavy8,
            "by_layer_type": {k: dict(v) for k, v in sorted(by_type.items())}}


def onnx_qdq_census(model) -> dict[str, Any]:
    """Q/DQ counts; op types reading a DequantizeLinear output, and those also writing into a QuantizeLinear."""
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    types = Counter(node.op_type for node in model.graph.node)
    dq_fed: Counter = Counter()
    wrapped: Counter = Counter()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if not any(i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input if i):
            continue
        dq_fed[node.op_type] += 1
        if any(c.op_type == "QuantizeLinear" for o in node.output for c in consumers.get(o, [])):
            wrapped[node.op_type] += 1
    return {"quantize_linear": types.get("QuantizeLinear", 0), "dequantize_linear": types.get("DequantizeLinear", 0),
            "qdq_wrapped_op_types": dict(sorted(wrapped.items())), "dq_fed_op_types": dict(sorted(dq_fed.items()))}


def ort_cpu_graph(model_path: Path, threads: int) -> dict[str, int]:
    """Op types of the graph ONNX Runtime's CPU provider runs after its fusions (ORT_ENABLE_EXTENDED, saved)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-optimized-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return dict(sorted(Counter(node.op_type for node in optimized.graph.node).items()))


# ONNX Runtime CPU ops that compute in int8 (MatMulIntegerToFloat included: int8 products, float out), and ops
# that only move or reshape data in either precision.
INT8_KERNEL_PREFIXES = ("QLinear", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantize", "QAttention",
                        "QEmbedLayerNormalization")
DATA_MOVERS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "SpaceToDepth", "DepthToSpace",
                         "Concat", "Split", "Slice", "Gather", "Identity", "MaxPool"})


def int8_kernels(ort_graph: dict[str, int]) -> dict[str, int]:
    """The int8 kernels among the ops ORT runs (QLinear*, QGemm, MatMulInteger*, DynamicQuantize*)."""
    return {op: n for op, n in ort_graph.items() if op.startswith(INT8_KERNEL_PREFIXES)}


def float_ops(ort_graph: dict[str, int]) -> dict[str, int]:
    """The ops of an int8 model that ORT's CPU provider runs in float, Quantize/DequantizeLinear included: its
    float islands (what stayed float by choice, the kept-float head, or for want of an int8 kernel)."""
    return {op: n for op, n in ort_graph.items() if not op.startswith(INT8_KERNEL_PREFIXES) and op not in DATA_MOVERS}


def fp16_census(model) -> dict[str, Any]:
    """Casts and fp16 initializers of a converted model."""
    import onnx

    types = Counter(node.op_type for node in model.graph.node)
    fp16 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    return {"cast_nodes": types.get("Cast", 0), "fp16_initializers": fp16, "nodes": sum(types.values())}


def op_census(model) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))
