"""Tiny models for the explain tests (onnx.helper, no downloads): a conv stem, two residual MLP blocks, a mean
pool and a linear head, with named layers; copies with one layer's weights perturbed; and manifests that follow
the reduced-precision contract (``precision``, ``source.manifest``, ``reduced_precision``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from core.files import sha256_of
from core.manifest import MANIFEST_NAME, ModelFile, TensorSpec, load_manifest, save_manifest

C, H, W, HIDDEN, CLASSES = 4, 8, 8, 32, 10
# Layers that own weights, in topological order: (node name, its weight initializer).
WEIGHTED = [("stem.conv", "stem.conv.weight"), ("stem.bn", "stem.bn.scale"),
            ("blocks.0.fc1", "blocks.0.fc1.weight"), ("blocks.0.fc2", "blocks.0.fc2.weight"),
            ("blocks.1.fc1", "blocks.1.fc1.weight"), ("blocks.1.fc2", "blocks.1.fc2.weight"),
            ("head.fc", "head.fc.weight")]


def tiny_model(seed: int = 0):
    """Conv-BN-ReLU stem, tokens, two residual MLP blocks, mean pool, linear head; dynamic batch, opset 17,
    node and parameter names in the 'blocks.<i>.<layer>' style."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int, scale: float = 0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def positive(name: str):
        return numpy_helper.from_array(rng.uniform(0.5, 1.5, HIDDEN).astype(np.float32), name)

    inits = [init("stem.conv.weight", HIDDEN, C, 3, 3, scale=0.2), positive("stem.bn.scale"),
             init("stem.bn.bias", HIDDEN, scale=0.1), init("stem.bn.mean", HIDDEN, scale=0.1),
             positive("stem.bn.var"), numpy_helper.from_array(np.array([0, HIDDEN, -1], np.int64), "tokens.shape")]
    node = helper.make_node
    nodes = [node("Conv", ["x", "stem.conv.weight"], ["stem.conv.out"], "stem.conv", pads=[1, 1, 1, 1]),
             node("BatchNormalization", ["stem.conv.out", "stem.bn.scale", "stem.bn.bias", "stem.bn.mean",
                                         "stem.bn.var"], ["stem.bn.out"], "stem.bn"),
             node("Relu", ["stem.bn.out"], ["stem.act.out"], "stem.act"),
             node("Reshape", ["stem.act.out", "tokens.shape"], ["tokens.chw"], "tokens.reshape"),
             node("Transpose", ["tokens.chw"], ["tokens.out"], "tokens.transpose", perm=[0, 2, 1])]
    x = "tokens.out"
    for b in range(2):
        p = f"blocks.{b}"
        inits += [init(f"{p}.fc1.weight", HIDDEN, 2 * HIDDEN, scale=0.2),
                  init(f"{p}.fc1.bias", 2 * HIDDEN, scale=0.1), init(f"{p}.fc2.weight", 2 * HIDDEN, HIDDEN, scale=0.2)]
        nodes += [node("MatMul", [x, f"{p}.fc1.weight"], [f"{p}.fc1.out"], f"{p}.fc1"),
                  node("Add", [f"{p}.fc1.out", f"{p}.fc1.bias"], [f"{p}.bias.out"], f"{p}.bias"),
                  node("HardSwish", [f"{p}.bias.out"], [f"{p}.act.out"], f"{p}.act"),
                  node("MatMul", [f"{p}.act.out", f"{p}.fc2.weight"], [f"{p}.fc2.out"], f"{p}.fc2"),
                  node("Add", [x, f"{p}.fc2.out"], [f"{p}.out"], f"{p}.residual")]
        x = f"{p}.out"
    inits += [init("head.fc.weight", HIDDEN, CLASSES), init("head.fc.bias", CLASSES, scale=0.1)]
    nodes += [node("ReduceMean", [x], ["pool.out"], "pool", axes=[1], keepdims=0),
              node("MatMul", ["pool.out", "head.fc.weight"], ["head.fc.out"], "head.fc"),
              node("Add", ["head.fc.out", "head.fc.bias"], ["logits"], "head.bias")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", C, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def perturbed(model, initializer: str, factor: float = 0.3, seed: int = 1):
    """A copy with one initializer changed by ``factor`` of its own RMS, as random noise."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.name == initializer:
            w = numpy_helper.to_array(init)
            noise = np.random.default_rng(seed).standard_normal(w.shape).astype(np.float32)
            w = w + factor * float(np.sqrt((w ** 2).mean())) * noise
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(w.astype(np.float32), initializer))
            return out
    raise KeyError(initializer)


def write_export(folder: Path, model=None, name: str = "Tiny") -> Path:
    """An fp32 'export': model.onnx + a schema-checked manifest (synthetic images: no reference set)."""
    import onnx

    from core.manifest import Manifest

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model if model is not None else tiny_model(), str(path))
    manifest = Manifest(
        model=name, opset_requested=17, opset_written=17, family="test", input_shape=[C, H, W],
        num_classes=CLASSES, weights={"kind": "test", "trained": False},
        graph=ModelFile(file="model.onnx", sha256=sha256_of(path), bytes=path.stat().st_size,
                        inputs=[TensorSpec("x", ["batch", C, H, W])],
                        outputs=[TensorSpec("logits", ["batch", CLASSES])]))
    save_manifest(folder / MANIFEST_NAME, manifest)
    return folder / MANIFEST_NAME


def derived(fp32_manifest: Path, folder: Path, model_file: str, precision: str, fmt: str = "onnx",
            reduced_precision: dict | None = None, batch: int | None = None) -> Path:
    """A manifest for ``folder/model_file`` built from ``fp32_manifest``, as the export stage will write one."""
    source = load_manifest(fp32_manifest)
    path = folder / model_file
    inputs = source.graph.inputs
    if batch is not None:
        inputs = [TensorSpec(t.name, [batch, *t.shape[1:]], t.dtype) for t in inputs]
    graph = replace(source.graph, file=model_file, sha256=sha256_of(path), bytes=path.stat().st_size, format=fmt,
                    inputs=inputs)
    manifest = replace(source, graph=graph, precision=precision, reduced_precision=reduced_precision,
                       batch=batch or source.batch,
                       source={"manifest": str(fp32_manifest.resolve()), "sha256": source.graph.sha256})
    save_manifest(folder / MANIFEST_NAME, manifest)
    return folder / MANIFEST_NAME


def perturbed_export(fp32_manifest: Path, folder: Path, initializer: str) -> Path:
    """A 'candidate' export: the fp32 model with one layer broken, its manifest naming the fp32 source."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(perturbed(onnx.load(str(fp32_manifest.parent / "model.onnx")), initializer), str(folder / "model.onnx"))
    return derived(fp32_manifest, folder, "model.onnx", "fp32")


def with_bad_qdq(model, tensor: str, scale: float):
    """A copy where ``tensor`` is quantised (u8, a coarse ``scale``) for its consumers, named as ORT's
    quantiser names it: a badly ranged activation."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    dq = f"{tensor}_DequantizeLinear_Output"
    for node in out.graph.node:
        for k, name in enumerate(node.input):
            if name == tensor:
                node.input[k] = dq
    out.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{tensor}_scale"),
                                  numpy_helper.from_array(np.array(128, np.uint8), f"{tensor}_zero_point")])
    position = next(i for i, n in enumerate(out.graph.node) if tensor in n.output) + 1
    qdq = [helper.make_node("QuantizeLinear", [tensor, f"{tensor}_scale", f"{tensor}_zero_point"],
                            [f"{tensor}_QuantizeLinear_Output"], f"{tensor}_QuantizeLinear"),
           helper.make_node("DequantizeLinear", [f"{tensor}_QuantizeLinear_Output", f"{tensor}_scale",
                                                 f"{tensor}_zero_point"], [dq], f"{tensor}_DequantizeLinear")]
    for offset, node in enumerate(qdq):
        out.graph.node.insert(position + offset, node)
    onnx.checker.check_model(out)
    return out


def coarsen_scale(model, tensor: str, factor: float):
    """A copy of an ORT-quantised model whose activation ``tensor`` has a ``factor`` times coarser scale."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.name == f"{tensor}_scale":
            value = (numpy_helper.to_array(init) * factor).astype(np.float32)
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, init.name))
            return out
    raise KeyError(f"{tensor}_scale")


def seeded_calibration(folder: Path, count: int = 16, seed: int = 3) -> Path:
    """Seeded inputs of the tiny model's shape, as the .npy calibration set a manifest can name."""
    path = folder / "calibration.npy"
    np.save(path, np.random.default_rng(seed).standard_normal((count, C, H, W)).astype(np.float32))
    return path
