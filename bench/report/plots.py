"""Figures for the report: latency vs accuracy (with the Pareto front) and latency/throughput vs batch.

Every series is told apart by marker shape, marker fill, line style *and* colour, so the figures survive
grey print: the runtime sets colour, marker family and line style, the opset picks the marker within that
family, and the precision sets the fill (fp32 full, bf16 left half, fp16 empty, int8 bottom half).
Figures are written as PNG (documents) and SVG (print), each atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from core.files import atomic_open  # noqa: E402

log = logging.getLogger(__name__)

FORMATS = ("png", "svg")
DPI = 150
# SVG element ids are hashes salted with this (by default a random salt per process): fixed, so that rebuilding
# a report from the same records gives the same bytes.
SVG_HASHSALT = "paddle-onnx-bench report"

# Okabe-Ito colours (colour-blind safe); each runtime also has its own markers and line style.
_RUNTIME_STYLE = {
    "paddle": ("#000000", ("s", "P", "8"), "-"),
    "ort": ("#0072B2", ("o", "X", "H"), "--"),
    "ov": ("#D55E00", ("^", "v", ">"), "-."),
    "trt": ("#009E73", ("D", "p", "<"), ":"),
}
_OTHER_STYLES = [("#CC79A7", ("<", ">"), (0, (5, 1, 1, 1, 1, 1))), ("#E69F00", ("h", "8"), (0, (1, 3))),
                 ("#56B4E9", ("*", "H"), (0, (8, 2)))]
_PRECISION_FILL = {"fp32": "full", "bf16": "left", "fp16": "none", "int8": "bottom"}
# The recommended point: a large open star around its own marker, drawn over it.
_CHOSEN_STYLE = {"linestyle": "none", "marker": "*", "fillstyle": "none", "color": "black", "markeredgewidth": 1.3}


@dataclass(frozen=True)
class SeriesKey:
    """What one legend entry stands for."""

    runtime: str
    precision: str
    opset: int | None
    extra: str = ""  # e.g. host or scope when those vary within one report

    @property
    def label(self) -> str:
        opset = f"opset {self.opset}" if self.opset is not None else "opset ?"
        return " ".join(p for p in (self.runtime, self.precision, opset, self.extra) if p)


@dataclass
class Point:
    """One plotted cell. Latency in ms; ``y`` in % (or throughput in images/s for batch plots)."""

    series: SeriesKey
    x: float
    x_lo: float | None = None
    x_hi: float | None = None
    y: float | None = None
    y_lo: float | None = None
    y_hi: float | None = None
    pareto: bool = False
    chosen: bool = False  # the recommended configuration (bench.report.choice): starred


@dataclass
class Panel:
    """One axes of a latency-vs-accuracy figure (one model, or a whole family)."""

    title: str
    points: list[Point]


def pareto_front(xy: Sequence[tuple[float, float | None]]) -> list[bool]:
    """Which points no other point beats: lower-or-equal x (latency) and higher-or-equal y, one strictly.

    Points whose y is None are never on the front. Identical points are all on it.
    """
    flags = []
    for i, (xi, yi) in enumerate(xy):
        if yi is None or xi is None:
            flags.append(False)
            continue
        dominated = any(
            j != i and yj is not None and xj is not None and xj <= xi and yj >= yi and (xj < xi or yj > yi)
            for j, (xj, yj) in enumerate(xy)
        )
        flags.append(not dominated)
    return flags


class Styler:
    """Consistent styles for every series of one report.

    Within a runtime, each (opset, extra) variant gets its own marker; precision only changes the fill.
    """

    def __init__(self, keys: Sequence[SeriesKey]) -> None:
        self._variants: dict[str, list[tuple]] = {}
        for key in keys:
            variants = self._variants.setdefault(key.runtime, [])
            if (key.opset, key.extra) not in variants:
                variants.append((key.opset, key.extra))
        for variants in self._variants.values():
            variants.sort(key=lambda v: (-(v[0] or 0), v[1]))  # the newest opset gets the first marker
        others = sorted(r for r in self._variants if r not in _RUNTIME_STYLE)
        self._runtime = dict(_RUNTIME_STYLE)
        for i, name in enumerate(others):
            self._runtime[name] = _OTHER_STYLES[i % len(_OTHER_STYLES)]

    def __call__(self, key: SeriesKey) -> dict:
        colour, markers, linestyle = self._runtime.get(key.runtime, _OTHER_STYLES[0])
        variants = self._variants.get(key.runtime, [])
        index = variants.index((key.opset, key.extra)) if (key.opset, key.extra) in variants else 0
        return {"color": colour, "marker": markers[index % len(markers)], "linestyle": linestyle,
                "fillstyle": _PRECISION_FILL.get(key.precision, "top"), "markersize": 9,
                "markeredgewidth": 1.4, "markerfacecoloralt": "white", "linewidth": 1.6}


def _legend_handle(key: SeriesKey, style: dict, with_line: bool) -> Line2D:
    kw = dict(style)
    if not with_line:
        kw["linestyle"] = "none"
    return Line2D([], [], label=key.label, **kw)


def _whiskers(points: Sequence[Point]) -> tuple[list, list]:
    """Asymmetric error-bar extents; a missing end is drawn as no whisker on that side."""
    xerr = [[max(0.0, p.x - p.x_lo) if p.x_lo is not None else 0.0 for p in points],
            [max(0.0, p.x_hi - p.x) if p.x_hi is not None else 0.0 for p in points]]
    yerr = [[max(0.0, p.y - p.y_lo) if p.y_lo is not None else 0.0 for p in points],
            [max(0.0, p.y_hi - p.y) if p.y_hi is not None else 0.0 for p in points]]
    return xerr, yerr


def _use_log(values: Sequence[float]) -> bool:
    positive = [v for v in values if v and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > 20


def _figure(width: float, body_height: float, n_handles: int, ncol: int, caption: str):
    """A figure whose body subfigure holds the axes and whose footer holds the legend and the caption.

    The footer is sized from the legend rows and caption lines, so neither can overlap the other or the axes.
    """
    lines = textwrap.wrap(caption, int(width * 14)) if caption else []
    rows = math.ceil(n_handles / ncol)
    footer = 0.12 + 0.27 * rows + 0.16 * len(lines)
    fig = plt.figure(figsize=(width, body_height + footer), layout="constrained")
    body, foot = fig.subfigures(2, 1, height_ratios=[body_height, footer])
    if lines:
        foot.text(0.01, 0.04, "\n".join(lines), ha="left", va="bottom", fontsize=8.5)
    return fig, body, foot


def _columns(labels: Sequence[str], width: float) -> int:
    """Legend columns that fit ``width`` inches at 9 pt (about 0.075 in per character plus the handle)."""
    entry = max((0.075 * len(label) + 0.9 for label in labels), default=1.0)
    return max(1, min(4, int(width / entry)))


def _legend(foot, handles: list, ncol: int, **kw) -> None:
    foot.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=9, frameon=False, **kw)


def latency_accuracy_figure(panels: Sequence[Panel], title: str, ylabel: str, xlabel: str, caption: str,
                            styler: Styler, stem: Path) -> list[Path]:
    """A panel per model (points: runtime/precision/opset); Pareto front ringed and joined by a step line."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    keys = list(dict.fromkeys(p.series for panel in panels for p in panel.points if p.y is not None))
    width = max(7.0, 4.6 * cols + 0.4)
    starred = any(p.chosen for panel in panels for p in panel.points)
    extra = ["Pareto front"] + (["recommended"] if starred else [])
    ncol = _columns([k.label for k in keys] + extra, width)
    fig, body, foot = _figure(width, 3.9 * rows + 0.4, len(keys) + len(extra), ncol, caption)
    axes = body.subplots(rows, cols, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):  # a grid may have more axes than panels
        plotted = [p for p in panel.points if p.y is not None]
        for p in plotted:
            style = styler(p.series)
            xerr, yerr = _whiskers([p])
            ax.errorbar([p.x], [p.y], xerr=xerr, yerr=yerr, ecolor=style["color"], elinewidth=1.0, capsize=3,
                        **{**style, "linestyle": "none"}, zorder=3)
        front = sorted((p for p in plotted if p.pareto), key=lambda p: p.x)
        if front:
            ax.plot([p.x for p in front], [p.y for p in front], color="0.45", linestyle=(0, (2, 2)),
                    linewidth=1.2, drawstyle="steps-post", zorder=2)
            ax.plot([p.x for p in front], [p.y for p in front], linestyle="none", marker="o", markersize=17,
                    fillstyle="none", color="0.2", markeredgewidth=1.0, zorder=1)
        chosen = [p for p in plotted if p.chosen]
        if chosen:
            ax.plot([p.x for p in chosen], [p.y for p in chosen], markersize=26, zorder=4, **_CHOSEN_STYLE)
        if _use_log([p.x for p in plotted]):
            ax.set_xscale("log")
        ax.set_title(panel.title, fontsize=11)
        ax.set_xlabel(xlabel, fontsize=9.5)
        ax.set_ylabel(ylabel, fontsize=9.5)
        ax.tick_params(labelsize=9)
        ax.grid(True, color="0.88", linewidth=0.7)
        if not plotted:
            ax.text(0.5, 0.5, "no cell with both latency and accuracy", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
        else:
            _pad_y(ax, plotted)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [_legend_handle(k, styler(k), with_line=False) for k in keys]
    handles.append(Line2D([], [], color="0.2", marker="o", markersize=13, fillstyle="none",
                          linestyle=(0, (2, 2)), label="Pareto front"))
    if starred:
        handles.append(Line2D([], [], label="recommended", markersize=15, **_CHOSEN_STYLE))
    _legend(foot, handles, ncol)
    body.suptitle(title, fontsize=12.5)
    return save_figure(fig, stem)


def _pad_y(ax, points: Sequence[Point]) -> None:
    """Keep whiskers and the Pareto rings inside the axes, and never show more than 100 %."""
    lo = min(p.y_lo if p.y_lo is not None else p.y for p in points)
    hi = max(p.y_hi if p.y_hi is not None else p.y for p in points)
    span = max(hi - lo, 0.5)
    ax.set_ylim(lo - 0.15 * span, min(hi + 0.15 * span, 100.0 + 0.15 * span))


BATCH_PANELS = (("latency", "p50 latency per batch (ms)"), ("throughput", "throughput (images/s)"),
                ("peak memory", "peak resident memory (MiB)"))


def batch_figure(points: Sequence[tuple[Point, ...]], title: str, caption: str, styler: Styler,
                 stem: Path) -> list[Path]:
    """A panel per figure vs batch: p50 latency (whiskers as given), throughput and, when the tuples hold a
    third point, the process's peak resident memory.

    ``points``: per cell, a latency point (x: batch, y: ms), a throughput point (y: images/s) and optionally a
    memory point (y: MiB); a point whose y is None is left out of its panel.
    """
    series: dict[SeriesKey, list[tuple[Point, ...]]] = {}
    for cell_points in points:
        series.setdefault(cell_points[0].series, []).append(cell_points)
    panels = BATCH_PANELS[: max((len(t) for t in points), default=2)]
    width = 5.25 * len(panels)
    ncol = _columns([k.label for k in series], width)
    fig, body, foot = _figure(width, 4.2, len(series), ncol, caption)
    axes = body.subplots(1, len(panels))
    batches = sorted({t[0].x for t in points})
    for key, rows in series.items():
        rows.sort(key=lambda row: row[0].x)
        style = styler(key)
        for i, ax in enumerate(axes):
            shown = [row[i] for row in rows if len(row) > i and row[i].y is not None]
            if not shown:
                continue
            _, yerr = _whiskers(shown)
            ax.errorbar([p.x for p in shown], [p.y for p in shown], yerr=yerr if i == 0 else None, capsize=3,
                        elinewidth=1.0, ecolor=style["color"], **style)
    for ax, (name, ylabel) in zip(axes, panels, strict=True):
        _batch_axis(ax, batches, ylabel)
        ax.set_title(name, fontsize=11)
    handles = [_legend_handle(k, styler(k), with_line=True) for k in series]
    _legend(foot, handles, ncol, handlelength=3.2)
    body.suptitle(title, fontsize=12.5)
    return save_figure(fig, stem)


def _batch_axis(ax, batches: Sequence[float], ylabel: str) -> None:
    if len(batches) > 1:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{b:g}" for b in batches])
    ax.set_xlabel("batch size (images)", fontsize=9.5)
    ax.set_ylabel(ylabel, fontsize=9.5)
    ax.tick_params(labelsize=9)
    ax.grid(True, color="0.88", linewidth=0.7)
    ax.set_ylim(bottom=0)
    if len(batches) > 1:
        ax.set_xlim(batches[0] / 1.4, batches[-1] * 1.4)


def save_figure(fig, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically and close the figure."""
    written = []
    try:
        for fmt in FORMATS:
            path = stem.with_name(f"{stem.name}.{fmt}")
            with atomic_open(path) as f, plt.rc_context({"svg.hashsalt": SVG_HASHSALT}):
                fig.savefig(f, format=fmt, dpi=DPI, metadata=_metadata(fmt))
            written.append(path)
            log.info("wrote %s", path)
    finally:
        plt.close(fig)
    return written


def _metadata(fmt: str) -> dict:
    # No creation date in the files, so rebuilding a report from the same records gives the same bytes.
    return {"Date": None} if fmt == "svg" else {"Software": "paddle-onnx-bench report"}
