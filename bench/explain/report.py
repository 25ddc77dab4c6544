"""What an explain hands the user: the per-layer CSV, the error-along-depth plot (one line per candidate), a
few lines of text, and the ``explain`` section of a record."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.explain.compare import ROW_FIELDS, Explanation, summary
from bench.explain.graph import GraphIndex
from core.files import write_text_atomic

CSV_NAME, PLOT_NAME = "layers.csv", "error_along_depth.png"


def write_csv(explanations: Iterable[Explanation], path: Path) -> Path:
    """All candidates' per-layer rows in one CSV (one row per candidate, reference tensor and stage)."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for ex in explanations:
        for row in ex.rows:
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in ROW_FIELDS})
    write_text_atomic(path, buffer.getvalue())
    return path


def _clip(value: float) -> float:
    return max(min(value, 1e3), 1e-9)


def plot(explanations: Sequence[Explanation], graph: GraphIndex, path: Path, title: str = "") -> Path:
    """Relative L2 error along the reference's topological order, one line per candidate.

    Solid: the instrumented run, every tensor compared. Dashed with dots: the deployed run at residual-block
    outputs (when the search ran), which is what counts when the two differ. Circles mark first divergences;
    grey lines are residual Adds (block boundaries).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5), dpi=110)
    for info in graph.tensors.values():
        if info.residual:
            ax.axvline(info.order, color="0.9", lw=0.6, zorder=0)
    last = max((i.order for i in graph.tensors.values()), default=1)
    for ex in explanations:
        _plot_one(ax, ex, last)
    ax.set_yscale("log")
    ax.set_xlabel("node position in the reference's topological order (grey: residual Adds)")
    ax.set_ylabel("relative L2 error vs ORT fp32")
    ax.set_title(title or "error along depth")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def _plot_one(ax: Any, ex: Explanation, last: int) -> None:
    pts = [(r["order"], _clip(r["rel_l2"])) for r in ex.rows if r["stage"] == "output" and r["matched"]
           and r["rel_l2"] is not None and math.isfinite(r["rel_l2"])]
    if not pts:
        return
    xs, ys = zip(*pts, strict=True)
    (line,) = ax.plot(xs, ys, lw=0.9, alpha=0.75,
                      label=f"{ex.candidate} instrumented (top-1 {ex.logits['top1_agree']}/{ex.logits['n']})")
    color = line.get_color()
    marks = [ex.first] if ex.first else []
    if ex.deployed is not None:
        d = ex.deployed
        ax.plot([b["order"] for b in d.boundaries], [_clip(b["rel_l2"]) for b in d.boundaries], "--.",
                color=color, lw=1.0, label=f"{ex.candidate} deployed, block outputs (top-1 "
                                           f"{ex.deployed_logits['top1_agree']}/{ex.deployed_logits['n']})")
        if d.first:
            marks.append(d.first)
    for mark in marks:
        y = _clip(mark["rel_l2"])
        ax.plot([mark["order"]], [y], "o", color=color, ms=8, mfc="none")
        right = mark["order"] > 0.8 * last
        ax.annotate(f"{mark['op_type']} {mark['node']}", (mark["order"], y), fontsize=7, color=color,
                    xytext=(-6 if right else 6, 6), textcoords="offset points", ha="right" if right else "left")


def where(row: Mapping[str, Any]) -> str:
    from bench.explain.paddle import paddle_op_of

    layer = f" ({row['layer']})" if row.get("layer") else ""
    stage = " (as quantised for its consumers)" if row.get("stage") == "quantized" else ""
    op = paddle_op_of(row["tensor"])
    paddle = f" = Paddle op {op}" if op else ""
    return f"{row['op_type']} {row['node']}{layer} -> {row['tensor']}{paddle}{stage}, block {row['block']}"


def format_text(ex: Explanation, top: int = 5) -> list[str]:
    """A few human-readable lines for the terminal."""
    lg, dl = ex.logits, ex.deployed_logits
    lines = [f"[{ex.candidate}] {ex.matched}/{ex.reference_tensors} reference tensors compared "
             f"(+{ex.quantized_views} quantised views); {ex.images} images: deployed top-1 "
             f"{dl['top1_agree']}/{dl['n']} (min cos {dl['cosine_min']:.4f}), instrumented top-1 "
             f"{lg['top1_agree']}/{lg['n']} (min cos {lg['cosine_min']:.4f})"]
    if ex.first:
        f = ex.first
        lines.append(f"  first divergence, instrumented ({f['kind']}, threshold {ex.threshold:g}): {where(f)}: "
                     f"rel err {f['rel_l2']:.3g} (inputs {f['err_before']:.3g}, growth x{f['growth']:.3g})")
    else:
        lines.append(f"  instrumented: no tensor crosses the threshold {ex.threshold:g}")
    for r in ex.top[:top]:
        what = f"{r['op_type']} output" + (" as quantised" if r["stage"] == "quantized" else "")
        lines.append(f"    growth x{r['growth']:<8.3g} {what:<30} {r['node']:<22} block {r['block']:<3} "
                     f"rel err {r['rel_l2']:.3g} (in {r['err_before']:.3g})")
    lines += _search_lines(ex)
    return lines + [f"  note: {n}" for n in ex.notes]


def _search_lines(ex: Explanation) -> list[str]:
    d = ex.deployed
    if d is None:
        return []
    how = "one compile" if d.boundaries_faithful else "one compile each"
    worst = max(d.boundaries, key=lambda b: b["rel_l2"], default=None)
    lines = [f"  deployed search: {len(d.boundaries)} block outputs ({how}), {d.probes} cut models, {d.replays} "
             f"replays, {d.seconds:.1f}s" + (f"; worst block output {worst['tensor']} {worst['rel_l2']:.3g}"
                                             if worst else "")]
    if d.first:
        f, rt = d.first, d.first.get("runtime_layer")
        fused = (f"; runs as {rt['type']} '{rt['layer']}' in {rt['precision']}, fused from "
                 f"{', '.join(rt['fused'])}" if rt else "")
        lines.append(f"  first divergence, deployed: {where(f)}: rel err {f['rel_l2']:.3g} (inputs "
                     f"{f['err_before']:.3g}, growth x{f['growth']:.3g}){fused}")
    else:
        lines.append(f"  deployed: no block output crosses the threshold {ex.threshold:g}")
    return lines


def first_of(ex: Explanation) -> dict[str, Any] | None:
    """The first divergence that describes the deployed model: the search's when the instrumented run is
    not faithful (or the search found one), else the instrumented run's."""
    if ex.deployed is not None and (ex.deployed.first or not ex.faithful):
        first = ex.deployed.first
        return {**first, "run": "deployed (cut models)"} if first else None
    return {**ex.first, "run": "instrumented"} if ex.first else None


