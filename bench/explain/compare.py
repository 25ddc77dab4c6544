"""Per-layer comparison of a candidate with the reference: figures per tensor, the first divergence, the error
growth ranking, and :func:`explain`, which runs both captures and puts it together."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench.explain.capture import Capture, Deadline, ExplainTimeout
from bench.explain.errors import NO_STATS, Accumulator, growth
from bench.explain.graph import GraphIndex, logit_agreement

# Relative-error thresholds for "diverged", per candidate precision: above the error a healthy layer of that
# precision adds (fp32 reorderings ~1e-6, fp16/bf16 rounding ~1e-3 per layer, int8 ~1e-2 per layer).
DEFAULT_THRESHOLDS = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2, "int8": 0.2}
JUMP = 2.0  # growth at or above this: one layer made the error (a 'jump'), not accumulation ('gradual')
ROW_FIELDS = ("candidate", "order", "stage", "tensor", "node", "op_type", "block", "depth", "layer", "matched",
              "shape", "cosine", "cosine_image_min", "rel_l2", "max_abs", "ref_absmax", "err_before",
              "growth", "nonfinite", "first_divergence", "fix_nodes", "note")


def default_threshold(precision: str) -> float:
    return DEFAULT_THRESHOLDS.get(precision, 1e-2)


def build_rows(reference: GraphIndex, label: str, values: Mapping[str, Accumulator],
               quantized: Mapping[str, Accumulator], reads_quantized: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Rows in topological order, error growth against what each node really reads.

    Stage 'output' is a node's output tensor. Stage 'quantized' is that tensor after the candidate's Q/DQ pair
    or FakeQuantize, as its quantised consumers read it; its growth is the quantisation's own damage (a badly
    ranged activation). A node's input error is taken at the stage it reads, so a MatMul reading a badly
    quantised Softmax output is not blamed for it. ``fix_nodes``: the nodes to keep in float to remove the
    error (the node itself; for a quantisation, its producer and consumers, since ORT quantises an output from
    the producer's side and NNCF from the consumers'). A tensor the candidate does not expose passes on the
    largest error of its inputs, so a node after a fused region is compared with what was measured upstream.
    """
    carried: dict[str, float] = {}  # tensor -> its measured error, or what flows through it if unmeasured
    carried_q: dict[str, float] = {}  # tensor -> error of its quantised view
    rows = []
    for name, info in reference.tensors.items():
        before = max((carried_q[i] if (info.node, i) in reads_quantized and i in carried_q
                      else carried.get(i, 0.0) for i in info.inputs), default=0.0)
        acc, qacc = values.get(name), quantized.get(name)
        matched = acc is not None and not acc.shape_mismatch
        err = acc.rel_l2() if matched else None
        carried[name] = err if err is not None else before
        base = {"candidate": label, "order": info.order, "tensor": name, "node": info.node,
                "op_type": info.op_type, "block": info.block, "depth": info.depth, "layer": info.layer,
                "first_divergence": False}
        note = acc.shape_mismatch if acc is not None and acc.shape_mismatch else "" if acc else "not exposed"
        rows.append({**base, "stage": "output", "matched": matched, **(acc.stats() if matched else NO_STATS),
                     "err_before": before, "growth": growth(err, before), "fix_nodes": info.node, "note": note})
        if qacc is not None and not qacc.shape_mismatch:
            carried_q[name] = qacc.rel_l2()
            fix = list(dict.fromkeys([info.node, *reference.consumers.get(name, ())]))
            rows.append({**base, "stage": "quantized", "matched": True, **qacc.stats(),
                         "err_before": carried[name], "growth": growth(carried_q[name], carried[name]),
                         "fix_nodes": " ".join(fix), "note": ""})
    return rows


def first_divergence(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    """First tensor whose error crosses ``threshold`` while its inputs are below it; marks the row.

    ``kind`` is 'jump' when the error at least doubles there (one layer did it), 'gradual' when small
    per-layer errors merely accumulated past the threshold (see the growth ranking instead).
    """
    for row in rows:
        err = row["rel_l2"]
        if err is not None and err > threshold and row["err_before"] <= threshold:
            row["first_divergence"] = True
            return {**row, "kind": "jump" if row["growth"] >= JUMP else "gradual"}
    return None


def top_growth(rows: Sequence[dict[str, Any]], n: int = 10, floor: float = 0.0) -> list[dict[str, Any]]:
    """The ``n`` rows with the largest error growth among those whose error exceeds ``floor``."""
    ranked = [r for r in rows if r["growth"] is not None and r["rel_l2"] > floor]
    return sorted(ranked, key=lambda r: (-r["growth"], r["order"]))[:n]


@dataclass
class Explanation:
    """Everything the layer-by-layer comparison of one candidate found."""

    candidate: str
    precision: str
    threshold: float
    images: int
    rows: list[dict[str, Any]]
    first: dict[str, Any] | None  # first divergence in the instrumented run
    top: list[dict[str, Any]]
    logits: dict[str, Any]  # instrumented candidate vs reference, on the explain images
    deployed_logits: dict[str, Any]  # deployed candidate vs reference, same images
    fidelity: dict[str, Any]  # instrumented vs deployed candidate
    faithful: bool  # the instrumented run reproduces the deployed one (within tolerance)
    deployed: Any  # search.DeployedSearch | None
    matched: int
    quantized_views: int
    reference_tensors: int
    settings: dict[str, Any]
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Run:
    """The instrumented pass over the images: accumulated figures and both logits."""

    values: dict[str, Accumulator] = field(default_factory=dict)
    quantized: dict[str, Accumulator] = field(default_factory=dict)
    ref_logits: list[np.ndarray] = field(default_factory=list)
    cand_logits: list[np.ndarray] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"reference": 0.0, "candidate": 0.0, "compare": 0.0})


