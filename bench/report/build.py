"""``python -m bench report [RESULTS...] [--out DIR]``: result records -> Markdown report + PNG/SVG plots.

The report holds, for every plot, the table behind it; the environment the runs recorded; and every note,
fallback, failed and skipped cell. Nothing is dropped silently: a failed cell reads ``error`` (with its
message), a field a record lacks reads ``missing``, and unreadable lines are listed with their line numbers.

When a cell (model, opset, batch, runtime, precision, weights, scope, host, cluster target) was run more than
once, the latest ``ok`` record measured without contention is used (else the latest ``ok``, else the latest
record of any status), and the report says so; the failed runs before it are counted as superseded, not listed.

Layout: ``results`` (the model: records -> cells, y values, order), ``sections`` and ``figures`` (Markdown
sections; the latter also draw, through ``plots``), ``markdown`` (table and number formats), and this module,
which puts them together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from bench.budgets import Budgets
from bench.records import ReadResult
from bench.report import plots
from bench.report.accuracy_axis import choose_y_metric
from bench.report.explain import section_explain
from bench.report.figures import section_accuracy, section_batch
from bench.report.markdown import atomic_write_text, md_escape
from bench.report.recommendation import recommended, section_recommendation
from bench.report.results import Cell, load_results, select_cells
from bench.report.sections import (
    Context,
    section_all_cells,
    section_contention,
    section_environment,
    section_failures,
    section_notes,
    section_reruns,
    series_extra_fn,
    series_key,
)
from bench.report.targets import section_targets
from bench.report.throughput import section_throughput_latency

log = logging.getLogger(__name__)

SECTIONS = (section_recommendation, section_accuracy, section_explain, section_batch, section_throughput_latency,
            section_targets,
            section_contention, section_all_cells, section_failures,
            section_notes, section_reruns, section_environment)


def build_report(results_paths: Sequence[Path], out_dir: Path, y_metric: str = "auto",
                 budgets: tuple[Budgets, str] | None = None) -> Path:
    """Write ``out_dir/report.md`` and ``out_dir/plots/*.png|svg`` from result records; return report.md.
    ``budgets``: (budgets, where they come from) of the *Recommendation* section; None: no such section."""
    results = load_results(results_paths)
    cells = select_cells(results.records)
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    extra = series_extra_fn(cells)
    # Only ok cells are ever plotted, so only theirs take a marker: a failed cell cannot shift the styles.
    styler = plots.Styler([series_key(c, extra) for c in cells if c.ok])
    ctx = Context(cells, out_dir, choose_y_metric(cells, y_metric), styler, extra)
    if budgets is not None:
        ctx.recommended = recommended(results.records, *budgets, results_paths)
    lines = _header(results, cells)
    for section in SECTIONS:
        lines += section(ctx)
    if results.problems:
        lines += ["## Unreadable lines", "", *(f"- {md_escape(p)}" for p in results.problems), ""]
    _remove_stale_plots(out_dir / "plots", ctx.written)
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    log.info("wrote %s", path)
    return path


def _header(results: ReadResult, cells: Sequence[Cell]) -> list[str]:
    counts = {s: sum(c.status == s for c in cells) for s in dict.fromkeys(c.status for c in cells)}
    lines = ["# Benchmark report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from {len(results.records)} "
             f"record(s) in {len(results.files)} file(s): "
             + ", ".join(f"`{p}` ({n})" for p, n in results.files) + ".", "",
             f"{len(cells)} cell(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".", ""]
    superseded = sum(c.superseded_errors for c in cells)
    if superseded:
        lines += [f"{superseded} superseded error record(s): failed runs of cells that ran again afterwards; each "
                  "cell shows its latest outcome (see *Re-runs*).", ""]
    if results.problems:
        lines += [f"**{len(results.problems)} unreadable line(s) skipped** (see *Unreadable lines*).", ""]
    return lines


def _remove_stale_plots(folder: Path, keep: Sequence[Path]) -> None:
    """Plots of an earlier report into the same folder would read as current; remove those not rewritten."""
    keep_names = {p.name for p in keep}
    for path in folder.iterdir():
        if path.suffix in (".png", ".svg") and path.name not in keep_names:
            path.unlink()
            log.info("removed stale plot %s", path)
