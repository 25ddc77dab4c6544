"""``python -m bench compare A B``: what changed between two result sets, and what is within noise.

Cells are matched on (model, opset, batch, runtime, precision, weights, scope, scenario, requests and threads
asked); the host is deliberately not part of the match, so two machines can be compared. Each side uses its
latest ok record per cell (the latest quiet one when it has one: ``bench.report.results.select_cells``).

Noise model. Each run records the coefficient of variation (CV) of its per-iteration latencies. The ratio
B/A of a figure gets the band ``ratio * exp(+-sqrt(ln(1 + n_A)^2 + ln(1 + n_B)^2))`` with ``n = max(CV,
min_noise)``: each side's figure is taken as uncertain by a factor of (1 + its CV), combined in quadrature
on the log scale. A change is "within noise" when the band contains 1. Per-iteration CV is a deliberately
wide yardstick (the median of many iterations is steadier than one iteration), but it is what every record
carries, and run-to-run drift on a shared machine is often of that size. A missing CV gives "noise
unknown", never "within noise". A cell measured under contention (other processes busy on its cores,
``machine.contended``) gets no faster/slower verdict at all: its CV does not capture the slowdown that another
process's load imposes on every iteration, so the ratio is shown but called "contended", and the reasons
are listed. Drift figures (agreement, top-1) are compared by their 95 % intervals:
"within noise" when the two intervals overlap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report.markdown import MISSING, fmt_ms, md_table
from bench.report.results import Cell, load_results, select_cells

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ratio:
    ratio: float
    lo: float | None
    hi: float | None
    within_noise: bool | None  # None: the noise of a side is unknown


def ratio_with_noise(a: float, noise_a: float | None, b: float, noise_b: float | None,
                     min_noise: float = 0.0) -> Ratio:
    """B/A with its noise band (see the module docstring)."""
    if a <= 0 or b <= 0:
        raise ValueError(f"ratios need positive figures, got {a} and {b}")
    ratio = b / a
    if noise_a is None or noise_b is None:
        return Ratio(ratio, None, None, None)
    half = math.hypot(math.log1p(max(noise_a, min_noise)), math.log1p(max(noise_b, min_noise)))
    lo, hi = ratio * math.exp(-half), ratio * math.exp(half)
    return Ratio(ratio, lo, hi, lo <= 1.0 <= hi)


def _side_text(cell: Cell | None, side: str) -> str | None:
    """Why a side has no figure, or None when it has one."""
    if cell is None:
        return f"missing in {side}"
    if not cell.ok:
        return f"{cell.status}: {cell.message}"
    return None


Figure = Callable[[Cell], float | None]  # a cell's figure: p50 latency, throughput


def _figure_row(a: Cell | None, b: Cell | None, figure: Figure, fmt: Callable[[float], str], better: str,
                worse: str, min_noise: float) -> tuple[list[str], str]:
    """[A, B, B/A, band, verdict] for one figure, and a verdict class for the summary."""
    texts = [_side_text(a, "A"), _side_text(b, "B")]
    values = [figure(c) if c is not None else None for c in (a, b)]
    cvs = [c.latency("cv") if c is not None else None for c in (a, b)]
    shown = []
    for text, value, cv in zip(texts, values, cvs, strict=True):
        if text is not None:
            shown.append(text)
        elif value is None:
            shown.append(MISSING)
        else:
            shown.append(fmt(value) + (f" (±{100 * cv:.1f} %)" if cv is not None else " (CV missing)"))
    if a is None or b is None:
        verdict = "only in B" if a is None else "only in A"
        return shown + ["—", "—", verdict], verdict
    if any(t is not None for t in texts) or any(v is None or v <= 0 for v in values):
        return shown + ["—", "—", "not comparable"], "not comparable"
    r = ratio_with_noise(values[0], cvs[0], values[1], cvs[1], min_noise)
    band = "unknown" if r.lo is None else f"[{r.lo:.3f}, {r.hi:.3f}]"
    contended = [side for side, c in (("A", a), ("B", b)) if c.contention]
    if contended:
        verdict = f"no verdict: {' and '.join(contended)} contended"
    elif r.within_noise is None:
        verdict = "noise unknown"
    elif r.within_noise:
        verdict = "within noise"
    else:
        verdict = better if r.ratio < 1 else worse
    return shown + [f"{r.ratio:.3f}", band, verdict], verdict


# (metric, the drift field, its interval: a recorded one, or for top-1 the Wilson interval on n)
DRIFT_METRICS = (("top-1 agreement", "agreement", "agreement_ci"), ("top-1 accuracy", "candidate_top1", None))


def _drift_figure(cell: Cell | None, key: str, ci_key: str | None) -> tuple[float | None, tuple | None]:
    drift = cell.drift if cell is not None and cell.ok else None
    if drift is None:
        return None, None
    return drift.number(key), (drift.interval(ci_key) if ci_key else drift.top1_interval)


def _drift_side(cell: Cell | None, side: str, value: float | None, ci: tuple | None) -> str:
    why = _side_text(cell, side)
    if why is None and cell.drift is None:
        why = "drift missing"
    if why:
        return why
    if value is None:
        return MISSING
    return f"{100 * value:.2f}" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else " [interval missing]")


def _drift_verdict(va: float | None, ca: tuple | None, vb: float | None, cb: tuple | None) -> tuple[str, str]:
    """(B - A in pp, verdict): within noise when the two intervals overlap."""
    if va is None or vb is None:
        return "—", "not comparable"
    diff = f"{100 * (vb - va):+.2f}"
    if ca is None or cb is None:
        return diff, "noise unknown"
    if ca[0] <= cb[1] and cb[0] <= ca[1]:
        return diff, "within noise"
    return diff, "B higher" if vb > va else "B lower"


def _drift_rows(pairs: Sequence[tuple[Cell | None, Cell | None]]) -> list[tuple]:
    rows = []
    for a, b in pairs:
        if not any(c is not None and c.ok and c.drift is not None for c in (a, b)):
            continue
        for metric, key, ci_key in DRIFT_METRICS:
            (va, ca), (vb, cb) = _drift_figure(a, key, ci_key), _drift_figure(b, key, ci_key)
            if va is None and vb is None and ci_key is None:  # no top-1 on either side: labels were absent
                continue
            cols = [_drift_side(a, "A", va, ca), _drift_side(b, "B", vb, cb)]
            rows.append((*_label(a, b), metric, *cols, *_drift_verdict(va, ca, vb, cb)))
    return rows


def _label(a: Cell | None, b: Cell | None) -> tuple:
    c = a or b
    runtime = c.runtime if c.scenario == "latency" else f"{c.runtime} {c.scenario_label}"
    return c.model, c.batch, c.opset, runtime, c.precision


def _describe(name: str, paths: Sequence[Path], cells: Sequence[Cell]) -> str:
    hosts = sorted({str(c.host) for c in cells})
    commits = sorted({str(c.git.get("commit"))[:12] for c in cells})
    files = ", ".join(f"`{p}`" for p in paths)
    contended = sum(bool(c.contention) for c in cells)
    unknown = sum(c.ok and not isinstance(c.record.machine, dict) for c in cells)
    load = f"; {contended} measured under contention" if contended else ""
    if unknown:
        load += f"; {unknown} without load information (recorded before load awareness: assumed quiet)"
    return (f"**{name}**: {files}: {len(cells)} cell(s); host(s) {', '.join(hosts)}; "
            f"commit(s) {', '.join(commits)}{load}")


def match_cells(a_paths: Sequence[Path], b_paths: Sequence[Path]
                ) -> tuple[list[Cell], list[Cell], list[tuple[Cell | None, Cell | None]]]:
    """Each side's cells (the host not part of the cell), and the (A, B) pairs in order: A's, then B's own."""
    sides = [select_cells(load_results(paths).records, by_host=False) for paths in (a_paths, b_paths)]
    a_cells, b_cells = ({_match_key(c): c for c in cells} for cells in sides)
    order = list(dict.fromkeys([*a_cells, *b_cells]))
    return list(a_cells.values()), list(b_cells.values()), [(a_cells.get(k), b_cells.get(k)) for k in order]


