"""The deployed-run search: where the candidate *as deployed* (no extra outputs) first diverges, measured with
models cut after the tensors being measured.

Why: exposing every tensor can change what a runtime fuses (OpenVINO CPU runs LeViT's int8 head ReduceMean
with the following BatchNorm fused in, wrongly; with the tensors exposed that fusion and its error vanish). A
model cut after tensor T runs every fusion upstream of T as deployed, so T's error is the deployed one. Each
probe is a compile, so the search goes coarse to fine: (1) all residual-block outputs in one compile, kept if
that compile's logits match the deployed logits, else one cut model per block output; (2) bisection over the
tensors between the last block output below the threshold and the first above it; (3) the inputs of the
tensor found, for its growth. Steps (2) and (3) replay only the part after the last good block output, fed
with that output's deployed value, when the candidate can (``OvCapture.replay``) and replaying up to the
crossing block output reproduces its probed error; otherwise they compile cut models of the whole prefix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.explain.capture import Capture, Deadline
from bench.explain.errors import growth, relative_error
from bench.explain.graph import VALUE_PRESERVING_OPS, GraphIndex


@dataclass
class DeployedSearch:
    """``boundaries``: error at each residual-block output (and the logits) of the deployed run; ``first``:
    the first tensor whose error crosses the threshold, with the error of its inputs and the compiled layer
    that runs it; ``probes``: cut models compiled; ``replays``: compiles of a part between two tensors."""

    boundaries: list[dict[str, Any]]
    boundaries_faithful: bool  # all block outputs in one compile reproduced the deployed logits
    first: dict[str, Any] | None
    probes: int
    seconds: float
    replays: int = 0


def measured_inputs(name: str, graph: GraphIndex, measurable: set[str]) -> list[str]:
    """The nearest measurable tensors upstream of ``name`` (through tensors the candidate does not have)."""
    found, stack, seen = [], list(graph.tensors[name].inputs), set()
    while stack:
        t = stack.pop()
        if t in seen or t not in graph.tensors:
            continue  # the graph input: error 0
        seen.add(t)
        if t in measurable:
            found.append(t)
        else:
            stack.extend(graph.tensors[t].inputs)
    return found


class _Search:
    def __init__(self, reference: Capture, candidate: Capture, graph: GraphIndex, batch: np.ndarray,
                 deadline: Deadline) -> None:
        self.reference, self.candidate, self.graph, self.batch, self.deadline = (reference, candidate, graph,
                                                                                 batch, deadline)
        self.measurable = candidate.probeable() & reference.probeable()
        self.ordered = [t for t in graph.tensors if t in self.measurable]
        self.cache: dict[str, float] = {}
        self.values: dict[str, np.ndarray] = {}  # deployed values of the block outputs
        self.probes = self.replays = 0
        self.start: str | None = None  # replay from this block output's deployed value, when faithful

    def boundaries(self, deployed_logits: np.ndarray, tolerance: float) -> tuple[list[str], bool]:
        logits = self.graph.outputs[0]
        bounds = [t for t in self.ordered if self.graph.tensors[t].residual]
        if logits in self.measurable and logits not in bounds:
            bounds.append(logits)
        if not bounds:
            return [], False
        n = len(self.batch)
        ref_values = self.reference.values(bounds, self.batch)
        self.deadline.check("the block outputs")
        self.probes += 1
        self.values = self.candidate.probe(bounds, self.batch)
        faithful = logits in self.values and relative_error(deployed_logits, self.values[logits], n) <= tolerance
        if not faithful:
            self.values = {}
            for t in bounds:
                self.deadline.check(f"block output {t}")
                self.values.update(self.candidate.probe([t], self.batch))
                self.probes += 1
        self.cache = {t: relative_error(ref_values[t], self.values[t], n) for t in bounds}
        return bounds, faithful

    def try_replay(self, start: str, end: str, tolerance: float) -> None:
        """Replay from ``start`` if the candidate can and doing so reproduces ``end``'s probed error."""
        n = len(self.batch)
        if not hasattr(self.candidate, "replay") or len(self.values[start]) != n \
                or n != (self.candidate.deploy_batch() or n):
            return
        try:
            again = self.candidate.replay(start, self.values[start], [end])[end]
            self.replays += 1
        except Exception:  # the part reads other tensors too: fall back to cut models
            return
        drift = relative_error(self.reference.values([end], self.batch)[end], again, n) - self.cache[end]
        if abs(drift) <= max(tolerance, 0.1 * self.cache[end]):
            self.start = start

    def error(self, t: str) -> float:
        if t not in self.cache:
            self.deadline.check(f"measuring {t}")
            if self.start is not None:
                self.replays += 1
                value = self.candidate.replay(self.start, self.values[self.start], [t])[t]
            else:
                self.probes += 1
                value = self.candidate.probe([t], self.batch)[t]
            self.cache[t] = relative_error(self.reference.values([t], self.batch)[t], value, len(self.batch))
        return self.cache[t]

    def bisect(self, low: int, end: str, threshold: float) -> str:
        """The first tensor above the threshold between order ``low`` (exclusive) and ``end`` (inclusive);
        value-preserving ops cannot create error and are skipped."""
        high = self.graph.tensors[end].order
        segment = [t for t in self.ordered if low < self.graph.tensors[t].order <= high
                   and (self.graph.tensors[t].op_type not in VALUE_PRESERVING_OPS or t == end)]
        lo, hi = 0, len(segment) - 1  # invariant: segment[hi] is above the threshold
        while lo < hi:
            mid = (lo + hi) // 2
            if self.error(segment[mid]) > threshold:
                hi = mid
            else:
                lo = mid + 1
        return segment[hi]

    def describe(self, found: str) -> dict[str, Any]:
        computing = {t for t in self.measurable if self.graph.tensors[t].op_type not in VALUE_PRESERVING_OPS}
        inputs = measured_inputs(found, self.graph, computing)
        before = max((self.error(t) for t in inputs), default=0.0)
        info = self.graph.tensors[found]
        # A node that reads a quantised input may be innocent: its input's quantisation goes in the fix too.
        quantised = [i for i in info.inputs if (info.node, i) in self.candidate.names.reads_quantized]
        fix = list(dict.fromkeys([info.node, *(self.graph.tensors[i].node for i in quantised)]))
        return {"tensor": found, "reads_quantized": quantised, "fix_nodes": " ".join(fix), "node": info.node,
                "op_type": info.op_type, "block": info.block,
                "layer": info.layer, "order": info.order, "rel_l2": self.cache[found], "inputs": inputs,
                "err_before": before, "growth": growth(self.cache[found], before),
                "runtime_layer": self.candidate.runtime_layer(info.node),
                "measured_by": f"replay from {self.start}" if self.start else "cut models"}


