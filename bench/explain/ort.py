"""ONNX Runtime captures: the reference (fp32, optimisations off) and ORT candidates (fp32, fp16, int8 QDQ),
with name matching for the files ORT's quantiser and float16 converter write."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.explain.capture import Captured, NameMap
from bench.explain.graph import GraphIndex, elem_types, expose, prefix_model
from runtimes.ort_session import DEPLOY_LEVEL, cpu_session

# ORT quantiser name suffix (onnxruntime/quantization/qdq_quantizer.py, 1.31.1): a quantised graph output's
# producer output is renamed to this and the DequantizeLinear output takes the original name.
ORT_Q_INPUT_SUFFIX = "_QuantizeLinear_Input"
ORT_REFERENCE_LEVEL = "ORT_DISABLE_ALL"


def _strip(name: str, suffix: str) -> str | None:
    return name[: -len(suffix)] if name.endswith(suffix) else None


def map_ort_names(candidate: Any, reference: GraphIndex) -> NameMap:
    """Match a candidate ONNX (fp32, fp16 or int8 QDQ) to the reference by tensor name.

    ORT's quantiser keeps the float tensor T as the producer's output and inserts ``T -> QuantizeLinear ->
    'T_QuantizeLinear_Output' -> DequantizeLinear -> 'T_DequantizeLinear_Output'`` (``..._Output_<k>`` for
    dedicated pairs), rewiring the consumers to the DQ output. When T is a graph output the producer's output
    is renamed 'T_QuantizeLinear_Input' and the DQ output takes the name T. Weights become '<W>_quantized'
    initializers with their own DQ. The match is structural (a DequantizeLinear fed by a QuantizeLinear of T);
    the suffix only undoes the graph-output rename, so other QDQ producers match too. fp16 models keep every
    internal name; a graph output is re-made by a Cast that keeps the original name. A name produced by an op
    of another type is not the same value: the quantiser drops a Relu after a quantised Conv (the u8 range
    clips instead) and the Relu's output name then holds the unclipped value.
    """
    nmap = NameMap()
    g = candidate.graph
    producers = {out: n for n in g.node for out in n.output}
    initializers = {i.name for i in g.initializer}
    renamed_outputs: set[str] = set()
    for node in g.node:
        for out in node.output:
            base = _strip(out, ORT_Q_INPUT_SUFFIX)
            if base is not None and base in reference.tensors:
                nmap.values[out] = base  # pre-quantisation value of a graph-output tensor
                renamed_outputs.add(base)
            elif out in reference.tensors and node.op_type in (reference.tensors[out].op_type, "Cast"):
                nmap.values[out] = out  # Cast: an fp16 model re-makes a graph output in float32
    for node in g.node:
        if node.op_type != "DequantizeLinear" or not node.input:
            continue
        q = producers.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in initializers:
            continue  # a weight's DQ (int8 initializer) or a pre-quantised input: not an activation
        source = _strip(q.input[0], ORT_Q_INPUT_SUFFIX) or q.input[0]
        if source in reference.tensors:
            nmap.quantized[node.output[0]] = source
        if node.output[0] in renamed_outputs:
            nmap.values.pop(node.output[0], None)
    for node in g.node:  # which layers read a tensor through its Q/DQ pair (not every consumer need)
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            nmap.reads_quantized.update((node.name, nmap.quantized[i]) for i in node.input if i in nmap.quantized)
    return nmap


class OrtCapture:
    """ORT CPU on an ONNX file, with every matched float tensor exposed as a graph output.

    The instrumented session runs with ``level`` ORT_DISABLE_ALL: even BASIC folds constants, removes Identity
    nodes and fuses Conv+BN / MatMul+Add, so tensors vanish or change meaning. For an int8 QDQ candidate this
    runs Q and DQ as float ops (simulated quantisation) instead of ORT_ENABLE_ALL's QLinear / MatMulInteger
    kernels; ``deployed`` and ``probe`` use ORT_ENABLE_ALL, the benchmark's level, so the gap is measured and,
    if it matters, searched.
    """

    def __init__(self, path: Path, reference: GraphIndex, *, label: str = "ort", precision: str = "fp32",
                 threads: int = 1, level: str = ORT_REFERENCE_LEVEL, deploy_level: str = DEPLOY_LEVEL,
                 select: Iterable[str] | None = None) -> None:
        import onnx

        self.label, self.precision, self.path, self.threads = label, precision, Path(path), threads
        self.level, self.deploy_level = level, deploy_level
        self.model = onnx.load(str(path))
        self.types = elem_types(self.model)
        self.names = map_ort_names(self.model, reference)
        self._by_ref = {r: c for c, r in self.names.values.items()}  # all of them, for probe()
        if select is not None:  # expose only these float outputs; quantised views are always exposed
            wanted = set(select)
            self.names.values = {c: r for c, r in self.names.values.items() if r in wanted}
        self._output = self.model.graph.output[0].name
        initializers = {t.name for t in self.model.graph.initializer}
        self._input = [i.name for i in self.model.graph.input if i.name not in initializers][0]
        exposed = expose(self.model, [*self.names.values, *self.names.quantized], self.types)
        self.session = self._session(exposed, level)
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._deployed: Any = None
        self._all: Any = None  # session exposing every matched tensor, made on demand by values()

    def _session(self, model: Any, level: str) -> Any:
        """A session as the ort adapter makes one (``runtimes.ort_session``), at graph ``level``."""
        source = model if isinstance(model, Path) else model.SerializeToString()
        return cpu_session(source, self.threads, level=level, quiet=True)

    def run(self, batch: np.ndarray) -> Captured:
        arrays = dict(zip(self._outputs, self.session.run(self._outputs, {self._input: batch}), strict=True))
        values = {r: arrays[c] for c, r in self.names.values.items() if c in arrays}
        quantized = {r: arrays[c] for c, r in self.names.quantized.items() if c in arrays}
        return Captured(values, quantized, arrays[self._output])

    def deployed(self, images: np.ndarray) -> np.ndarray:
        if self._deployed is None:
            self._deployed = self._session(self.path, self.deploy_level)
        return self._deployed.run([self._output], {self._input: images})[0]

    def deploy_batch(self) -> int | None:
        return None  # any batch: the ORT adapter runs the file's dynamic batch as asked

    def values(self, names: Sequence[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        """ORT computes only what the requested outputs need, so this is cheap for a few names."""
        wanted = [self._by_ref[n] for n in names]
        session = self.session
        if any(c not in self._outputs for c in wanted):  # not exposed by ``select``: one session for all
            if self._all is None:
                self._all = self._session(expose(self.model, self._by_ref.values(), self.types), self.level)
            session = self._all
        return dict(zip(names, session.run(wanted, {self._input: batch}), strict=True))

    def probeable(self) -> set[str]:
        return set(self._by_ref)

    def probe(self, names: Sequence[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        wanted = [self._by_ref[n] for n in names]
        session = self._session(prefix_model(self.model, wanted, self.types), self.deploy_level)
        return dict(zip(names, session.run(wanted, {self._input: batch}), strict=True))

    def runtime_layer(self, node: str) -> dict[str, Any] | None:
        return None  # ORT does not say which fused kernel absorbed a node without a profile

    def describe(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime CPU", "instrumented_level": self.level,
                "deployed_level": self.deploy_level, "threads": self.threads}


def deployed_logits(path: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """Final logits of an ONNX file as the ort adapter runs it on CPU (ORT_ENABLE_ALL, no extra outputs)."""
    session = cpu_session(path, threads, quiet=True)
    return session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: images})[0]
