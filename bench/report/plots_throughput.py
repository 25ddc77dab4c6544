"""The throughput-vs-latency figure: every configuration of one model (runtime, precision, batch, requests in
flight) as a point at (p50 latency of a request, images/s), with the front of configurations that no other
beats on both. Styles and file writing are ``bench.report.plots``'s, so series look the same in every figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.lines import Line2D

from bench.report.plots import (
    Point,
    Styler,
    _columns,
    _figure,
    _legend,
    _legend_handle,
    _use_log,
    _whiskers,
    save_figure,
)


def throughput_latency_figure(points: Sequence[tuple[Point, str]], title: str, caption: str, styler: Styler,
                              stem: Path) -> list[Path]:
    """``points``: (point, its label such as ``b8 x2``); x: p50 latency in ms with p10..p90 whiskers, y:
    images/s. Points with ``pareto`` set are ringed and joined by a step line: the images/s reachable within
    a latency budget."""
    keys = list(dict.fromkeys(p.series for p, _ in points))
    ncol = _columns([k.label for k in keys] + ["front"], 8.0)
    fig, body, foot = _figure(8.0, 5.2, len(keys) + 1, ncol, caption)
    ax = body.subplots(1, 1)
    for point, label in points:
        style = styler(point.series)
        xerr, _ = _whiskers([point])
        ax.errorbar([point.x], [point.y], xerr=xerr, ecolor=style["color"], elinewidth=1.0, capsize=3,
                    **{**style, "linestyle": "none"}, zorder=3)
        ax.annotate(label, (point.x, point.y), textcoords="offset points", xytext=(6, 5), fontsize=7.5,
                    color=style["color"])
    front = sorted((p for p, _ in points if p.pareto), key=lambda p: p.x)
    if front:
        ax.plot([p.x for p in front], [p.y for p in front], color="0.45", linestyle=(0, (2, 2)), linewidth=1.2,
                drawstyle="steps-post", zorder=2)
        ax.plot([p.x for p in front], [p.y for p in front], linestyle="none", marker="o", markersize=17,
                fillstyle="none", color="0.2", markeredgewidth=1.0, zorder=1)
    if _use_log([p.x for p, _ in points]):
        ax.set_xscale("log")
    if _use_log([p.y for p, _ in points]):
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0, top=max((p.y for p, _ in points), default=1) * 1.15)
    ax.set_xlabel("p50 latency of one request (ms); whiskers p10 to p90", fontsize=9.5)
    ax.set_ylabel("throughput (images/s)", fontsize=9.5)
    ax.tick_params(labelsize=9)
    ax.grid(True, color="0.88", linewidth=0.7)
    handles = [_legend_handle(k, styler(k), with_line=False) for k in keys]
    handles.append(Line2D([], [], color="0.2", marker="o", markersize=13, fillstyle="none",
                          linestyle=(0, (2, 2)), label="front"))
    _legend(foot, handles, ncol)
    body.suptitle(title, fontsize=12.5)
    return save_figure(fig, stem)

