"""Graph edits and look-ups the int8 builders share: the classifier head, and float inputs for chosen ops.

Why the head stays in float (both runtimes): walking back from the output, the head is the chain from the global
pooling to the logits (pool [-> norm] -> MatMul/Gemm [-> Add]), one MatMul of 70-90. Quantization error that
enters there lands in the logits unaveraged; keeping it float cut the max logit difference 10-20x on every zoo
model (proto12 findings), and ONNX Runtime would otherwise quantize the logits themselves, turning two close
classes into a tie. It also keeps NNCF away from LeViT's head BatchNorm, which OpenVINO 2026.4's CPU plugin fuses
into an int8 ReduceMean wrongly (benchmarks/ov_reduce_bn_int8_repro.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

POOL_OPS = frozenset({"ReduceMean", "GlobalAveragePool", "AveragePool", "AvgPool", "AdaptiveAvgPool", "ReduceMax"})
HEAD_COMPUTE = frozenset({"MatMul", "Gemm", "Conv", "Convolution", "FullyConnected"})
HEAD_MAX_NODES = 12
# Ops whose later inputs are shapes or indices, not data: only input 0 is followed.
SHAPE_TAKING = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Slice", "Tile"})


def walk_head(start, parents: Callable, op_type: Callable, name: Callable) -> list[str]:
    """Names from the output node back to and including the global pooling op; [] when the chain has no
    MatMul/Gemm/Conv before a join or the node limit (then there is no single head to keep)."""
    names: list[str] = []
    node, seen_compute = start, False
    while node is not None and len(names) < HEAD_MAX_NODES:
        names.append(name(node))
        seen_compute = seen_compute or op_type(node) in HEAD_COMPUTE
        if seen_compute and op_type(node) in POOL_OPS:
            return names
        found = parents(node)
        node = found[0] if len(found) == 1 else None  # the head is a chain; a join means we left it
    return names if seen_compute else []


def onnx_head_nodes(model) -> list[str]:
    """ONNX node names of the classifier head, for ``nodes_to_exclude``."""
    initializers = {t.name for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}

    def parents(node):
        inputs = node.input[:1] if node.op_type in SHAPE_TAKING else node.input
        return [producer[i] for i in inputs if i and i not in initializers and i in producer
                and producer[i].op_type != "Constant"]

    return walk_head(producer.get(model.graph.output[0].name), parents, lambda n: n.op_type, lambda n: n.name)


def ov_head_ops(model) -> list[str]:
    """Friendly names of the classifier head of an ``ov.Model``, for ``nncf.IgnoredScope(names=...)``."""
    constant: dict[str, bool] = {}

    def is_constant(op) -> bool:  # a Constant, or computed from Constants only (Gemm's alpha/beta Multiplies)
        key = op.get_friendly_name()  # python wrappers are made per call: id() would be reused
        if key not in constant:
            sources = [i.get_source_output().get_node() for i in op.inputs()]
            constant[key] = op.get_type_name() == "Constant" or (
                op.get_type_name() != "Parameter" and bool(sources) and all(is_constant(s) for s in sources))
        return constant[key]

    def parents(op):
        inputs = op.inputs()[:1] if op.get_type_name() in SHAPE_TAKING else op.inputs()
        return [i.get_source_output().get_node() for i in inputs
                if not is_constant(i.get_source_output().get_node())]

    start = parents(model.get_results()[0])
    return walk_head(start[0] if start else None, parents, lambda op: op.get_type_name(),
                     lambda op: op.get_friendly_name())


def float_inputs_for(model, op_types: Sequence[str]) -> int:
    """Feed ``op_types`` nodes the float tensor instead of DequantizeLinear(QuantizeLinear(x)); drop orphans.

    ONNX Runtime fuses DQ -> Softmax -> Q into QLinearSoftmax, 4x the time of float Softmax on an AVX2 CPU
    (MobileViT_XXS batch 8: 105 vs 26 ms, int8's largest overhead). quantize_static has no per-op switch for it:
    Softmax is not in the QDQ registry, the pair in front of it belongs to its quantized neighbour. The Q after
    it stays, so the next MatMul still runs int8. Returns how many inputs were rewired."""
    producer = {out: node for node in model.graph.node for out in node.output}
    rewired = 0
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            node.input[index] = q.input[0]
            rewired += 1
    drop_unused(model)
    return rewired


def drop_unused(model) -> None:
    """Remove nodes whose outputs nobody reads (until none is left), then initializers nobody reads."""
    while True:
        used = {i for node in model.graph.node for i in node.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    for initializer in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(initializer)
