"""The reference graph: its float activations in topological order, with op type, depth and block index, and
the ONNX edits the captures need (expose tensors as outputs, cut a model after some tensors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESIDUAL_OPS = frozenset({"Add", "Sum"})
# Ops that only move values: their output error equals their input error, so exposing them costs memory and
# time (MobileViT: ~40 % of the tensors) and says nothing. They stay in the rows, as not exposed.
VALUE_PRESERVING_OPS = frozenset({"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"})


def float_types() -> frozenset[int]:
    from onnx import TensorProto

    return frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})


@dataclass(frozen=True)
class TensorInfo:
    """One float activation of the reference graph and where it sits in the network."""

    name: str
    node: str  # producing node's name (what NNCF ignored_scope / ORT nodes_to_exclude take)
    op_type: str
    order: int  # position of the producing node in topological order
    depth: int  # longest path from the graph input, in nodes
    block: int  # residual-unit index: residual Adds upstream (see index_graph)
    layer: str  # layer label from the node's parameter names (e.g. 'linear_3', 'batch_norm1d_1'), or ''
    inputs: tuple[str, ...]  # the float activations the node reads (weights and constants left out)
    residual: bool  # the node is a residual Add


@dataclass
class GraphIndex:
    """The reference graph's float activations in topological order, plus lookups."""

    tensors: dict[str, TensorInfo]  # insertion order = topological order
    outputs: tuple[str, ...]  # graph outputs (logits first)
    input_name: str
    consumers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tensor -> reading node names

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def selection(self, skip_ops: Iterable[str] = VALUE_PRESERVING_OPS) -> set[str]:
        """Tensors worth exposing: all but the outputs of ``skip_ops`` (graph outputs always kept)."""
        skip = set(skip_ops)
        return {t for t, i in self.tensors.items() if i.op_type not in skip or t in self.outputs}

    def node_op_types(self) -> dict[str, str]:
        return {info.node: info.op_type for info in self.tensors.values()}


def reference_selection(graph: GraphIndex, candidates: Iterable[Any]) -> set[str]:
    """What the reference must expose for these candidates: the selection plus every tensor a candidate
    quantises (NNCF puts FakeQuantize on Transpose outputs, for instance), so one reference run serves all."""
    return graph.selection() | {t for c in candidates for t in c.names.quantized.values()}


def topological(nodes: Sequence[Any], available: set[str]) -> list[Any]:
    """Kahn's sort, stable in file order: ONNX requires sorted graphs, but hand-edited ones may not be."""
    produced = {out for n in nodes for out in n.output}
    ready = set(available)
    pending, result = list(nodes), []
    while pending:
        waiting = []
        for n in pending:
            if all(not i or i in ready or i not in produced for i in n.input):
                result.append(n)
                ready.update(n.output)
            else:
                waiting.append(n)
        if len(waiting) == len(pending):
            raise ValueError(f"graph has a cycle or dangling inputs near node {pending[0].name!r}")
        pending = waiting
    return result


def elem_types(model: Any) -> dict[str, int]:
    """Element type of every tensor ONNX shape inference can type (graph I/O, value_info, initializers)."""
    import onnx

    g = onnx.shape_inference.infer_shapes(model).graph
    types: dict[str, int] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _layer_label(node: Any, initializers: set[str]) -> str:
    """'linear_3.w_0' -> 'linear_3': Paddle names parameters '<layer>_<k>.<w|b>_<j>', so the prefix is the
    layer; other exporters ('blocks.3.attn.qkv.weight') give 'blocks.3.attn.qkv'."""
    for name in node.input:
        if name in initializers and "." in name:
            return name.rsplit(".", 1)[0]
    return ""


class _Walk:
    """State of :func:`index_graph` while it visits the nodes in order."""

    def __init__(self, graph_inputs: list[str]) -> None:
        self.producer: dict[str, int] = {}  # tensor -> order of the node that makes it
        self.ancestors: dict[str, int] = {name: 0 for name in graph_inputs}  # bitset over producer orders
        self.depth: dict[str, int] = {name: 0 for name in graph_inputs}
        self.block_after: dict[str, int] = {name: 0 for name in graph_inputs}  # block of what this feeds

    def feeds(self, a: str, b: str) -> bool:
        return a not in self.producer or bool((self.ancestors[b] >> self.producer[a]) & 1)

    def is_residual(self, op_type: str, data_in: list[str]) -> bool:
        return (op_type in RESIDUAL_OPS and len(data_in) >= 2
                and any(self.feeds(a, b) for a in data_in for b in data_in if a != b))


