"""A mutable working view of an ONNX graph for the passes: producers, consumers, constants and safe rewiring.

Every pass copies the model it is given into a :class:`GraphView`, edits the view's node list and returns the
proto ``finish`` writes back, so the caller's model is never modified. Tensors that a subgraph (If/Loop/Scan
body) reads and graph outputs are never renamed away, so a pass cannot disconnect what it does not see.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

STANDARD_DOMAINS = ("", "ai.onnx")

# Notes of the pass now running (what was kept and why), collected by the driver for the manifest.
_NOTES: ContextVar[list[str] | None] = ContextVar("_NOTES", default=None)


@contextmanager
def collecting_notes() -> Iterator[list[str]]:
    """Collect the notes the passes run inside this block write with :func:`note`."""
    notes: list[str] = []
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def note(message: str) -> None:
    """Record something the pass report should say (a node kept, and why)."""
    notes = _NOTES.get()
    if notes is not None:
        notes.append(message)


def census(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> node count; an op of another domain is written ``domain::Op``."""
    counts = Counter(n.op_type if n.domain in STANDARD_DOMAINS else f"{n.domain}::{n.op_type}"
                     for n in model.graph.node)
    return dict(sorted(counts.items()))


def opset_of(model: onnx.ModelProto) -> int:
    return next(op.version for op in model.opset_import if op.domain in STANDARD_DOMAINS)


def is_standard(node: onnx.NodeProto, *op_types: str) -> bool:
    return node.domain in STANDARD_DOMAINS and (not op_types or node.op_type in op_types)


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def subgraph_references(graph: onnx.GraphProto) -> set[str]:
    """Names read inside subgraph attributes (outer-scope references); empty for the zoo models."""
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                for inner in sub.node:
                    names.update(inner.input)
                names |= subgraph_references(sub)
    return names


class GraphView:
    """A copy of a model whose main graph's nodes are a Python list (written back by ``finish``)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        self.nodes: list[onnx.NodeProto] = list(self.graph.node)
        self.inits: dict[str, onnx.TensorProto] = {t.name: t for t in self.graph.initializer}
        self.graph_inputs = {v.name for v in self.graph.input}
        self.graph_outputs = {v.name for v in self.graph.output}
        self.subgraph_reads = subgraph_references(self.graph)
        self.pinned = self.graph_outputs | self.subgraph_reads
        self._fresh: Counter = Counter()

    # --- lookups (recomputed on demand; the graphs here have < 2,000 nodes) -----------------------------------
    def producers(self) -> dict[str, onnx.NodeProto]:
        return {out: n for n in self.nodes for out in n.output if out}

    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.nodes:
            for name in n.input:
                if name:
                    users[name].append(n)
        return users

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a Constant node's output, else None."""
        if name in self.inits and name not in self.graph_inputs:
            return numpy_helper.to_array(self.inits[name])
        for n in self.nodes:
            if n.op_type == "Constant" and n.output[0] == name:
                value = next((a for a in n.attribute if a.name == "value"), None)
                return numpy_helper.to_array(value.t) if value is not None else None
        return None

    def sole_consumer(self, name: str, users: dict[str, list[onnx.NodeProto]]) -> onnx.NodeProto | None:
        """The one node reading ``name``, if exactly one does and ``name`` is not a graph output."""
        readers = users.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.pinned else None

    # --- edits -------------------------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A tensor/initializer name not used anywhere yet."""
        taken = self.inits.keys() | {o for n in self.nodes for o in n.output} | self.graph_inputs
        while True:
            self._fresh[base] += 1
            name = f"{base}__opt{self._fresh[base]}"
            if name not in taken:
                return name

    def add_init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def reshape_node(self, base: str, data: str, target: list[int], out: str) -> onnx.NodeProto:
        """A new Reshape of ``data`` to the constant ``target`` (an int64 initializer), written to ``out``;
        the caller places it."""
        shape = self.add_init(f"{base}_shape", np.asarray(target, dtype=np.int64))
        return helper.make_node("Reshape", [data, shape], [out], name=self.fresh(f"{base}_reshape"))

    def insert_after(self, anchor: onnx.NodeProto, node: onnx.NodeProto) -> None:
        """Insert ``node`` right after ``anchor``, so the node list stays topologically sorted."""
        index = next(i for i, n in enumerate(self.nodes) if n is anchor)
        self.nodes.insert(index + 1, node)

    def remove(self, node: onnx.NodeProto) -> None:
        self.nodes = [n for n in self.nodes if n is not node]

    def replace_uses(self, old: str, new: str) -> None:
        for n in self.nodes:
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new

    def bypass(self, node: onnx.NodeProto, data_in: str) -> bool:
        """Remove a node whose output equals its input ``data_in``; False (nothing done) when that is unsafe.

        When the output is a graph output, the producer of ``data_in`` is renamed to write it instead, which is
        only safe when ``data_in`` is an ordinary intermediate tensor that this node alone reads.
        """
        out = node.output[0]
        if out in self.subgraph_reads:
            return False
        if out not in self.graph_outputs:
            self.remove(node)
            self.replace_uses(out, data_in)
            return True
        producer = self.producers().get(data_in)
        if (producer is None or data_in in self.pinned or data_in in self.graph_inputs
                or len(self.consumers().get(data_in, [])) != 1):
            return False
        self.remove(node)
        producer.output[list(producer.output).index(data_in)] = out
        return True

    def prune(self) -> None:
        """Drop the nodes whose outputs nobody reads."""
        needed = set(self.pinned)
        alive: list[onnx.NodeProto] = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.output if o):
                alive.append(n)
                needed.update(i for i in n.input if i)
        self.nodes = list(reversed(alive))

    def finish(self) -> onnx.ModelProto:
        """Write the nodes back; drop dead nodes, unused initializers and the value_info of removed tensors."""
        self.prune()
        used = {name for n in self.nodes for name in n.input} | self.subgraph_reads | self.graph_outputs
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        del self.graph.initializer[:]
        self.graph.initializer.extend(t for name, t in self.inits.items() if name in used)
        live = {o for n in self.nodes for o in n.output}
        kept = [v for v in self.graph.value_info if v.name in live]
        del self.graph.value_info[:]
        self.graph.value_info.extend(kept)
        return self.model