def _instrumented(reference: Capture, candidate: Capture, images: np.ndarray, chunk: int,
                  deadline: Deadline) -> _Run:
    run = _Run()
    for start in range(0, len(images), chunk):
        deadline.check(f"instrumented images {start}..")
        batch = np.ascontiguousarray(images[start:start + chunk])
        t0 = time.perf_counter()
        ref = reference.run(batch)
        t1 = time.perf_counter()
        cand = candidate.run(batch)
        t2 = time.perf_counter()
        # A quantised view of a tensor the reference does not expose (an Identity before a FakeQuantize)
        missing = [t for t in cand.quantized if t not in ref.values and t in reference.probeable()]
        if missing:
            ref.values.update(reference.values(missing, batch))
        for target, source in ((run.values, cand.values), (run.quantized, cand.quantized)):
            for name, value in source.items():
                if name in ref.values:
                    target.setdefault(name, Accumulator()).add(ref.values[name], value, len(batch))
        run.seconds["reference"] += t1 - t0
        run.seconds["candidate"] += t2 - t1
        run.seconds["compare"] += time.perf_counter() - t2
        run.ref_logits.append(ref.logits)
        run.cand_logits.append(cand.logits)
    return run


def _hint_note(settings: dict[str, Any]) -> list[str]:
    asked, ran = settings.get("config", {}).get("INFERENCE_PRECISION_HINT"), settings.get("effective_hint")
    if asked and ran and asked != ran:
        return [f"asked INFERENCE_PRECISION_HINT={asked} but the device runs {ran}: this CPU lacks native "
                f"{asked}, so this candidate measures {ran}"]
    return []


def explain(reference: Capture, candidate: Capture, graph: GraphIndex, images: np.ndarray, *, chunk: int = 2,
            threshold: float | None = None, top_n: int = 10, search: str = "auto", tolerance: float | None = None,
            deadline: Deadline | None = None) -> Explanation:
    """Compare ``candidate`` with ``reference`` tensor by tensor on ``images``.

    The instrumented runs take ``chunk`` images at a time (figures are accumulated); the deployed run takes
    all images in the candidate's deployed batch. ``search``: 'auto' runs the deployed-run search when the
    instrumented candidate does not reproduce the deployed one (final logits differ by more than
    ``tolerance``, relative L2; default a tenth of the threshold: ORT's int8 kernels round differently from
    its simulated Q/DQ by ~1e-2, which is no reason to distrust the per-layer figures), 'always' or 'never'.
    A ``deadline`` that passes during the search keeps what the instrumented run found and says so in
    ``notes``.
    """
    from bench.explain.search import localise_deployed

    deadline = deadline or Deadline(None)
    threshold = default_threshold(candidate.precision) if threshold is None else threshold
    tolerance = threshold / 10 if tolerance is None else tolerance
    run = _instrumented(reference, candidate, images, chunk, deadline)
    t0 = time.perf_counter()
    deployed_all = candidate.deployed(images)
    seconds = {**run.seconds, "deployed": time.perf_counter() - t0}
    ref_all, cand_all = np.concatenate(run.ref_logits), np.concatenate(run.cand_logits)
    fidelity = logit_agreement(deployed_all, cand_all)
    faithful = fidelity["rel_l2"] <= tolerance
    rows = build_rows(graph, candidate.label, run.values, run.quantized, candidate.names.reads_quantized)
    settings = candidate.describe()
    notes = _hint_note(settings)
    if not faithful:
        notes.append(f"the instrumented run is not the deployed run: final logits differ by rel L2 "
                     f"{fidelity['rel_l2']:.3g} (top-1 {fidelity['top1_agree']}/{fidelity['n']}); exposing "
                     f"tensors changed what the runtime fuses, so per-layer errors of the instrumented run "
                     f"describe the unfused model")
    deployed = None
    if search == "always" or (search == "auto" and not faithful):
        size = min(candidate.deploy_batch() or len(images), len(images))
        try:
            deployed = localise_deployed(reference, candidate, graph, np.ascontiguousarray(images[:size]),
                                         threshold, deployed_all[:size], tolerance, deadline)
            seconds["search"] = deployed.seconds
        except ExplainTimeout as exc:
            notes.append(f"deployed-run search not finished: {exc}")
    return Explanation(
        candidate.label, candidate.precision, threshold, len(images), rows, first_divergence(rows, threshold),
        top_growth(rows, top_n, floor=threshold / 10), logit_agreement(ref_all, cand_all),
        logit_agreement(ref_all, deployed_all), fidelity, faithful, deployed,
        sum(r["matched"] for r in rows if r["stage"] == "output"), len(run.quantized), len(graph.tensors),
        settings, seconds, notes)


def summary(ex: Explanation) -> dict[str, Any]:
    """JSON-friendly digest without the per-layer rows (they go to the CSV)."""
    pick = ("stage", "tensor", "node", "op_type", "block", "layer", "rel_l2", "err_before", "growth", "cosine",
            "fix_nodes")
    out = {k: v for k, v in asdict(ex).items() if k not in ("rows", "first", "top", "deployed")}
    out["first"] = {k: ex.first[k] for k in (*pick, "kind")} if ex.first else None
    out["top"] = [{k: r[k] for k in pick} for r in ex.top]
    out["deployed"] = asdict(ex.deployed) if ex.deployed is not None else None
    return out