def index_graph(model: Any) -> GraphIndex:
    """Float activations of ``model`` in topological order, with op type, depth and block index.

    Block index: exported names carry no block ('p2o.pd_op.matmul.3.0', node 'MatMul.3'), so it comes from
    structure. A *residual Add* is an Add/Sum with two activation inputs one of which feeds the other (the
    skip path). A node's block is the largest count of residual Adds on any path from the input to it, and a
    residual Add belongs to the block it closes: block k holds the k-th residual unit (0-based) plus the
    non-residual layers (stem, subsampling) just before it.
    """
    g = model.graph
    initializers = {i.name for i in g.initializer}
    types, floats = elem_types(model), float_types()
    graph_inputs = [i.name for i in g.input if i.name not in initializers]
    nodes = topological(list(g.node), set(graph_inputs) | initializers | {""})
    walk = _Walk(graph_inputs)
    tensors: dict[str, TensorInfo] = {}
    for order, node in enumerate(nodes):
        data_in = [i for i in node.input if i and i in walk.ancestors]
        if not data_in:
            continue  # computable without the graph input (weights, folded shapes)
        residual = walk.is_residual(node.op_type, data_in)
        ancestors = 1 << order
        for i in data_in:
            ancestors |= walk.ancestors[i]
        block = max(walk.block_after[i] for i in data_in)
        depth = 1 + max(walk.depth[i] for i in data_in)
        float_in = tuple(i for i in data_in if types.get(i) in floats)
        label = _layer_label(node, initializers)
        for out in (o for o in node.output if o):
            walk.producer[out], walk.ancestors[out], walk.depth[out] = order, ancestors, depth
            walk.block_after[out] = block + int(residual)
            if types.get(out) in floats:
                tensors[out] = TensorInfo(out, node.name, node.op_type, order, depth, block, label, float_in,
                                          residual)
    consumers: dict[str, list[str]] = {}
    for node in nodes:
        for i in dict.fromkeys(node.input):
            if i in tensors:
                consumers.setdefault(i, []).append(node.name)
    return GraphIndex(tensors, tuple(o.name for o in g.output), graph_inputs[0],
                      {t: tuple(c) for t, c in consumers.items()})


def expose(model: Any, names: Iterable[str], types: Mapping[str, int] | None = None) -> Any:
    """A copy of ``model`` whose graph outputs also include ``names`` (typed, shapeless: the shapes of
    dynamic-batch tensors are left to the runtime, so a wrong inferred shape cannot fail the session)."""
    import onnx

    types = elem_types(model) if types is None else types
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in names:
        if name not in present and name in types:
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
            present.add(name)
    return out


def prefix_model(model: Any, outputs: Sequence[str], types: Mapping[str, int]) -> Any:
    """The part of ``model`` that computes ``outputs``, with exactly those as graph outputs."""
    import onnx

    producers = {out: node for node in model.graph.node for out in node.output}
    keep, stack, seen = set(), list(outputs), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack.extend(i for i in node.input if i)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(n for n in model.graph.node if id(n) in keep)
    used = {i for n in out.graph.node for i in n.input}
    inits = [i for i in model.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    del out.graph.output[:]
    out.graph.output.extend(onnx.helper.make_tensor_value_info(n, types[n], None) for n in outputs)
    return out


def logit_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement, min per-image cosine, relative L2 and max abs diff of ``candidate`` against
    ``reference`` ([N, C] each)."""
    a, b = reference.astype(np.float64), candidate.astype(np.float64)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    norm = float(np.linalg.norm(a))
    return {"top1_agree": int((a.argmax(1) == b.argmax(1)).sum()), "n": int(len(a)),
            "cosine_min": float(cos.min()), "rel_l2": float(np.linalg.norm(b - a) / norm) if norm else 0.0,
            "max_abs_diff": float(np.abs(a - b).max())}