def _row(r: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("stage", "tensor", "node", "op_type", "block", "layer", "rel_l2", "err_before", "growth", "cosine",
            "kind", "run", "runtime_layer", "reads_quantized", "fix_nodes")
    return {k: r[k] for k in keys if k in r}


def section(ex: Explanation, known: list[dict[str, Any]], fix: dict[str, Any], files: Mapping[str, str],
            seconds: float) -> dict[str, Any]:
    """The record's ``explain`` section: what diverged first, where the error grows, and what to do."""
    first = first_of(ex)
    digest = summary(ex)
    return {
        "status": "complete" if not any(n.startswith("deployed-run search not finished") for n in ex.notes)
        else "partial",
        "candidate": ex.candidate, "precision": ex.precision, "threshold": ex.threshold, "images": ex.images,
        "first_divergence": _row(first) if first else None,
        "first_divergence_instrumented": _row({**ex.first, "run": "instrumented"}) if ex.first else None,
        "top_growth": [_row(r) for r in ex.top],
        "deployed_logits": ex.deployed_logits, "instrumented_logits": ex.logits, "fidelity": ex.fidelity,
        "faithful": ex.faithful, "deployed_search": digest["deployed"],
        "compared": {"tensors": ex.matched, "of": ex.reference_tensors, "quantized_views": ex.quantized_views},
        "known_issues": known, "suggested_fix": fix, "files": dict(files), "settings": ex.settings,
        "seconds": {**{k: round(v, 3) for k, v in ex.seconds.items()}, "total": round(seconds, 3)},
        "notes": list(ex.notes),
    }


def section_lines(data: Mapping[str, Any]) -> list[str]:
    """The record section as text: the first divergence, the fix, the known issue (CLI and report)."""
    lines = []
    first = data.get("first_divergence")
    if first:
        lines.append(f"first divergence ({first.get('run')}): {where(first)}: rel err {first['rel_l2']:.3g} "
                     f"(inputs {first['err_before']:.3g}, growth x{first['growth']:.3g})")
    else:
        lines.append(f"no layer crosses the threshold {data.get('threshold'):g}")
    for issue in data.get("known_issues") or []:
        lines.append(f"known runtime bug: {issue['title']} ({issue['seen_with']}); reproducer: "
                     f"{issue['reproducer']}; workaround: {issue['workaround']}")
    fix = data.get("suggested_fix") or {}
    for trial in fix.get("trials") or []:
        kept = ", ".join(trial["ignored_names"] + [f"every {t}" for t in trial["ignored_types"]])
        lines.append(f"fix tried: keep {kept} in float -> top-1 {trial['top1_agree']}/{trial['n']}, min cosine "
                     f"{trial['cosine_min']:.5f}" + ("" if trial.get("passes_gates") is None else
                                                     f", gates {'pass' if trial['passes_gates'] else 'fail'}"))
    if fix.get("untested"):
        lines.append(f"suggested fix (not tried: {fix['untested']}): {fix.get('suggestion')}")
    return lines
