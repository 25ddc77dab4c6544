"""fp16 and int8 (QDQ) versions of a test model, made the way the export stage makes them: onnxruntime's
float16 converter (fp32 inputs and outputs kept) and static QDQ quantization calibrated on seeded inputs.
Each comes with a manifest whose ``precision`` says what the file is."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from core.files import sha256_of
from core.manifest import load_manifest, save_manifest


def copy_manifest(manifest_path: Path, folder: Path, model_file: str, precision: str) -> Path:
    """A manifest for ``folder/model_file``: the source's, with the file, its hash and its precision."""
    source = load_manifest(manifest_path)
    path = folder / model_file
    graph = replace(source.graph, file=model_file, sha256=sha256_of(path), bytes=path.stat().st_size)
    manifest = replace(source, graph=graph, precision=precision,
                       source={"model": source.model, "sha256": source.graph.sha256})
    target = folder / f"{model_file}.json"
    save_manifest(target, manifest)
    return target


def seeded_inputs(shape: tuple[int, ...], count: int = 16, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


def fp16_model(manifest_path: Path, folder: Path) -> Path:
    """The model with fp16 weights and arithmetic (fp32 inputs and outputs); returns its manifest path."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = load_manifest(manifest_path)
    model = onnx.load(str(manifest_path.parent / source.graph.file))
    onnx.save(convert_float_to_float16(model, keep_io_types=True), str(folder / "model-fp16.onnx"))
    return copy_manifest(manifest_path, folder, "model-fp16.onnx", "fp16")


def int8_qdq_model(manifest_path: Path, folder: Path, quantize_bias: bool = True) -> Path:
    """The model quantized to int8 QDQ (per-channel symmetric weights, MinMax activation ranges on seeded
    inputs; biases int32, or float with ``quantize_bias=False``); returns its manifest path."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    source = load_manifest(manifest_path)
    name = source.graph.inputs[0].name
    data = seeded_inputs(tuple(source.input_shape))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: data[i: i + 1]} for i in range(len(data))])

        def get_next(self):
            return next(self.batches, None)

    name_of_file = "model-int8.onnx" if quantize_bias else "model-int8-float-bias.onnx"
    quantize_static(str(manifest_path.parent / source.graph.file), str(folder / name_of_file), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True,
                                                                 "WeightSymmetric": True,
                                                                 "QuantizeBias": quantize_bias})
    return copy_manifest(manifest_path, folder, name_of_file, "int8")
