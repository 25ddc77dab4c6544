"""Where ONNX Runtime's CUDA provider runs the Q/DQ nodes of a static-QDQ int8 model, and why.

Builds a small Conv(+bias)+MatMul model, quantizes it with ``quantize_static`` (QDQ: per-tensor and per-channel
weights, biases quantized to int32 as by default or kept float with ``QuantizeBias=False``), and runs each on the
CUDA provider at every graph optimisation level with profiling on; prints, per node that ran on the CPU, its op,
its name and its input types, and ORT's own placement log lines. No files needed, no network.

    python benchmarks/ort_cuda_qdq_placement.py     # on a machine with an NVIDIA GPU and onnxruntime-gpu
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def float_model(path: Path) -> None:
    rng = np.random.default_rng(0)
    conv_w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "conv_w")
    mat_w = numpy_helper.from_array(rng.standard_normal((8 * 16 * 16, 64)).astype(np.float32), "mat_w")
    conv_b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "conv_b")
    shape = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat")
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "flat"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "mat_w"], ["y"], name="matmul")]
    graph = helper.make_graph(nodes, "qdq_probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
                              [conv_w, conv_b, mat_w, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def quantized(source: Path, out: Path, per_channel: bool, quantize_bias: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    data = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": data[i: i + 1]} for i in range(len(data))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"QuantizeBias": quantize_bias})


def cpu_nodes(model: Path, level, folder: Path, disabled: tuple[str, ...] = ()) -> list[str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / f"profile-{model.stem}-{int(level)}")
    options.optimized_model_filepath = str(folder / f"{model.stem}-{int(level)}-optimized.onnx")
    session = ort.InferenceSession(str(model), options, providers=["CUDAExecutionProvider"],
                                   disabled_optimizers=list(disabled) or None)
    session.run(None, {"x": np.zeros((2, 3, 16, 16), np.float32)})
    events = json.loads(Path(session.end_profiling()).read_text())
    found = []
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and \
                args.get("provider") == "CPUExecutionProvider":
            types = [next(iter(t)) + str(next(iter(t.values()))) for t in args.get("input_type_shape", [])]
            found.append(f"{args.get('op_name')} {event['name'][:-len('_kernel_time')]} inputs {types}")
    return found


def without_cpu_fallback(model: Path) -> str:
    """Session creation with CPU fallback disabled: ORT names a node the CUDA provider has no kernel for."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        ort.InferenceSession(str(model), options, providers=["CUDAExecutionProvider"])
    except Exception as exc:  # the message is the finding
        return f"refused: {str(exc).splitlines()[0][:400]}"
    return "created (every node has a CUDA kernel)"


def main() -> int:
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__} ({ort.get_device()}), providers {ort.get_available_providers()}")
    levels = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        float_model(folder / "float.onnx")
        for per_channel, quantize_bias in ((False, True), (True, True), (True, False)):
            weights = "per-channel" if per_channel else "per-tensor"
            model = folder / f"qdq-{weights}-{'int32-bias' if quantize_bias else 'float-bias'}.onnx"
            quantized(folder / "float.onnx", model, per_channel, quantize_bias)
            for level in levels:
                # INFO for the last level: ORT logs each node it forces onto the CPU and why
                ort.set_default_logger_severity(1 if level == levels[-1] else 3)
                nodes = cpu_nodes(model, level, folder)
                print(f"{model.stem:32} {level.name:18} nodes on CPU: {len(nodes)}")
                for line in nodes:
                    print(f"    {line}")
            ort.set_default_logger_severity(3)
            if not quantize_bias:  # what the ort adapter does for int8 on CUDA
                nodes = cpu_nodes(model, levels[-1], folder, ("WeightBiasQuantization",))
                print(f"{model.stem:32} {levels[-1].name:18} WeightBiasQuantization disabled: nodes on CPU: "
                      f"{len(nodes)}")
                for line in nodes:
                    print(f"    {line}")
            print(f"{model.stem:32} without CPU fallback: {without_cpu_fallback(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
