"""The report's section on cells that failed their drift gates: where the drift starts (first diverging layer,
the layers by error growth), the fix tried or suggested, a runtime bug recognised, and each cell's
error-along-depth plot (copied next to the report from the results folder)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench.records import finite
from bench.report.markdown import md_table
from bench.report.results import Cell
from bench.report.sections import Context


def _fmt(value: Any, spec: str = ".3g") -> str:
    number = finite(value)
    return "missing" if number is None else format(number, spec)


def _first(data: dict) -> tuple[str, str, str, str]:
    first = data.get("first_divergence")
    if not isinstance(first, dict):
        return "none above the threshold", "", "", ""
    where = f"{first.get('op_type')} `{first.get('node')}`" + (f" ({first['layer']})" if first.get("layer") else "")
    return where, str(first.get("block")), _fmt(first.get("growth")), str(first.get("run") or "")


def _kept(trial: dict) -> str:
    names = ", ".join(trial.get("ignored_names") or [])
    return names or "every " + ", ".join(trial.get("ignored_types") or [])


def _fix(data: dict) -> str:
    fix = data.get("suggested_fix") if isinstance(data.get("suggested_fix"), dict) else {}
    trials = [t for t in fix.get("trials") or [] if isinstance(t, dict)]
    if trials:
        return "; ".join(f"keep {_kept(t)} in float: {t.get('top1_agree')}/{t.get('n')}, min cos "
                         f"{_fmt(t.get('cosine_min'), '.4f')}" for t in trials)
    return str(fix.get("suggestion") or "none")


def _row(c: Cell, data: dict) -> tuple:
    status = data.get("status")
    if status not in ("complete", "partial"):
        return (c.label, status, data.get("reason") or data.get("error") or "", "", "", "", "", "")
    dl = data.get("deployed_logits") or {}
    where, block, growth, run = _first(data)
    known = "; ".join(str(k.get("id")) for k in data.get("known_issues") or [] if isinstance(k, dict))
    return (c.label, status, where, block, growth, run, f"{dl.get('top1_agree')}/{dl.get('n')}",
            f"{_fix(data)}" + (f" (known bug: {known})" if known else ""))


def _copy_plot(ctx: Context, c: Cell, data: dict) -> Path | None:
    """The cell's plot, copied into the report's plots folder; None when the record names none or it is gone."""
    plot = (data.get("files") or {}).get("plot")
    if not plot:
        return None
    results_dir = Path(c.used.source.rsplit(":", 1)[0]).parent
    source = Path(plot) if Path(plot).is_absolute() else results_dir / plot
    if not source.is_file():
        return None
    target = ctx.out_dir / "plots" / f"explain_{c.record.record_id}.png"
    shutil.copyfile(source, target)
    ctx.written.append(target)
    return target


def section_explain(ctx: Context) -> list[str]:
    cells = [(c, c.record.explain) for c in ctx.cells if isinstance(c.record.explain, dict)]
    if not cells:
        return []
    header = ("cell", "explain", "first divergence", "block", "growth", "measured on", "deployed top-1",
              "fix (int8: re-quantised, measured)")
    out = ["## Where the drift starts", "",
           "Cells that failed their drift gates, compared layer by layer with ORT fp32 on the fp32 export "
           "(`python -m bench explain` reruns one with more images). *first divergence*: the first layer whose "
           "relative error crosses the threshold while its inputs are below it; *growth*: its error over its "
           "inputs' error; *measured on*: the instrumented run (every tensor exposed) or, when exposing tensors "
           "changes what the runtime computes, the deployed run measured with cut models.", "",
           md_table(header, [_row(c, d) for c, d in cells]), ""]
    for c, data in cells:
        for issue in data.get("known_issues") or []:
            if isinstance(issue, dict):
                out += [f"- {c.label}: known runtime bug at `{issue.get('node')}`: {issue.get('title')}. "
                        f"Reproducer: `{issue.get('reproducer')}`. Workaround: {issue.get('workaround')}.", ""]
        plot = _copy_plot(ctx, c, data)
        if plot is not None:
            out += [f"![error along depth, {c.label}]({plot.relative_to(ctx.out_dir).as_posix()})", ""]
    return out
