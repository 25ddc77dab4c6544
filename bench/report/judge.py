"""One configuration (a cell) judged against deployment budgets (``bench.budgets``): its figures as judged, and
every reason it cannot be deployed under them.

Judged conservatively:

- latency by its percentile (p90 unless told otherwise) of one batch; in the throughput scenario, of one
  request while the others were in flight;
- drift by the upper end of the 95 % interval of its top-1 drop, in percentage points: on labels when the
  record has them (minus the lower end of the paired interval of candidate - Paddle top-1, ``top1_delta_ci``),
  else on agreement with Paddle (100 - the lower end of agreement's Wilson interval: the top-1 of an image can
  only change where its class flipped, so disagreement bounds the drop). Paddle fp32 without a drift result
  is the reference itself: drop 0;
- an error, a timing measured under load (``machine.contended``), a figure a budget needs and the record lacks,
  non-finite outputs, untrained weights where the same model has records of trained ones, and a screening
  measurement of ``bench tune`` (short, no drift pass) each reject the configuration, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bench.budgets import Budgets
from bench.report.results import Cell
from core.metrics import wilson_interval

# bench tune's screening rungs: short measurements without a drift pass, never a configuration to deploy
_SCREENING_RUN = re.compile(r"^tune-[0-9a-f]{10}-screen\d+$")

# rejection kinds that are a budget (the others say the measurement itself cannot be used)
BUDGET_KINDS = {"latency over budget": "latency", "throughput under budget": "throughput",
                "drift interval above budget": "drift"}


def screening_run_id(tune_id: str, rung: int) -> str:
    """The run id of a ``bench tune`` screening rung (``tune_id``: ``tune-`` and 10 hex digits)."""
    return f"{tune_id}-screen{rung}"


def is_screening(run_id: Any) -> bool:
    return bool(_SCREENING_RUN.match(str(run_id)))


@dataclass(frozen=True)
class Drop:
    """Top-1 drop from Paddle in percentage points: the point estimate and the upper end of its 95 % interval."""

    value: float
    upper: float
    basis: str  # "top-1 on labels" | "agreement with Paddle" | "reference"
    n: int | None = None  # images the drift pass compared

    @property
    def floor(self) -> float | None:
        """The smallest upper end ``n`` images can give (no image flipped): what a budget below it cannot meet."""
        if not self.n or self.basis == "reference":
            return None
        return 100 * (1 - wilson_interval(self.n, self.n)[0])


def drop_of(cell: Cell) -> Drop | None:
    """The cell's top-1 drop as judged (module docstring); None when it has no drift result to judge by."""
    drift = cell.drift
    if drift is None:
        return Drop(0.0, 0.0, "reference") if (cell.runtime, cell.precision) == ("paddle", "fp32") else None
    n = drift.number("n")
    n = int(n) if n else None
    delta, delta_ci = drift.number("top1_delta"), drift.interval("top1_delta_ci")
    if drift.labelled and delta is not None and delta_ci is not None:
        return Drop(-100 * delta, -100 * delta_ci[0], "top-1 on labels", n)
    agreement, agreement_ci = drift.number("agreement"), drift.interval("agreement_ci")
    if agreement is not None and agreement_ci is not None:
        return Drop(100 * (1 - agreement), 100 * (1 - agreement_ci[0]), "agreement with Paddle", n)
    return None


def trained(cell: Cell) -> bool | None:
    """``weights.trained`` as recorded (None: the record does not say)."""
    weights = cell.record.model.weights
    value = weights.get("trained") if isinstance(weights, dict) else None
    return value if isinstance(value, bool) else None


def where_of(cell: Cell) -> str:
    """Where the configuration ran: its target when the record names one, else its host."""
    target = getattr(cell.record, "target", None) or cell.environment.get("target")
    if isinstance(target, dict):
        target = target.get("name") or target.get("node")
    return str(target or cell.host)


def cell_identity(cell: Cell) -> tuple:
    """The configuration a cell stands for, as ``select_cells`` groups records (cell key, scope, host)."""
    return (*cell.record.cell_key, str(cell.scope), str(cell.host))


