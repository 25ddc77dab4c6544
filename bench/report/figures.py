"""The report's sections with a figure: latency vs accuracy (a figure per model family and batch, a panel
per model, the Pareto front ringed) and latency/throughput vs batch (a figure per model). Each figure comes
with the table behind it.

Only ``ok`` cells are plotted. A failed, skipped or invalid cell of a drawn group reads ``not plotted`` in
its table, with the reason. A group with no ok cell (a usage error's batch -3, an unknown model, a runtime
missing on this machine) is not drawn at all: an empty figure says nothing; its cells are in *All cells*
and *Failed and skipped cells*, and the section names the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import plots
from bench.report.accuracy_axis import YValue, y_label, y_value
from bench.report.judge import cell_identity
from bench.report.markdown import MISSING, WHISKERS, cell_value, fmt_ci, fmt_ms, latency_cells, md_table
from bench.report.results import Cell, batch_order, family_of, group_cells
from bench.report.sections import Context


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def plot_links(paths: Sequence[Path], out_dir: Path, alt: str) -> str:
    rel = {p.suffix: p.relative_to(out_dir).as_posix() for p in paths}
    return f"![{alt}]({rel['.png']})\n\n[SVG for print]({rel['.svg']})"


def not_drawn(groups: dict[Any, list[Cell]], name) -> list[str]:
    """The line naming the groups left undrawn for want of an ok cell (none when every group is drawn)."""
    if not groups:
        return []
    names = "; ".join(f"{name(key)} ({len(cells)} cell(s))" for key, cells in groups.items())
    return [f"Not drawn, no ok cell: {names}. Their records are listed under *Failed and skipped cells*.", ""]


def judge_front(entries: Sequence[tuple[Cell, plots.Point | None]]) -> list[Cell]:
    """The one rule of every front in the report: a contended cell's latency says as much about the other
    processes as about the runtime, so it is drawn but takes no part in the front (no faster/slower verdict,
    with or against it). Sets ``pareto`` on the judged points; returns the contended cells that were drawn."""
    judged = [p for c, p in entries if p is not None and not c.contention]
    for point, flag in zip(judged, plots.pareto_front([(p.x, p.y) for p in judged]), strict=True):
        point.pareto = flag
    return [c for c, p in entries if p is not None and c.contention]


def front_text(cell: Cell, point: plots.Point | None) -> str:
    """A table's front column: yes, no, no verdict (contended), or not plotted."""
    if point is None:
        return "not plotted"
    return "no verdict (contended)" if cell.contention else "yes" if point.pareto else "no"


def contended_caption(names: Sequence[str]) -> str:
    return f" Measured under contention, so left out of the front: {'; '.join(names)}." if names else ""


# --- latency vs accuracy ------------------------------------------------------------------------------------

def section_accuracy(ctx: Context) -> list[str]:
    # Latency here is one request at a time; the throughput scenario's cells have their own section.
    cells = [c for c in ctx.cells if c.scenario == "latency"] or ctx.cells
    out = ["## Latency vs accuracy", "",
           f"Y axis: {y_label(ctx.metric)}; x axis: p50 latency of one batch in ms ({WHISKERS}; vertical "
           "whiskers: 95 % interval). Ringed points joined by the dashed step line form the Pareto front of "
           "each panel: no other point there is both faster (lower p50) and more accurate. The front is "
           "drawn from point estimates; where the intervals overlap, the order of two points is not "
           "established." + (" Latency scenario cells only (one request at a time)."
                             if len(cells) < len(ctx.cells) else ""), ""]
    drawn, undrawn = group_cells(cells, lambda c: (family_of(c.model), c.batch))
    for (family, batch), cells in drawn.items():
        out += _accuracy_group(ctx, family, batch, cells)
    return out + not_drawn(undrawn, lambda key: f"{key[0]}, batch {key[1]}")


