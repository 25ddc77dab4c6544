"""Which provider ran each node of an ORT GPU session, and is that what was asked? Pure functions over one
profiling trace (the JSON list ``session.end_profiling()`` writes); no onnxruntime needed.

Kernel events (ORT 1.31) have ``cat == "Node"``, a ``name`` ending in ``_kernel_time``, ``dur`` in
microseconds and ``args`` with ``provider``, ``op_name`` and ``input_type_shape`` / ``output_type_shape``
(lists of ``{dtype: [dims]}``).

Why an op-type list alone cannot judge a CPU node: in a CUDA session ORT puts shape arithmetic on CPU on
purpose (``GetCpuPreferredNodes``: a node whose every input is a CPU output of Shape/Size or of such a node,
a small initializer or a graph input). Those are Gather/Slice/Concat/Unsqueeze/Cast/Mul... on int64 shape
vectors; the same op types on activations are real work that left the GPU. So a CPU node is benign only when
both (1) its op is in the closed list ``SHAPE_OPS`` and (2) every tensor it reads or writes is shape-sized:
integer/bool with at most ``MAX_SHAPE_ELEMENTS`` elements, or floating point with at most
``MAX_FLOAT_ELEMENTS`` (scalars such as a resize scale). A CPU node without recorded shapes fails closed.

TensorRT provider: its engines appear as fused nodes with provider ``TensorrtExecutionProvider``. None of
them means TensorRT took no subgraph and CUDA ran everything: that run is not a TensorRT measurement.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# Ops that occur in shape subgraphs. Closed list: anything else on CPU in a GPU session is real work.
SHAPE_OPS = frozenset({
    "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Reshape", "Identity",
    "Range", "ConstantOfShape", "Expand", "Equal", "Where", "Not", "And", "Or", "Less", "LessOrEqual",
    "Greater", "GreaterOrEqual", "Max", "Min", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Floor",
    "Ceil", "Sqrt", "ReduceProd",
})
INTEGER_TYPES = frozenset({"int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool"})
MAX_SHAPE_ELEMENTS = 64  # a shape vector has rank-many elements; slices of it fewer
MAX_FLOAT_ELEMENTS = 4  # float scalars (scale factors); a [1, 10] logits tensor is not shape arithmetic
MEMCPY_OPS = frozenset({"MemcpyToHost", "MemcpyFromHost"})
# Kernels that compute in int8 (what a QDQ model becomes where the provider has int8 kernels).
INT8_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "QLinearAdd", "QLinearMul",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearSoftmax",
    "QLinearLeakyRelu", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QOrderedMatMul",
})


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    provider: str
    dur_us: float
    tensors: tuple[tuple[str, tuple[int, ...]], ...] | None  # (dtype, dims) of inputs then outputs

    def largest(self) -> int:
        return max((_elements(dims) for _, dims in self.tensors or ()), default=0)


@dataclass
class PlacementVerdict:
    requested: str
    placement: dict[str, dict[str, int]]  # provider -> op -> node count
    time_us: dict[str, float]  # provider -> summed kernel time of the profiled run
    benign_cpu: list[Node] = field(default_factory=list)  # shape arithmetic ORT put on CPU by design
    offending: list[Node] = field(default_factory=list)  # real work on CPU (or unverifiable)
    gpu_fallback: list[Node] = field(default_factory=list)  # TensorRT asked, CUDA ran these compute nodes
    transfers: list[Node] = field(default_factory=list)  # Memcpy nodes larger than a shape tensor
    int8_kernels: dict[str, int] = field(default_factory=dict)  # provider -> int8 kernels it ran
    problem: str | None = None  # one line: why this is not a measurement of ``requested``; None if it is
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> dict:
        """JSON-friendly record for ``effective["node_placement"]``."""
        return {
            "requested": self.requested,
            "nodes": self.placement,
            "kernel_time_us": {p: round(t, 1) for p, t in self.time_us.items()},
            "cpu_shape_nodes": dict(sorted(Counter(n.op for n in self.benign_cpu).items())),
            "cpu_compute_nodes": [f"{n.op}:{n.name}" for n in self.offending],
            "cuda_nodes_outside_tensorrt": dict(sorted(Counter(n.op for n in self.gpu_fallback).items())),
            "large_transfers": [f"{n.op}:{n.largest()}" for n in self.transfers],
            "int8_kernels": self.int8_kernels,
            "problem": self.problem,
        }


def _elements(dims) -> int:
    total = 1
    for d in dims:
        total *= max(int(d), 0)
    return total


def _tensors(args: dict) -> tuple | None:
    found = []
    for key in ("input_type_shape", "output_type_shape"):
        if key not in args:
            return None
        for entry in args[key] or ():
            for dtype, dims in entry.items():  # one {dtype: dims} per tensor
                found.append((str(dtype), tuple(int(d) for d in dims)))
    return tuple(found)


def kernel_nodes(events: list[dict]) -> list[Node]:
    """The kernel events of one profiled run, in trace order."""
    nodes = []
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if "provider" not in args:
            continue
        nodes.append(Node(name=str(event["name"])[: -len("_kernel_time")], op=str(args.get("op_name", "?")),
                          provider=str(args["provider"]), dur_us=float(event.get("dur", 0) or 0),
                          tensors=_tensors(args)))
    return nodes


def is_shape_arithmetic(node: Node) -> bool:
    """True when a CPU node is ORT's deliberate shape computation, not work that left the GPU."""
    if node.op not in SHAPE_OPS or node.tensors is None:
        return False
    for dtype, dims in node.tensors:
        limit = MAX_SHAPE_ELEMENTS if dtype in INTEGER_TYPES else MAX_FLOAT_ELEMENTS
        if _elements(dims) > limit:
            return False
    return True