def localise_deployed(reference: Capture, candidate: Capture, graph: GraphIndex, batch: np.ndarray,
                      threshold: float, deployed_logits: np.ndarray, tolerance: float = 1e-3,
                      deadline: Deadline | None = None) -> DeployedSearch:
    """First divergence of the deployed candidate on one deployed ``batch`` of images (see the module doc)."""
    t0 = time.perf_counter()
    search = _Search(reference, candidate, graph, batch, deadline or Deadline(None))
    bounds, faithful = search.boundaries(deployed_logits, tolerance)
    rows = [{"tensor": t, "order": graph.tensors[t].order, "block": graph.tensors[t].block,
             "node": graph.tensors[t].node, "rel_l2": search.cache[t]} for t in bounds]
    crossed = next((i for i, t in enumerate(bounds) if search.cache[t] > threshold), None)
    if crossed is None:
        return DeployedSearch(rows, faithful, None, search.probes, time.perf_counter() - t0)
    end = bounds[crossed]
    if crossed:
        search.try_replay(bounds[crossed - 1], end, tolerance)
    low = graph.tensors[bounds[crossed - 1]].order if crossed else -1
    first = search.describe(search.bisect(low, end, threshold))
    return DeployedSearch(rows, faithful, first, search.probes, time.perf_counter() - t0, search.replays)