class _AccuracyGroup:
    """One figure's panels, table rows, and what was left out of it."""

    def __init__(self) -> None:
        self.panels: list[plots.Panel] = []
        self.rows: list[tuple] = []
        self.not_shown: list[str] = []
        self.contended: list[str] = []
        self.references: set[str] = set()

    def add_model(self, ctx: Context, model: str, cells: Sequence[Cell]) -> None:
        entries = []  # (cell, y, point or None)
        chosen = ctx.recommended.chosen() if ctx.recommended else set()
        for c in cells:
            y = y_value(c, ctx.metric, ctx.cells)
            p50, lo, hi = (c.latency(k) for k in ("p50", "p10", "p90"))
            point = None
            if c.ok and p50 is not None and y.value is not None:
                point = plots.Point(ctx.series(c), p50, lo, hi, y.value, y.lo, y.hi,
                                    chosen=cell_identity(c) in chosen)
                if y.source != "drift":
                    self.references.add(y.source)
            else:
                self.not_shown.append(f"{c.model} {ctx.series(c).label} ({_why_missing(c, p50, y)})")
            entries.append((c, y, point))
        contended = judge_front([(c, p) for c, _, p in entries])
        self.contended += [f"{c.model} {ctx.series(c).label}" for c in contended]
        for c, y, point in entries:
            self.rows.append((c.model, ctx.runtime(c), ctx.series(c).precision, c.opset, *latency_cells(c),
                              _y_text(c, y), _y_ci_text(c, y), front_text(c, point), _row_note(c, y)))
        self.panels.append(plots.Panel(model, [p for _, _, p in entries if p is not None]))

    def caption(self) -> str:
        caption = "Whiskers: latency p10 to p90 (horizontal), 95 % interval (vertical). Ringed: Pareto front."
        if any(p.chosen for panel in self.panels for p in panel.points):
            caption += " Starred: the configuration the Recommendation section chooses."
        if "reference" in self.references:
            caption += " Paddle FP32 is the reference: 100 % agreement by definition."
        elif self.references:
            caption += " Paddle's top-1 is the reference top-1 recorded with the other runtimes' drift results."
        caption += contended_caption(self.contended)
        if self.not_shown:
            caption += " Not plotted: " + "; ".join(self.not_shown) + "."
        return caption


def _accuracy_group(ctx: Context, family: str, batch: Any, cells: list[Cell]) -> list[str]:
    """One figure (a panel per model) and its table."""
    group = _AccuracyGroup()
    for model in dict.fromkeys(c.model for c in cells):
        group.add_model(ctx, model, [c for c in cells if c.model == model])
    ylabel = y_label(ctx.metric)
    title = f"{family}, batch {batch}: {ylabel.replace(' (%)', '')} vs latency"
    stem = ctx.out_dir / "plots" / f"latency_vs_{ctx.metric}_{slug(family)}_b{batch}"
    paths = plots.latency_accuracy_figure(group.panels, title, ylabel, f"p50 latency per batch of {batch} (ms)",
                                          group.caption(), ctx.styler, stem)
    ctx.written += paths
    header = ("model", "runtime", "precision", "opset", "p50 ms", "p10 ms", "p90 ms",
              ylabel.replace("(%)", "%"), "95 % interval", "Pareto front", "note")
    return [f"### {family}, batch {batch}", "", plot_links(paths, ctx.out_dir, title), "",
            md_table(header, group.rows), ""]


def _why_missing(c: Cell, p50: float | None, y: YValue) -> str:
    if not c.ok:
        return c.status
    return "latency missing" if p50 is None else y.source


def _y_text(c: Cell, y: YValue) -> str:
    if c.failed:
        return c.status
    if y.value is None:
        return MISSING
    return f"{y.value:.2f}" + (" (reference)" if y.source == "reference" else "")


def _y_ci_text(c: Cell, y: YValue) -> str:
    if c.failed:
        return c.status
    if y.lo is not None and y.hi is not None:
        return fmt_ci([y.lo / 100, y.hi / 100])
    return "none (reference)" if y.source == "reference" else MISSING