def compare(a_paths: Sequence[Path], b_paths: Sequence[Path], min_noise: float = 0.0) -> str:
    """A Markdown comparison of result set B against result set A (ratios B/A with noise bands)."""
    a_cells, b_cells, pairs = match_cells(a_paths, b_paths)
    rows, verdicts = [], {"p50": [], "throughput": []}
    for a, b in pairs:
        p50, v1 = _figure_row(a, b, lambda c: c.latency("p50"), fmt_ms, "B faster", "B slower", min_noise)
        ips, v2 = _figure_row(a, b, lambda c: c.timing_number("throughput_ips"), lambda v: f"{v:.1f}",
                              "B lower", "B higher", min_noise)
        verdicts["p50"].append(v1)
        verdicts["throughput"].append(v2)
        rows.append((*_label(a, b), *p50, *ips))
    head = ("model", "batch", "opset", "runtime", "precision")
    floor = f" (at least {100 * min_noise:g} %)" if min_noise else ""
    header = (*head, "A p50 ms (CV)", "B p50 ms (CV)", "p50 B/A", "p50 band", "p50 verdict", "A images/s",
              "B images/s", "images/s B/A", "images/s band", "images/s verdict")
    lines = ["# Comparison: B against A", "",
             _describe("A", a_paths, a_cells), "",
             _describe("B", b_paths, b_cells), "",
             "Ratios are B/A: below 1 means B has the lower p50 latency (faster) or the lower throughput. "
             "Band: ratio x exp(±sqrt(ln²(1+CV_A) + ln²(1+CV_B))), CV = each run's per-iteration "
             f"coefficient of variation{floor}; **within noise** when the band contains 1. Cells are "
             "matched on model, opset, batch, runtime, precision, weights, scope, scenario, and the requests in "
             "flight and threads asked.",
             "", _summary(verdicts), "", "## Latency and throughput", "",
             md_table(header, rows), "", *_contention_section(pairs)]
    drift_rows = _drift_rows(pairs)
    lines += ["## Drift from Paddle", "",
              "Percent with 95 % intervals; difference B - A in percentage points; **within noise** when the "
              "intervals overlap.", ""]
    lines += [md_table((*head, "metric", "A %", "B %", "B - A pp", "verdict"), drift_rows) if drift_rows
              else "No cell has a drift result on either side.", ""]
    return "\n".join(lines)


def _contention_section(pairs: Sequence[tuple[Cell | None, Cell | None]]) -> list[str]:
    rows = [(*_label(a, b), side, "; ".join(c.contention))
            for a, b in pairs for side, c in (("A", a), ("B", b)) if c is not None and c.contention]
    if not rows:
        return []
    return ["## Measured under contention", "",
            "No faster/slower verdict is given for these cells: other processes were busy on the cores they "
            "ran on, which slows every iteration without showing in the CV. Measure again on a quiet machine "
            "(README: Quiet measurements).", "",
            md_table(("model", "batch", "opset", "runtime", "precision", "side", "why"), rows), ""]


def _match_key(cell: Cell) -> tuple:
    return (cell.model, cell.opset, cell.batch, cell.runtime, cell.precision, str(cell.weights),
            str(cell.scope), cell.scenario, cell.record.params.requests, cell.record.params.threads)


def _summary(verdicts: dict[str, list[str]]) -> str:
    parts = []
    for name, values in verdicts.items():
        counts = {v: values.count(v) for v in dict.fromkeys(values)}
        parts.append(f"{name}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "Summary, per cell: " + "; ".join(parts) + "."
