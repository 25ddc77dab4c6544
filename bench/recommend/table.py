"""A recommendation as the terminal shows it: one short table (the choice with its margin to each budget, every
configuration better on the objective with why it was rejected, the ones tied with the choice), then the
commands that make and run the choice; or, when nothing qualifies, which budget bound."""

from __future__ import annotations

from bench.recommend.commands import export_command, run_command
from bench.report.choice import Recommendation
from bench.report.judge import Judged
from bench.table import ms, one_line

HEADER = ("verdict", "configuration", "LAT ms", "images/s", "drop pts (95 % upper)", "why")
_TEXT_COLUMNS = (0, 1)


def untrained_banner(rec: Recommendation) -> str:
    return (f"UNTRAINED WEIGHTS: every record of {rec.model} here was made on untrained weights, so its drift says "
            "how far each runtime strays from Paddle on a random network, not what a trained model would lose; "
            "measure with --weights official (or your own) before deploying.")


def margins(j: Judged, rec: Recommendation) -> str:
    """How far the configuration is inside each budget."""
    b = rec.budgets
    parts = []
    if b.max_latency_ms is not None and j.latency is not None:
        parts.append(f"{ms(b.max_latency_ms - j.latency)} ms under {b.max_latency_ms:g} ms")
    if b.min_throughput is not None and j.throughput is not None:
        parts.append(f"{j.throughput - b.min_throughput:.4g} images/s over {b.min_throughput:g}")
    if b.max_drop is not None and j.drop is not None:
        parts.append(f"drop bound {b.max_drop - j.drop.upper:.2f} points under {b.max_drop:g}")
    return "margin: " + ", ".join(parts) if parts else "no budget to hold a margin to"


def _row(verdict: str, j: Judged, why: str) -> tuple[str, ...]:
    drop = "" if j.drop is None else f"{j.drop.value:.2f} (<= {j.drop.upper:.2f})"
    return (verdict, j.label, "" if j.latency is None else ms(j.latency),
            "" if j.throughput is None else f"{j.throughput:.1f}", drop, one_line(why, 200))


def rows(rec: Recommendation) -> list[tuple[str, ...]]:
    """The table's rows, best on the objective first: rejected ones, the choice, the ones tied with it."""
    shown = {id(j) for j in rec.rejected} | {id(j) for j in rec.tied}
    if rec.choice is not None:
        shown.add(id(rec.choice))
    out = []
    for j in rec.judged:
        if id(j) not in shown:
            continue
        if j is rec.choice:
            tie = f"; tied within noise with {len(rec.tied)}, chosen for its smaller drift bound" if rec.tied else ""
            out.append(_row("CHOSEN", j, margins(j, rec) + tie))
        elif j.qualifies:
            out.append(_row("tied", j, "within noise of the best on the objective; larger drift bound"))
        else:
            out.append(_row("rejected", j, "; ".join(r.text for r in j.rejections)))
    return out


def format_table(table: list[tuple[str, ...]], percentile: str) -> str:
    header = tuple(h.replace("LAT", percentile) for h in HEADER)
    table = [header, *table]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [c.ljust(widths[i]) if i in _TEXT_COLUMNS else c.rjust(widths[i]) for i, c in enumerate(row)]
        cells[-1] = row[-1]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def format_recommendation(rec: Recommendation) -> str:
    """The recommendation for one model and place, as printed."""
    lines = [f"{rec.model} on {rec.where}: {rec.budgets.describe()}"]
    if rec.untrained:
        lines.append(untrained_banner(rec))
    table = rows(rec)
    if table:
        lines += ["", format_table(table, rec.budgets.percentile)]
    others = len(rec.judged) - len(table)
    if others:
        lines.append(f"  ({others} other configuration(s), worse on the objective, not shown)")
    bases = sorted({j.drop.basis for j in rec.judged if j.drop is not None})
    if bases:
        lines.append(f"  drop: percentage points of top-1 from Paddle, judged on {' / '.join(bases)}")
    if rec.choice is None:
        lines += ["", f"no configuration qualifies: {rec.binding}"]
        return "\n".join(lines)
    export = export_command(rec.choice.cell)
    lines += ["", f"make it:  {export}" if export else f"make it:  (your own export: {rec.choice.cell.weights})",
              f"run it:   {run_command(rec.choice.cell)}"]
    return "\n".join(lines)