def _row_note(c: Cell, y: YValue) -> str:
    if not c.ok:
        return c.message  # error, skipped or invalid: say why
    notes = [] if y.source in ("drift", "reference") else [y.source]
    if c.contention:
        notes.append("contended: " + "; ".join(c.contention))
    if len(c.history) > 1:
        notes.append(f"latest ok of {len(c.history)} runs")
    return "; ".join(notes)


# --- latency, throughput and memory vs batch ---------------------------------------------------------------

def section_batch(ctx: Context) -> list[str]:
    out = ["## Latency, throughput and memory vs batch", "",
           f"A figure per model and scenario. Latency: p50 of one batch in ms ({WHISKERS}); in the throughput "
           "scenario, of each request while the others were in flight. Throughput: images per second over the "
           "timed loop's wall time. Memory: the cell process's peak resident memory over load, warm-up and "
           "timed loop (`load +MiB`: what loading the model added).", ""]
    drawn, undrawn = group_cells(ctx.cells, lambda c: (c.model, c.scenario))
    for (model, scenario), cells in drawn.items():
        out += _batch_model(ctx, model, scenario, cells)
    return out + not_drawn(undrawn, lambda key: key[0] if key[1] == "latency" else f"{key[0]}, {key[1]} scenario")


def _batch_model(ctx: Context, model: str, scenario: str, cells: Sequence[Cell]) -> list[str]:
    """One model's figure for one scenario (latency, throughput and memory panels) and its table."""
    points, rows, not_shown = [], [], []
    for c in sorted(cells, key=batch_order):
        p50, lo, hi = (c.latency(k) for k in ("p50", "p10", "p90"))
        ips, peak = c.timing_number("throughput_ips"), c.memory("peak_mib")
        per_image = p50 / c.batch if p50 is not None and c.batch else None
        note = c.message if not c.ok else "; ".join(
            (["contended (see *Measured under contention*)"] if c.contention else []) + list(c.harness_notes))
        rows.append((ctx.runtime(c), ctx.series(c).precision, c.opset, c.batch, c.requests, *latency_cells(c),
                     cell_value(c, per_image, fmt_ms), cell_value(c, ips, lambda v: f"{v:.1f}"),
                     cell_value(c, peak, lambda v: f"{v:.0f}"),
                     cell_value(c, c.memory("load_increase_mib"), lambda v: f"{v:+.0f}"), note))
        if c.ok and c.batch and (p50 is not None or ips is not None):
            key = ctx.series(c)
            points.append((plots.Point(key, c.batch, y=p50, y_lo=lo, y_hi=hi), plots.Point(key, c.batch, y=ips),
                           plots.Point(key, c.batch, y=peak)))
        name = f"{ctx.series(c).label} batch {c.batch}"
        if not c.ok:
            not_shown.append(f"{name} ({c.status})")
        else:
            not_shown += [f"{name} {what} (missing)" for what, v in
                          (("latency", p50), ("throughput", ips), ("memory", peak)) if v is None]
    title = f"{model}, {scenario} scenario: latency, throughput and memory vs batch"
    caption = "Latency whiskers: p10 to p90."
    if not_shown:
        caption += " Not plotted: " + "; ".join(not_shown) + "."
    suffix = "" if scenario == "latency" else f"_{scenario}"  # latency keeps the name reports always used
    stem = ctx.out_dir / "plots" / f"batch_{slug(model)}{suffix}"
    paths = plots.batch_figure(points, title, caption, ctx.styler, stem)
    ctx.written += paths
    return [f"### {model}, {scenario} scenario", "", plot_links(paths, ctx.out_dir, title), "",
            md_table(("runtime", "precision", "opset", "batch", "requests", "p50 ms", "p10 ms", "p90 ms",
                      "p50 ms per image", "throughput images/s", "peak MiB", "load +MiB", "note"), rows), ""]