def config_label(cell: Cell) -> str:
    """The configuration in a few words: runtime, precision (what ran, when other), batch, opset, threads,
    scenario and graph level, e.g. ``ov bf16 (ran fp32) b1 opset 17 threads 2 throughput x4 optimize=gemm``."""
    ran = cell.ran
    precision = cell.precision if ran in (None, cell.precision) else f"{cell.precision} (ran {ran})"
    parts = [cell.runtime, precision, f"b{cell.batch}", f"opset {cell.opset}"]
    threads = cell.record.params.threads
    if threads:
        parts.append(f"threads {threads}")
    if cell.scenario != "latency":
        parts.append(f"throughput x{cell.record.params.requests or ' auto'}")
    parts += [p for p in str(cell.weights).split("+")[1:] if p.startswith("optimize=")]
    return " ".join(parts)


@dataclass(frozen=True)
class Rejection:
    kind: str  # see BUDGET_KINDS and _rejections
    detail: str

    @property
    def text(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


@dataclass
class Judged:
    """A configuration's figures as judged, and why it cannot be deployed (empty: it qualifies)."""

    cell: Cell
    latency: float | None  # ms at the budgets' percentile
    throughput: float | None  # images/s
    drop: Drop | None
    screening: bool = False
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def qualifies(self) -> bool:
        return not self.rejections

    @property
    def label(self) -> str:
        return config_label(self.cell)

    def objective(self, budgets: Budgets) -> float | None:
        return self.latency if budgets.objective == "latency" else self.throughput

    def rank(self, budgets: Budgets) -> tuple:
        """Sort key, best first; a configuration without the objective's figure sorts last."""
        value = self.objective(budgets)
        if value is None:
            return (1, 0.0)
        return (0, value if budgets.objective == "latency" else -value)

    @property
    def drop_bound(self) -> float:
        return self.drop.upper if self.drop is not None else float("inf")


def judge(cell: Cell, budgets: Budgets, screening: bool = False, reject_untrained: bool = False) -> Judged:
    """The cell's figures and every reason it is rejected under ``budgets`` (module docstring)."""
    ok = cell.ok
    judged = Judged(cell, cell.latency(budgets.percentile) if ok else None,
                    cell.timing_number("throughput_ips") if ok else None, drop_of(cell) if ok else None, screening)
    judged.rejections = list(_rejections(judged, budgets, reject_untrained))
    return judged


def _rejections(j: Judged, budgets: Budgets, reject_untrained: bool):
    cell = j.cell
    if not cell.ok:  # a skipped cell never ran (its runtime is not available there)
        yield Rejection("not measured" if cell.status == "skipped" else "error", cell.message or cell.status)
        return
    if j.screening:
        yield Rejection("screening only", "a short bench tune measurement without a drift pass; the search "
                                          "dropped it before its full measurement")
        return
    if cell.contention:
        yield Rejection("load-flagged timing", "; ".join(cell.contention))
    if reject_untrained and trained(cell) is False:
        yield Rejection("untrained weights", f"{cell.weights}: records of trained weights exist for this model")
    if cell.drift is not None and cell.drift.finite is False:
        yield Rejection("non-finite outputs", f"{cell.drift.raw('nonfinite_images')} image(s) with NaN/Inf")
    yield from _budget_rejections(j, budgets)


def _budget_rejections(j: Judged, budgets: Budgets):
    pct = budgets.percentile
    if budgets.objective == "latency" or budgets.max_latency_ms is not None:
        if j.latency is None:
            yield Rejection("not measured", f"no {pct} latency in the record")
        elif budgets.max_latency_ms is not None and j.latency > budgets.max_latency_ms:
            yield Rejection("latency over budget", f"{pct} {j.latency:.3g} ms > {budgets.max_latency_ms:g} ms")
    if budgets.objective == "throughput" or budgets.min_throughput is not None:
        if j.throughput is None:
            yield Rejection("not measured", "no throughput in the record")
        elif budgets.min_throughput is not None and j.throughput < budgets.min_throughput:
            yield Rejection("throughput under budget",
                            f"{j.throughput:.4g} images/s < {budgets.min_throughput:g} images/s")
    if budgets.max_drop is not None:
        if j.drop is None:
            yield Rejection("not measured", "no drift result in the record (run it with --drift)")
        elif j.drop.upper > budgets.max_drop:
            yield Rejection("drift interval above budget",
                            f"drop up to {j.drop.upper:.2f} points at 95 % ({j.drop.basis}) > {budgets.max_drop:g}")
