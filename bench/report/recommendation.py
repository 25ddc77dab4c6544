"""The report's *Recommendation* section (per model and place, for budgets given in bench.yaml's ``recommend:``
section or on ``report``'s command line), the rows ``bench recommend`` prints too, and which cells to star on
the latency-vs-accuracy figures."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.budgets import Budgets
from bench.records import LoadedRecord
from bench.report.choice import Recommendation, recommend
from bench.report.judge import Judged, cell_identity
from bench.report.markdown import md_table
from bench.table import ms, one_line

HEADER = ("verdict", "configuration", "LAT ms", "images/s", "drop pts (95 % upper)", "why")


@dataclass
class Recommended:
    """The recommendations of one report: the budgets, where they came from, and one per model and place."""

    budgets: Budgets
    source: str  # "bench.yaml" | "the command line"
    recommendations: list[Recommendation]
    results: list[Path]

    def chosen(self) -> set[tuple]:
        """The identities (``judge.cell_identity``) of the chosen configurations."""
        return {cell_identity(r.choice.cell) for r in self.recommendations if r.choice is not None}

    def command(self, model: str) -> str:
        """The ``bench recommend`` command that prints this recommendation with its commands."""
        args = [*map(str, self.results), "--model", model, *self.budgets.flags()]
        return "python -m bench recommend " + " ".join(map(shlex.quote, args))


def recommended(records: Sequence[LoadedRecord], budgets: Budgets, source: str, results: Sequence[Path]) -> Recommended:
    return Recommended(budgets, source, recommend(records, budgets), [Path(p) for p in results])


def untrained_banner(rec: Recommendation) -> str:
    return (f"UNTRAINED WEIGHTS: every record of {rec.model} here was made on untrained weights, so its drift says "
            "how far each runtime strays from Paddle on a random network, not what a trained model would lose; "
            "measure with --weights official (or your own) before deploying.")


def margins(j: Judged, budgets: Budgets) -> str:
    """How far the configuration is inside each budget."""
    parts = []
    if budgets.max_latency_ms is not None and j.latency is not None:
        parts.append(f"{ms(budgets.max_latency_ms - j.latency)} ms under {budgets.max_latency_ms:g} ms")
    if budgets.min_throughput is not None and j.throughput is not None:
        parts.append(f"{j.throughput - budgets.min_throughput:.4g} images/s over {budgets.min_throughput:g}")
    if budgets.max_drop is not None and j.drop is not None:
        parts.append(f"drop bound {budgets.max_drop - j.drop.upper:.2f} points under {budgets.max_drop:g}")
    return "margin: " + ", ".join(parts) if parts else "no budget to hold a margin to"


def points(value: float) -> str:
    return f"{round(value, 2) + 0.0:.2f}"  # + 0.0: never "-0.00"


def _row(verdict: str, j: Judged, why: str) -> tuple[str, ...]:
    drop = "" if j.drop is None else f"{points(j.drop.value)} (<= {points(j.drop.upper)})"
    return (verdict, j.label, "" if j.latency is None else ms(j.latency),
            "" if j.throughput is None else f"{j.throughput:.1f}", drop, one_line(why, 200))


def rows(rec: Recommendation) -> list[tuple[str, ...]]:
    """The rows, best on the objective first: the rejected ones better than the choice, the choice (with its
    margins), the ones tied with it."""
    shown = {id(j) for j in rec.rejected} | {id(j) for j in rec.tied} | ({id(rec.choice)} if rec.choice else set())
    out = []
    for j in (j for j in rec.judged if id(j) in shown):
        if j is rec.choice:
            tie = f"; tied within noise with {len(rec.tied)}, chosen for its smaller drift bound" if rec.tied else ""
            out.append(_row("CHOSEN", j, margins(j, rec.budgets) + tie))
        elif j.qualifies:
            out.append(_row("tied", j, "within noise of the best on the objective; larger drift bound"))
        else:
            out.append(_row("rejected", j, "; ".join(r.text for r in j.rejections)))
    return out


def header(percentile: str) -> tuple[str, ...]:
    return tuple(h.replace("LAT", percentile) for h in HEADER)


def drop_bases(rec: Recommendation) -> str:
    bases = sorted({j.drop.basis for j in rec.judged if j.drop is not None})
    return f"drop: percentage points of top-1 from Paddle, judged on {' / '.join(bases)}" if bases else ""


def section_recommendation(ctx) -> list[str]:
    """``## Recommendation``: per model and place, the choice under the budgets and the better ones rejected."""
    found = ctx.recommended
    if found is None:
        return []
    out = ["## Recommendation", "",
           f"Budgets ({found.source}): {found.budgets.describe()}. Judged conservatively: latency on its "
           f"{found.budgets.percentile}, drift on the upper end of its 95 % interval (top-1 on labels where the "
           "records have them, else agreement with Paddle); a timing measured under load, an error, a missing "
           "figure or untrained weights beside trained ones reject a configuration. Among configurations tied "
           "within noise on the objective, the smaller drift bound wins. A choice of the latency scenario is "
           "starred on the latency-vs-accuracy figure of its batch.", ""]
    if not found.recommendations:
        return out + ["No configuration at these budgets' batch in the records.", ""]
    for rec in found.recommendations:
        out += [f"### {rec.model} on {rec.where}", ""]
        out += [f"**{untrained_banner(rec)}**", ""] if rec.untrained else []
        table = rows(rec)
        out += [md_table(header(found.budgets.percentile), table), ""] if table else []
        out += [f"No configuration qualifies: {rec.binding}.", ""] if rec.choice is None else []
        bases = drop_bases(rec)
        out += [(f"{bases}. " if bases else "") + f"`{found.command(rec.model)}` prints the commands that make and "
                "run the choice.", ""]
    return out
