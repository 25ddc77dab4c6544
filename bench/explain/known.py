"""Runtime bugs the explain recognises by their pattern, so its output names the bug, its reproducer and the
workaround instead of leaving the user to rediscover it."""

from __future__ import annotations

from typing import Any

from bench.explain.compare import Explanation
from bench.explain.graph import VALUE_PRESERVING_OPS, GraphIndex

OV_REDUCE_BN_INT8 = {
    "id": "openvino-cpu-int8-reducemean-batchnorm",
    "title": "OpenVINO CPU fuses a per-channel BatchNorm into an int8 ReduceMean(keep_dims=False) and applies "
             "the BatchNorm parameters by image index instead of by channel",
    "seen_with": "openvino 2026.4.1 CPU plugin; NNCF DEFAULT-preset int8 of every LeViT (0/44 top-1 agreement)",
    "pattern": "FakeQuantize -> ReduceMean(keep_dims=False) -> FakeQuantize -> BatchNormInference, run as one "
               "i8 Reduce layer with the BatchNorm fused in",
    "reproducer": "python benchmarks/ov_reduce_bn_int8_repro.py (builds its own 4-op IR; no network)",
    "workaround": "keep that BatchNormalization in float (NNCF IgnoredScope(names=[node]) or "
                  "types=['BatchNormInference']), or quantise with model_type=TRANSFORMER",
}


def _reads_reduce_mean(graph: GraphIndex, tensor: str) -> bool:
    """Does ``tensor``'s node read a ReduceMean output (through value-preserving ops only)?"""
    stack = list(graph.tensors[tensor].inputs)
    while stack:
        name = stack.pop()
        info = graph.tensors.get(name)
        if info is None:
            continue
        if info.op_type == "ReduceMean":
            return True
        if info.op_type in VALUE_PRESERVING_OPS:
            stack.extend(info.inputs)
    return False


def known_issues(ex: Explanation, graph: GraphIndex) -> list[dict[str, Any]]:
    """The known bugs whose pattern this explanation shows, each with the node it was found at."""
    found = []
    first = ex.deployed.first if ex.deployed is not None else None
    if first and first["op_type"] == "BatchNormalization" and _reads_reduce_mean(graph, first["tensor"]):
        layer = first.get("runtime_layer") or {}
        if "reduce" in str(layer.get("type", "")).lower() and layer.get("precision") in ("i8", "u8"):
            found.append({**OV_REDUCE_BN_INT8, "node": first["node"], "runtime_layer": layer})
    return found