def placement_verdict(events: list[dict], requested: str) -> PlacementVerdict:
    """Judge one profiled run of a session that asked for provider ``requested``."""
    nodes = kernel_nodes(events)
    placement: dict[str, Counter] = {}
    time_us: Counter = Counter()
    for n in nodes:
        placement.setdefault(n.provider, Counter())[n.op] += 1
        time_us[n.provider] += n.dur_us
    verdict = PlacementVerdict(requested, {p: dict(c) for p, c in placement.items()}, dict(time_us))
    verdict.int8_kernels = dict(Counter(n.provider for n in nodes if n.op in INT8_OPS))
    if not nodes:
        verdict.problem = "the profile has no kernel events: placement cannot be checked"
        return verdict
    if requested == CPU:
        foreign = sorted({n.provider for n in nodes} - {CPU})
        if foreign:
            verdict.problem = f"a CPU session ran nodes on {', '.join(foreign)}"
        return verdict
    _judge_cpu_nodes(verdict, nodes)
    if requested == TENSORRT:
        _judge_tensorrt(verdict, nodes)
    elif not any(n.provider == requested for n in nodes):
        verdict.problem = verdict.problem or f"no node ran on {requested}"
    return verdict


QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# Seen on an H200 with onnxruntime-gpu 1.31.1 (benchmarks/ort_cuda_qdq_placement.py): the CUDA provider has no
# DequantizeLinear kernel for int32, so the quantized biases of a QDQ model are dequantized on the CPU and copied
# over at every run (per-channel int8 weights run on the GPU).
QDQ_HINT = ("; ORT's CUDA provider has no DequantizeLinear for int32 (quantized biases): quantize with float "
            "biases for CUDA (python -m export --manifest <its fp32 model.onnx.json> --precision int8 --runtime "
            "ort-cuda, which python -m bench --device cuda makes and uses), or run it on the TensorRT provider")


def _judge_cpu_nodes(verdict: PlacementVerdict, nodes: list[Node]) -> None:
    for n in nodes:
        if n.provider == CPU:
            (verdict.benign_cpu if is_shape_arithmetic(n) else verdict.offending).append(n)
        elif n.op in MEMCPY_OPS and n.largest() > MAX_SHAPE_ELEMENTS:
            verdict.transfers.append(n)
    if verdict.offending:
        ops = Counter(n.op for n in verdict.offending)
        listed = ", ".join(f"{op} x{k}" if k > 1 else op for op, k in sorted(ops.items()))
        verdict.problem = f"{verdict.requested} left work on CPU: {listed}"
        if verdict.requested == CUDA and ops.keys() & QDQ_OPS:
            verdict.problem += QDQ_HINT
    if verdict.benign_cpu:
        verdict.notes.append(
            f"{len(verdict.benign_cpu)} shape-arithmetic node(s) ran on CPU by ORT's design "
            f"({', '.join(sorted({n.op for n in verdict.benign_cpu}))}; all tensors shape-sized)")
    if verdict.transfers:
        verdict.notes.append(f"{len(verdict.transfers)} host<->device copies larger than a shape tensor")


def _judge_tensorrt(verdict: PlacementVerdict, nodes: list[Node]) -> None:
    engines = [n for n in nodes if n.provider == TENSORRT]
    cuda = [n for n in nodes if n.provider == CUDA and n.op not in MEMCPY_OPS]
    verdict.gpu_fallback = [n for n in cuda if not is_shape_arithmetic(n)]
    if not engines:
        verdict.problem = verdict.problem or (
            f"TensorRT took no subgraph: all {len(cuda)} GPU node(s) ran on {CUDA}; this is not a TensorRT "
            f"measurement")
    elif verdict.gpu_fallback:
        time_us = verdict.time_us
        share = time_us.get(TENSORRT, 0) / max(time_us.get(TENSORRT, 0) + time_us.get(CUDA, 0), 1e-9)
        ops = ", ".join(sorted({n.op for n in verdict.gpu_fallback}))
        verdict.notes.append(f"TensorRT ran {len(engines)} engine(s) ({share:.0%} of GPU kernel time); CUDA ran "
                             f"{len(verdict.gpu_fallback)} node(s) TensorRT declined: {ops}")


def verdict_from_file(path: str | Path, requested: str) -> PlacementVerdict:
    return placement_verdict(json.loads(Path(path).read_text()), requested)
