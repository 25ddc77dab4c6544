"""The report's throughput-vs-latency section: per model, every configuration that ran (runtime, precision,
batch, and requests in flight for the throughput scenario) as images/s against the p50 latency of a request,
with the front a reader picks from for a latency budget, and the table behind it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.report import plots
from bench.report.figures import contended_caption, front_text, judge_front, not_drawn, plot_links, slug
from bench.report.markdown import cell_value, fmt_ms, md_table
from bench.report.plots_throughput import throughput_latency_figure
from bench.report.results import Cell, batch_order, group_cells
from bench.report.sections import Context, series_extra_fn, series_key

HEADER = ("runtime", "precision", "opset", "scenario", "batch", "requests", "p50 ms", "p90 ms", "p99 ms",
          "images/s", "peak MiB", "front", "images/s vs latency scenario", "note")


def section_throughput_latency(ctx: Context) -> list[str]:
    out = ["## Throughput vs latency", "",
           "A figure per model: each point is one configuration that ran (runtime, precision, opset; labelled "
           "`b<batch>` for the latency scenario, one request at a time, and `b<batch> x<N>` for the throughput "
           "scenario, N requests in flight). x: p50 latency of one request in ms (whiskers p10 to p90), y: "
           "images per second. Ringed points joined by the dashed step line form the front: no other "
           "configuration gives more images/s at a lower p50. A cell measured under contention is drawn but "
           "judged against nothing (`front`: no verdict), as in every front of this report. For a latency "
           "budget, pick the highest ringed point left of it, then check its p90 and p99 in the table.", ""]
    extra = series_extra_fn(ctx.cells, with_requests=False)  # a series spans every batch and concurrency
    drawn, undrawn = group_cells(ctx.cells, lambda c: c.model)
    for model, cells in drawn.items():
        out += _model_section(ctx, model, cells, extra)
    return out + not_drawn(undrawn, str)


def _point_label(c: Cell) -> str:
    return f"b{c.batch}" if c.scenario == "latency" else f"b{c.batch} x{c.requests or '?'}"


def _model_section(ctx: Context, model: str, cells: Sequence[Cell], extra: Callable[[Cell], str]) -> list[str]:
    entries: list[tuple[Cell, plots.Point | None]] = []
    not_shown = []
    for c in sorted(cells, key=batch_order):
        p50, ips = c.latency("p50"), c.timing_number("throughput_ips")
        point = None
        if c.ok and p50 is not None and ips is not None:
            point = plots.Point(series_key(c, extra), p50, c.latency("p10"), c.latency("p90"), ips)
        else:
            not_shown.append(f"{c.runtime} {c.precision} {_point_label(c)} ({c.status if not c.ok else 'missing'})")
        entries.append((c, point))
    contended = judge_front(entries)
    title = f"{model}: throughput vs latency"
    caption = "Ringed: the front (no configuration is both faster and higher in images/s)." + contended_caption(
        [f"{c.runtime} {c.precision} {_point_label(c)}" for c in contended])
    if not_shown:
        caption += " Not plotted: " + "; ".join(not_shown) + "."
    stem = ctx.out_dir / "plots" / f"throughput_latency_{slug(model)}"
    paths = throughput_latency_figure([(p, _point_label(c)) for c, p in entries if p is not None], title, caption,
                                      ctx.styler, stem)
    ctx.written += paths
    twins = {_pair_key(c): c for c in cells if c.ok and c.scenario == "latency"}
    rows = [_row(ctx, c, p, twins.get(_pair_key(c))) for c, p in entries]
    return [f"### {model}", "", plot_links(paths, ctx.out_dir, title), "", md_table(HEADER, rows), ""]


def _pair_key(c: Cell) -> tuple:
    """The latency-scenario twin of a cell: everything but the scenario and the requests."""
    return (c.opset, c.batch, c.runtime, c.precision, c.weights, c.scope, c.host)


def _gain(c: Cell, twin: Cell | None) -> str:
    """A throughput cell's images/s over its latency twin's, and why it is no gain where the records say."""
    ips, twin_ips = c.timing_number("throughput_ips"), twin.timing_number("throughput_ips") if twin else None
    if c.scenario != "throughput" or not c.ok or ips is None or not twin_ips:
        return ""
    text = f"x{ips / twin_ips:.2f}"
    if ips > twin_ips:
        return text
    why = []
    if c.harness_notes:
        why.append("see note")
    busy, cores = twin.timing_number("cores_busy"), (twin.environment.get("cpu") or {}).get("usable_cores")
    if busy is not None and cores and busy >= 0.75 * cores:
        why.append(f"one request at a time already kept {busy:.2f} of {cores} cores busy")
    return f"{text} ({'; '.join(why)})" if why else text


def _row(ctx: Context, c: Cell, point: plots.Point | None, twin: Cell | None) -> tuple:
    ips, gain = c.timing_number("throughput_ips"), _gain(c, twin)
    note = c.message if not c.ok else "; ".join(
        (["contended (see *Measured under contention*)"] if c.contention else []) + list(c.harness_notes))
    return (ctx.runtime(c), ctx.series(c).precision, c.opset, c.scenario_label, c.batch, c.requests,
            *(cell_value(c, c.latency(k), fmt_ms) for k in ("p50", "p90", "p99")),
            cell_value(c, ips, lambda v: f"{v:.1f}"), cell_value(c, c.memory("peak_mib"), lambda v: f"{v:.0f}"),
            front_text(c, point), gain, note)
