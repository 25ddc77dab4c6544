"""OpenVINO captures (CPU): an ONNX file or an IR, NNCF-quantised IR included, with the precision hint the
benchmark uses, and name matching for OpenVINO's tensor and friendly names."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.explain.capture import Captured, NameMap
from bench.explain.graph import GraphIndex
from runtimes.base import RuntimeOptions
from runtimes.ov import op_precisions
from runtimes.ov_compile import compile_config

_FLOAT_TYPES = {"f32", "f16", "bf16", "f64"}


def cpu_config(precision: str, threads: int) -> dict:
    """What the ov adapter compiles a model with on the CPU at ``precision`` (``runtimes.ov_compile``)."""
    return compile_config("CPU", RuntimeOptions(precision=precision, threads=threads))


def map_ov_names(model: Any, reference: GraphIndex) -> tuple[list[tuple[Any, str, bool]], NameMap]:
    """Match an OpenVINO model's op outputs to reference tensors; returns ([(port, reference name, is_q)], map).

    OpenVINO's ONNX frontend names every op output tensor after the ONNX tensor and every op after the ONNX
    node (friendly name); ``save_model`` keeps both in the IR. NNCF keeps them and adds FakeQuantize ops: an
    activation quantiser is '<producer>/fq_output_<port>' with an *unnamed* output tensor; int8 weights are
    Constant(i8) -> Convert -> Multiply '<consumer>/fq_weights_<port>'. The match is by tensor name, and a
    FakeQuantize is matched structurally to the tensor it reads (so POT- or hand-made ones match too).
    """
    nmap = NameMap()
    picks: list[tuple[Any, str, bool]] = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in ("Parameter", "Constant", "Result"):
            continue
        for port in op.outputs():
            if port.get_element_type().get_type_name() not in _FLOAT_TYPES:
                continue
            is_q = kind == "FakeQuantize"
            tensor = op.input(0).get_source_output() if is_q else port
            hits = tensor.get_names() & reference.tensors.keys()
            if hits:
                # Several names on one tensor (the frontend merges an Identity's output into its input): the
                # topologically last is the one downstream layers read.
                picks.append((port, max(hits, key=lambda h: reference.tensors[h].order), is_q))
    for _, name, is_q in picks:
        (nmap.quantized if is_q else nmap.values)[f"q:{name}" if is_q else name] = name
    # Keyed by friendly name: Python wrappers of one node are not guaranteed to be the same object.
    quantized_ports = {(p.get_node().get_friendly_name(), p.get_index()): name for p, name, is_q in picks if is_q}
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("FakeQuantize", "Constant", "Result"):
            continue
        for port in op.inputs():
            source = port.get_source_output()
            name = quantized_ports.get((source.get_node().get_friendly_name(), source.get_index()))
            if name is not None:
                nmap.reads_quantized.add((op.get_friendly_name(), name))
    return picks, nmap


def _reshape(model: Any, batch: int) -> None:
    rest = [dim.get_length() for dim in list(model.inputs[0].get_partial_shape())[1:]]
    model.reshape({model.inputs[0].get_any_name(): [batch, *rest]})


def _batch_of(model: Any) -> int:
    return model.inputs[0].get_partial_shape()[0].get_length()


class OvCapture:
    """OpenVINO CPU with every matched op output added as a model output.

    A dynamic batch is reshaped to ``batch`` (the deployed batch, as the benchmark does); a static one is kept
    and short batches are padded. The instrumented model is reshaped to ``chunk`` images when it can be
    (hundreds of outputs: small chunks are faster and need less memory); the deployed run and the search keep
    the deployed batch, because numerics can depend on an image's batch position (the LeViT int8 fault does).
    A FakeQuantize output has no tensor name, so one ('q:<reference name>') is given to it.
    """

    def __init__(self, path: Path, reference: GraphIndex, *, label: str = "ov", precision: str = "fp32",
                 batch: int = 8, chunk: int = 2, threads: int = 1, select: Iterable[str] | None = None) -> None:
        import openvino as ov

        self.label, self.precision, self.threads = label, precision, threads
        self.core = ov.Core()
        self.plain = self.core.read_model(str(path))  # never instrumented: deployed() and probe() use it
        if not self.plain.inputs[0].get_partial_shape()[0].is_static:
            _reshape(self.plain, batch)
        self._deploy_batch = _batch_of(self.plain)
        self.model = self.plain.clone()
        try:
            _reshape(self.model, chunk)
        except RuntimeError:  # e.g. Reshape constants that pin the batch
            self.model = self.plain.clone()
        self.batch = _batch_of(self.model)
        self.config = cpu_config(precision, threads)
        self._reference = reference
        self._plain_ports = {n: p for p, n, is_q in map_ov_names(self.plain, reference)[0] if not is_q}
        picks, self.names = map_ov_names(self.model, reference)
        if select is not None:  # expose only these float outputs; quantised views are always exposed
            wanted = set(select)
            picks = [p for p in picks if p[2] or p[1] in wanted]
            self.names.values = {c: r for c, r in self.names.values.items() if r in wanted}
        self._keys: list[tuple[str, str, bool]] = []
        for port, name, is_q in picks:
            key = f"q:{name}" if is_q else name
            if is_q:
                port.get_tensor().add_names({key})
            self._keys.append((key, name, is_q))
        self.model.add_outputs([port for port, _, _ in picks])
        self._logit_key = self.model.outputs[0].get_any_name()
        self.compiled = self.core.compile_model(self.model, "CPU", self.config)
        self._request = self.compiled.create_infer_request()
        self._deployed: Any = None

    def _infer(self, compiled: Any, batch: np.ndarray, model_batch: int, request: Any = None
               ) -> dict[str, np.ndarray]:
        """Outputs by every tensor name, padded images cut off again (axis 0, or a merged batch axis).

        With ``request`` the arrays are views of its output tensors (share_outputs), valid until its next
        infer: copying the activations of a whole model costs more than the inference itself.
        """
        n = len(batch)
        if n > model_batch:
            raise ValueError(f"OpenVINO model compiled for batch {model_batch}, got {n} images")
        if n < model_batch:
            batch = np.concatenate([batch, np.repeat(batch[:1], model_batch - n, axis=0)])
        feed = {0: np.ascontiguousarray(batch)}
        result = (request.infer(feed, share_outputs=True) if request is not None
                  else compiled.create_infer_request().infer(feed))
        arrays = {}
        for port, value in result.items():
            if n < model_batch and value.ndim and value.shape[0] % model_batch == 0:
                value = value[: value.shape[0] // model_batch * n]
            for name in port.get_names():
                arrays[name] = value
        return arrays

    def run(self, batch: np.ndarray) -> Captured:
        """Arrays are views valid until the next run() (see _infer)."""
        arrays = self._infer(self.compiled, batch, self.batch, self._request)
        values, quantized = {}, {}
        for key, name, is_q in self._keys:
            if key in arrays:
                (quantized if is_q else values)[name] = arrays[key]
        return Captured(values, quantized, arrays[self._logit_key].copy())  # logits outlive the request

    def _deployed_compiled(self) -> Any:
        if self._deployed is None:
            self._deployed = self.core.compile_model(self.plain, "CPU", self.config)
        return self._deployed

    def deployed(self, images: np.ndarray) -> np.ndarray:
        b = self._deploy_batch
        return np.concatenate([self._infer(self._deployed_compiled(), images[s:s + b], b)[self._logit_key]
                               for s in range(0, len(images), b)])

    def deploy_batch(self) -> int | None:
        return self._deploy_batch

    def values(self, names: Sequence[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError("the reference is ORT; OpenVINO serves as a candidate only")

    def probeable(self) -> set[str]:
        return set(self._plain_ports)

    def probe(self, names: Sequence[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        import openvino as ov

        cut = ov.Model([self._plain_ports[n] for n in names], self.plain.get_parameters(), "probe")
        arrays = self._infer(self.core.compile_model(cut, "CPU", self.config), batch, self._deploy_batch)
        return {n: arrays[n] for n in names}

    def replay(self, start: str, value: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """``names`` computed from tensor ``start`` = ``value`` by the part of the model between them.

        Compiles only that part (a head: a fraction of a second against seconds for a cut model), with every
        fusion inside it as deployed. Raises if the part reads anything but ``start``.
        """
        import openvino as ov

        model = self.plain.clone()
        ports = {n: p for p, n, is_q in map_ov_names(model, self._reference)[0] if not is_q}
        source = ports[start]
        param = ov.opset13.parameter(list(value.shape), source.get_element_type(), name="replay_input")
        for target in list(source.get_target_inputs()):
            target.replace_source_output(param.output(0))
        part = ov.Model([ports[n] for n in names], [param], "replay")  # raises on other parameters
        result = self.core.compile_model(part, "CPU", self.config).create_infer_request().infer(
            {0: np.ascontiguousarray(value)})
        arrays = {name: v for port, v in result.items() for name in port.get_names()}
        return {n: arrays[n] for n in names}

    def runtime_layer(self, node: str) -> dict[str, Any] | None:
        """The compiled layer whose 'originalLayersNames' holds ``node``: what it was fused into."""
        layers = []
        for op in self._deployed_compiled().get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layers.append((op, info, info["originalLayersNames"].astype(str).split(",")))
        # Exact name first; else an op derived from it ('<node>/fq_output_0': a decomposed BatchNorm's
        # Multiply keeps no name, but the FakeQuantize after it does).
        for test in (lambda o: o == node, lambda o: o.startswith(node + "/")):
            for op, info, originals in layers:
                if any(test(o) for o in originals):
                    return {"layer": op.get_friendly_name(), "type": info["layerType"].astype(str),
                            "precision": info["runtimePrecision"].astype(str), "fused": originals}
        return None

    def effective_hint(self) -> str:
        """The precision the CPU plugin really uses ('f32' when asked bf16 on a CPU without bf16)."""
        value = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)

    def describe(self) -> dict[str, Any]:
        return {"runtime": "openvino CPU", "config": {k: str(v) for k, v in self.config.items()},
                "effective_hint": self.effective_hint(),
                "layer_precisions_instrumented": op_precisions(self.compiled),
                "layer_precisions_deployed": op_precisions(self._deployed_compiled()),
                "deployed_batch": self._deploy_batch, "instrumented_batch": self.batch}


def deployed_logits(path: Path, images: np.ndarray, precision: str = "fp32", batch: int = 8,
                    threads: int = 1) -> np.ndarray:
    """Final logits as the ov adapter runs the model on CPU: a dynamic batch reshaped to ``batch`` (a static
    one kept, the last batch padded), the precision hint set."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if not model.inputs[0].get_partial_shape()[0].is_static:
        _reshape(model, batch)
    size = _batch_of(model)
    compiled = core.compile_model(model, "CPU", cpu_config(precision, threads))
    out = []
    for start in range(0, len(images), size):
        chunk = images[start:start + size]
        n = len(chunk)
        if n < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], size - n, axis=0)])
        out.append(compiled(np.ascontiguousarray(chunk))[compiled.outputs[0]][:n])
    return np.concatenate(out)
