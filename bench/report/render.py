"""``python -m bench report [RESULTS...] [--out DIR]``: result records -> Markdown report + PNG/SVG plots.

The report holds, for every plot, the table behind it; the environment the runs recorded; and every note,
fallback, failed and skipped cell. Nothing is dropped silently: a failed cell reads ``error`` (with its
message), a field a record lacks reads ``missing``, and unreadable lines are listed with their line numbers.

When a cell (model, opset, batch, runtime, precision, weights, scope, host) was run more than once, the
latest ``ok`` record is used (the latest record of any status when none is ok), and the report says so.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.records import cell_key, read_records
from bench.report import plots
from core.files import write_text_atomic
from core.metrics import wilson_interval

log = logging.getLogger(__name__)

DEFAULT_RESULTS = Path("results/runs.jsonl")
DEFAULT_OUT = Path("results/report")
Y_METRICS = ("auto", "top1", "agreement")
_RUNTIME_ORDER = ("paddle", "ort", "ov", "trt")
_PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8")
MISSING = "missing"
WHISKERS = "whiskers: latency p10 to p90"


class ReportError(ValueError):
    """The results cannot be turned into a report (no file, empty file, nothing readable)."""


# --- loading ------------------------------------------------------------------------------------------------

@dataclass
class Loaded:
    """One record as read, and where from. ``invalid``: why the schema check failed, if it did."""

    data: dict[str, Any]
    source: str  # "path:line"
    order: int  # reading order, the tie-breaker between equal timestamps
    invalid: str | None = None

    @property
    def status(self) -> str:
        return "invalid" if self.invalid else str(self.data.get("status"))

    @property
    def timestamp(self) -> str:
        return str(self.data.get("timestamp_utc") or "")


@dataclass
class Results:
    records: list[Loaded]
    problems: list[str]  # "path:line: what is wrong"
    files: list[tuple[Path, int]]  # (file, records read)


def results_files(paths: Iterable[Path]) -> list[Path]:
    """Expand folders to their ``*.jsonl`` files; a path that does not exist is an error."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise ReportError(f"{path}: folder holds no *.jsonl results file")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise ReportError(f"{path}: no such results file")
    if not files:
        raise ReportError("no results files given")
    return files


def load_results(paths: Iterable[Path]) -> Results:
    """Read records leniently (``bench.records.read_records``): a record that breaks an invariant is kept,
    marked invalid; lines that are not records at all are listed as problems.

    Raises ``ReportError`` for a missing file, an empty file, or a file with no readable record.
    """
    files = results_files(paths)
    try:
        read = read_records(files, missing_ok=False)
    except (FileNotFoundError, OSError) as exc:
        raise ReportError(str(exc)) from exc
    for path, found in read.files:
        bad = [p for p in read.problems if p.startswith(f"{path}:")]
        if not found and not bad:
            raise ReportError(f"{path}: empty results file (no records)")
        if not found:
            raise ReportError(f"{path}: no readable record in {len(bad)} non-empty line(s); first: "
                              f"{bad[0].split(': ', 1)[1][:200]}")
    records = [Loaded(r.record.to_dict(), r.source, r.order, r.invalid) for r in read.records]
    return Results(records, read.problems, read.files)


# --- cells --------------------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One benchmark cell: the record used, plus every record of the same cell (oldest first)."""

    used: Loaded
    history: list[Loaded] = field(default_factory=list)

    @property
    def r(self) -> dict[str, Any]:
        return self.used.data

    @property
    def status(self) -> str:
        return self.used.status

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """The run itself failed or was skipped (an invalid record may still hold some numbers)."""
        return self.status not in ("ok", "invalid")

    @property
    def model(self) -> str:
        return str(self.r["model"].get("name"))

    @property
    def opset(self) -> int | None:
        return self.r["model"].get("opset")

    @property
    def batch(self) -> int | None:
        return self.r["params"].get("batch")

    @property
    def runtime(self) -> str:
        return str(self.r["runtime"].get("name"))

    @property
    def precision(self) -> str:
        return str(self.r["runtime"].get("precision"))

    @property
    def scope(self) -> str | None:
        return (self.r.get("timing") or {}).get("scope") or self.r["params"].get("scope")

    @property
    def host(self) -> str | None:
        return (self.r.get("environment") or {}).get("host")

    @property
    def weights(self) -> str | None:
        return (self.r["model"].get("weights") or {}).get("requested")

    @property
    def message(self) -> str:
        if self.used.invalid:
            return f"invalid record: {self.used.invalid}"
        error = self.r.get("error") or {}
        text = f"{error.get('type') or 'Error'}: {error.get('message') or '(no message)'}"
        return text if self.status != "ok" else ""

    @property
    def label(self) -> str:
        return f"{self.model} b{self.batch} opset {self.opset} {self.runtime} {self.precision}"


def dig(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` or None when any level is missing or not a dict."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def num(data: Any, *keys: str) -> float | None:
    """A finite number at ``keys``, else None (absent, null, a string, NaN)."""
    value = dig(data, *keys)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def select_cells(records: Sequence[Loaded], by_host: bool = True) -> list[Cell]:
    """Group records by cell and pick the latest ok one (else the latest of any status)."""
    groups: dict[tuple, list[Loaded]] = {}
    for loaded in records:
        d = loaded.data
        scope = dig(d, "timing", "scope") or dig(d, "params", "scope")
        model, runtime, params = d["model"], d["runtime"], d["params"]
        identity = cell_key(model.get("name"), model.get("opset"), params.get("batch"), runtime.get("name"),
                            runtime.get("precision"), (model.get("weights") or {}).get("requested"))
        key = (*identity, scope, dig(d, "environment", "host") if by_host else None)
        groups.setdefault(tuple(_hashable(k) for k in key), []).append(loaded)
    cells = []
    for history in groups.values():
        history.sort(key=lambda x: (x.timestamp, x.order))
        ok = [x for x in history if x.status == "ok"]
        cells.append(Cell(ok[-1] if ok else history[-1], history))
    return sorted(cells, key=_cell_order)


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def family_of(model: str) -> str:
    """The zoo family of a model (LeViT, MobileViT), else the name up to its first underscore."""
    try:
        from export.models import MODELS

        if model in MODELS:
            return MODELS[model].family
    except ImportError:  # the export package is optional for reporting
        pass
    return model.split("_")[0] if "_" in model else model


def _model_rank(model: str) -> tuple:
    try:
        from export.models import MODELS

        names = list(MODELS)
        return (names.index(model), model) if model in names else (len(names), model)
    except ImportError:
        return (0, model)


def _rank(value: str, order: Sequence[str]) -> tuple:
    return (order.index(value), value) if value in order else (len(order), value)


def _cell_order(c: Cell) -> tuple:
    return (family_of(c.model), _model_rank(c.model), c.batch or 0, _rank(c.runtime, _RUNTIME_ORDER),
            _rank(c.precision, _PRECISION_ORDER), -(c.opset or 0), str(c.scope), str(c.host))


# --- formatting ---------------------------------------------------------------------------------------------

def md_escape(text: Any, limit: int = 400) -> str:
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ms(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"


def fmt_pct(v: float) -> str:
    return f"{100 * v:.2f}"


def fmt_ci(ci: Any, scale: float = 100.0, digits: int = 2) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2 or any(num(x) is None for x in ci):
        return MISSING
    return f"[{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]"


def cell_value(cell: Cell, value: float | None, fmt: Callable[[float], str]) -> str:
    """A table cell: the status of a failed or skipped run, ``missing`` for an absent field."""
    if cell.failed:
        return cell.status
    return MISSING if value is None else fmt(value)


# --- accuracy axis ------------------------------------------------------------------------------------------

@dataclass
class YValue:
    value: float | None  # %
    lo: float | None
    hi: float | None
    source: str  # "drift", "reference", or why it is missing


def choose_y_metric(cells: Sequence[Cell], requested: str = "auto") -> str:
    """``top1`` if every drift result is labelled and no weights are seeded (random), else ``agreement``."""
    if requested not in Y_METRICS:
        raise ReportError(f"--y must be one of {', '.join(Y_METRICS)}, got {requested!r}")
    if requested != "auto":
        return requested
    with_drift = [c for c in cells if c.ok and isinstance(c.r.get("drift"), dict)]
    if with_drift and all(dig(c.r, "drift", "labelled") and num(c.r, "drift", "candidate_top1") is not None
                          and c.weights != "seeded" for c in with_drift):
        return "top1"
    return "agreement"


def y_label(metric: str) -> str:
    return "top-1 accuracy (%)" if metric == "top1" else "top-1 agreement with Paddle (%)"


def y_value(cell: Cell, metric: str, cells: Sequence[Cell]) -> YValue:
    """The cell's accuracy (or agreement) in % with its 95 % interval.

    Paddle FP32 without a drift result is the reference itself: 100 % agreement by definition, and its
    top-1 is the ``reference_top1`` that other runtimes' drift results of the same model report.
    """
    drift = cell.r.get("drift")
    if cell.failed:
        return YValue(None, None, None, cell.status)
    if not isinstance(drift, dict):
        if cell.runtime == "paddle" and cell.precision == "fp32":
            if metric == "agreement":
                return YValue(100.0, None, None, "reference")
            return _reference_top1(cell, cells)
        return YValue(None, None, None, "drift missing")
    if metric == "agreement":
        value, ci = num(drift, "agreement"), drift.get("agreement_ci")
    else:
        value, ci = num(drift, "candidate_top1"), wilson_ci(num(drift, "candidate_top1"), num(drift, "n"))
    if value is None:
        return YValue(None, None, None, f"drift has no {'agreement' if metric == 'agreement' else 'top-1'}")
    lo, hi = (100 * ci[0], 100 * ci[1]) if fmt_ci(ci) != MISSING else (None, None)
    return YValue(100 * value, lo, hi, "drift")


def wilson_ci(p: float | None, n: float | None) -> list[float] | None:
    if p is None or not n:
        return None
    return list(wilson_interval(round(p * n), int(n)))


def _reference_top1(cell: Cell, cells: Sequence[Cell]) -> YValue:
    for other in cells:
        d = other.r.get("drift")
        if (other is not cell and other.ok and isinstance(d, dict) and other.model == cell.model
                and other.weights == cell.weights and num(d, "reference_top1") is not None):
            ci = wilson_ci(num(d, "reference_top1"), num(d, "n"))
            return YValue(100 * d["reference_top1"], 100 * ci[0] if ci else None, 100 * ci[1] if ci else None,
                          f"reference_top1 of the {other.runtime} {other.precision} drift result")
    return YValue(None, None, None, "no reference_top1 recorded for this model")


# --- report sections ----------------------------------------------------------------------------------------

@dataclass
class Context:
    cells: list[Cell]
    out_dir: Path
    metric: str
    styler: plots.Styler
    series_extra: Callable[[Cell], str]
    written: list[Path] = field(default_factory=list)

    def series(self, cell: Cell) -> plots.SeriesKey:
        return series_key(cell, self.series_extra)

    def runtime(self, cell: Cell) -> str:
        """The runtime column: with the scope and host when those vary within the report."""
        return " ".join(p for p in (cell.runtime, self.series_extra(cell)) if p)


def _series_extra_fn(cells: Sequence[Cell]) -> Callable[[Cell], str]:
    scopes = {c.scope for c in cells}
    hosts = {c.host for c in cells}

    def extra(c: Cell) -> str:
        parts = []
        if len(scopes) > 1:
            parts.append(str(c.scope))
        if len(hosts) > 1:
            parts.append(f"@{c.host}")
        return " ".join(parts)

    return extra


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _plot_links(paths: Sequence[Path], out_dir: Path, alt: str) -> str:
    rel = {p.suffix: p.relative_to(out_dir).as_posix() for p in paths}
    return f"![{alt}]({rel['.png']})\n\n[SVG for print]({rel['.svg']})"


def _latency_cells(cell: Cell) -> tuple[str, str, str]:
    lat = dig(cell.r, "timing", "latency_ms")
    return tuple(cell_value(cell, num(lat, k), fmt_ms) for k in ("p50", "p10", "p90"))


def section_accuracy(ctx: Context) -> list[str]:
    out = ["## Latency vs accuracy", "",
           f"Y axis: {y_label(ctx.metric)}; x axis: p50 latency of one batch in ms ({WHISKERS}; vertical "
           "whiskers: 95 % interval). Ringed points joined by the dashed step line form the Pareto front of "
           "each panel: no other point there is both faster (lower p50) and more accurate. The front is "
           "drawn from point estimates; where the intervals overlap, the order of two points is not "
           "established.", ""]
    groups: dict[tuple, list[Cell]] = {}
    for c in ctx.cells:
        groups.setdefault((family_of(c.model), c.batch), []).append(c)
    for (family, batch), cells in groups.items():
        out += _accuracy_group(ctx, family, batch, cells)
    return out


def _accuracy_group(ctx: Context, family: str, batch: Any, cells: list[Cell]) -> list[str]:
    """One figure (a panel per model) and its table."""
    panels, rows, not_shown, references = [], [], [], set()
    for model in dict.fromkeys(c.model for c in cells):
        entries = []  # (cell, y, point or None)
        for c in (c for c in cells if c.model == model):
            y = y_value(c, ctx.metric, ctx.cells)
            p50, lo, hi = (num(c.r, "timing", "latency_ms", k) for k in ("p50", "p10", "p90"))
            point = None
            if c.ok and p50 is not None and y.value is not None:
                point = plots.Point(ctx.series(c), p50, lo, hi, y.value, y.lo, y.hi)
                if y.source != "drift":
                    references.add(y.source)
            else:
                not_shown.append(f"{c.model} {ctx.series(c).label} ({_why_missing(c, p50, y)})")
            entries.append((c, y, point))
        points = [p for _, _, p in entries if p is not None]
        for point, flag in zip(points, plots.pareto_front([(p.x, p.y) for p in points]), strict=True):
            point.pareto = flag
        for c, y, point in entries:
            front = "not plotted" if point is None else "yes" if point.pareto else "no"
            rows.append((c.model, ctx.runtime(c), ctx.series(c).precision, c.opset, *_latency_cells(c),
                         _y_text(c, y),
                         _y_ci_text(c, y), front, _row_note(c, y)))
        panels.append(plots.Panel(model, points))
    ylabel = y_label(ctx.metric)
    title = f"{family}, batch {batch}: {ylabel.replace(' (%)', '')} vs latency"
    caption = "Whiskers: latency p10 to p90 (horizontal), 95 % interval (vertical). Ringed: Pareto front."
    if "reference" in references:
        caption += " Paddle FP32 is the reference: 100 % agreement by definition."
    elif references:
        caption += " Paddle's top-1 is the reference top-1 recorded with the other runtimes' drift results."
    if not_shown:
        caption += " Not plotted: " + "; ".join(not_shown) + "."
    stem = ctx.out_dir / "plots" / f"latency_vs_{ctx.metric}_{_slug(family)}_b{batch}"
    paths = plots.latency_accuracy_figure(panels, title, ylabel, f"p50 latency per batch of {batch} (ms)",
                                          caption, ctx.styler, stem)
    ctx.written += paths
    header = ("model", "runtime", "precision", "opset", "p50 ms", "p10 ms", "p90 ms",
              ylabel.replace("(%)", "%"), "95 % interval", "Pareto front", "note")
    return [f"### {family}, batch {batch}", "", _plot_links(paths, ctx.out_dir, title), "",
            md_table(header, rows), ""]


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
    if len(c.history) > 1:
        notes.append(f"latest ok of {len(c.history)} runs")
    return "; ".join(notes)


def section_batch(ctx: Context) -> list[str]:
    out = ["## Latency and throughput vs batch", "",
           f"Latency: p50 of one batch in ms ({WHISKERS}). Throughput: images per second over the timed "
           "loop's wall time.", ""]
    models: dict[str, list[Cell]] = {}
    for c in ctx.cells:
        models.setdefault(c.model, []).append(c)
    for model, cells in models.items():
        pairs, rows, not_shown = [], [], []
        for c in sorted(cells, key=lambda c: (_rank(c.runtime, _RUNTIME_ORDER), _rank(c.precision,
                                                                                         _PRECISION_ORDER),
                                              -(c.opset or 0), c.batch or 0)):
            p50, lo, hi = (num(c.r, "timing", "latency_ms", k) for k in ("p50", "p10", "p90"))
            ips = num(c.r, "timing", "throughput_ips")
            per_image = p50 / c.batch if p50 is not None and c.batch else None
            rows.append((ctx.runtime(c), ctx.series(c).precision, c.opset, c.batch, *_latency_cells(c),
                         cell_value(c, per_image, fmt_ms), cell_value(c, ips, lambda v: f"{v:.1f}"),
                         c.message if not c.ok else ""))
            if c.ok and c.batch and (p50 is not None or ips is not None):
                key = ctx.series(c)
                pairs.append((plots.Point(key, c.batch, y=p50, y_lo=lo, y_hi=hi),
                              plots.Point(key, c.batch, y=ips)))
            name = f"{ctx.series(c).label} batch {c.batch}"
            if not c.ok:
                not_shown.append(f"{name} ({c.status})")
            else:
                figures = (("latency", p50), ("throughput", ips))
                not_shown += [f"{name} {what} (missing)" for what, v in figures if v is None]
        title = f"{model}: latency and throughput vs batch"
        caption = "Latency whiskers: p10 to p90."
        if not_shown:
            caption += " Not plotted: " + "; ".join(not_shown) + "."
        stem = ctx.out_dir / "plots" / f"batch_{_slug(model)}"
        paths = plots.batch_figure(pairs, title, caption, ctx.styler, stem)
        ctx.written += paths
        out += [f"### {model}", "", _plot_links(paths, ctx.out_dir, title), "",
                md_table(("runtime", "precision", "opset", "batch", "p50 ms", "p10 ms", "p90 ms",
                          "p50 ms per image", "throughput images/s", "note"), rows), ""]
    return out


def section_all_cells(ctx: Context) -> list[str]:
    rows = []
    for c in ctx.cells:
        t, d = c.r.get("timing"), c.r.get("drift")
        lat = dig(t, "latency_ms")

        def dv(key: str, fmt: Callable[[float], str], c: Cell = c, d: Any = d) -> str:
            if not c.failed and not isinstance(d, dict):
                return MISSING
            return cell_value(c, num(d, key), fmt)

        ran = dig(c.r, "runtime", "effective", "precision")
        rows.append((c.model, c.batch, c.opset, ctx.runtime(c), c.precision, MISSING if ran is None else ran,
                     c.scope, c.status,
                     *(cell_value(c, num(lat, k), fmt_ms) for k in ("p50", "p90", "p99")),
                     cell_value(c, num(lat, "cv"), lambda v: f"{100 * v:.1f}"),
                     cell_value(c, num(t, "throughput_ips"), lambda v: f"{v:.1f}"),
                     cell_value(c, num(t, "load_s"), lambda v: f"{v:.2f}"),
                     dv("candidate_top1", fmt_pct), dv("agreement", fmt_pct),
                     dv("top1_delta", lambda v: f"{100 * v:+.2f}") + _ci_suffix(c, d, "top1_delta_ci"),
                     dv("max_abs_diff", lambda v: f"{v:.2e}"), dv("cosine_min", lambda v: f"{v:.6f}"),
                     _finite_text(c, d), _gates_text(c), c.message))
    header = ("model", "batch", "opset", "runtime", "precision", "ran", "scope", "status", "p50 ms", "p90 ms",
              "p99 ms", "CV %", "images/s", "load s", "top-1 %", "agreement %", "Δ top-1 pp [95 % CI]",
              "max abs diff", "min cosine", "finite", "gates", "error")
    return ["## All cells", "", "One row per cell (the record used; see *Re-runs*). `missing`: the record "
            "lacks the field (for drift columns: no drift result was recorded). `ran`: the precision the "
            "runtime reports it ran.", "", md_table(header, rows), ""]


def _ci_suffix(c: Cell, drift: Any, key: str) -> str:
    ci = dig(drift, key)
    return f" {fmt_ci(ci)}" if not c.failed and fmt_ci(ci) != MISSING else ""


def _finite_text(c: Cell, d: Any) -> str:
    if c.failed:
        return c.status
    if not isinstance(d, dict) or not isinstance(d.get("finite"), bool):
        return MISSING
    if d["finite"]:
        return "yes"
    return f"NO ({d.get('nonfinite_values')} values in {d.get('nonfinite_images')} images)"


def _gates_text(c: Cell) -> str:
    gates = c.r.get("gates")
    if c.failed:
        return c.status
    if not isinstance(gates, dict) or "passed" not in gates:
        return MISSING
    if gates["passed"]:
        return "pass"
    failed = [f"{x.get('metric')}={x.get('value')} vs {x.get('threshold')}" for x in gates.get("checks") or []
              if x.get("passed") is False]
    return "FAIL: " + ", ".join(failed)


def section_failures(ctx: Context) -> list[str]:
    rows = [(c.label, c.status, c.used.timestamp, c.message, c.used.source) for c in ctx.cells if not c.ok]
    if not rows:
        return ["## Failed and skipped cells", "", "None: every cell's latest usable record is ok.", ""]
    header = ("cell", "status", "when (UTC)", "message", "record")
    return ["## Failed and skipped cells", "", md_table(header, rows), ""]


def section_notes(ctx: Context) -> list[str]:
    rows = []
    for c in ctx.cells:
        notes = [str(n) for n in c.r["runtime"].get("notes") or []]
        ran = dig(c.r, "runtime", "effective", "precision")
        if ran is not None and ran != c.precision:
            notes.append(f"asked {c.precision}, ran {ran}")
        if dig(c.r, "timing", "stopped_by") == "max_duration":
            count = dig(c.r, "timing", "latency_ms", "count")
            notes.append(f"timing stopped at max duration after {count} runs")
        if dig(c.r, "drift", "finite") is False:
            notes.append("non-finite logits")
        if c.ok and _gates_text(c).startswith("FAIL"):
            notes.append("drift gates failed: " + _gates_text(c)[6:])
        if notes:
            rows.append((c.label, "; ".join(notes)))
    out = ["## Notes recorded by the runs", "",
           "Fallbacks, lowered precision and other remarks the runtime adapters and the harness recorded.",
           ""]
    out += [md_table(("cell", "notes"), rows) if rows else "No notes recorded.", ""]
    groups: dict[tuple, int] = {}
    for c in ctx.cells:
        if c.ok:
            key = (c.runtime, c.precision, _compact(c.r["runtime"].get("effective") or {}))
            groups[key] = groups.get(key, 0) + 1
    out += ["Settings that took effect (`runtime.effective`; values longer than 80 characters are in the "
            "records):", "",
            md_table(("runtime", "precision asked", "effective settings", "cells"),
                     [(*k, n) for k, n in groups.items()]) if groups else "No ok cell.", ""]
    return out


def series_key(cell: Cell, extra: Callable[[Cell], str]) -> plots.SeriesKey:
    """A legend entry; a precision the runtime lowered or raised shows what ran, e.g. ``bf16 (ran fp32)``."""
    ran = dig(cell.r, "runtime", "effective", "precision")
    precision = cell.precision if ran in (None, cell.precision) else f"{cell.precision} (ran {ran})"
    return plots.SeriesKey(cell.runtime, precision, cell.opset, extra(cell))


def _compact(effective: dict) -> str:
    parts = []
    for k, v in sorted(effective.items()):
        text = json.dumps(v, sort_keys=True, default=str)
        parts.append(f"{k}={text if len(text) <= 80 else '(see record)'}")
    return ", ".join(parts) or MISSING


def section_reruns(ctx: Context) -> list[str]:
    rows = []
    for c in ctx.cells:
        if len(c.history) > 1:
            latest = c.history[-1]
            remark = "" if latest is c.used else f"latest run ({latest.timestamp}) was {latest.status}: " + \
                (latest.data.get("error") or {}).get("message", latest.invalid or "")
            rows.append((c.label, len(c.history), ", ".join(x.status for x in c.history),
                         f"{c.used.status} at {c.used.timestamp}", remark))
    if not rows:
        return ["## Re-runs", "", "Every cell was run once.", ""]
    return ["## Re-runs", "", f"{len(rows)} cell(s) were run more than once; the tables use the latest ok "
            "record (or the latest record when none is ok).", "",
            md_table(("cell", "records", "statuses (oldest first)", "used", "remark"), rows), ""]


def section_environment(ctx: Context) -> list[str]:
    envs: dict[str, tuple[dict, list[Cell]]] = {}
    for c in ctx.cells:
        env = c.r.get("environment") or {}
        envs.setdefault(json.dumps(_env_summary(env), sort_keys=True), (env, []))[1].append(c)
    out = ["## Environment", ""]
    for i, (env, cells) in enumerate(envs.values(), 1):
        cpu, pkgs = env.get("cpu") or {}, env.get("packages") or {}
        flags = ", ".join(k for k, v in (cpu.get("flags") or {}).items() if v) or "none of those probed"
        gpus = "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory_mib')} MiB)"
                         for g in env.get("gpus") or []) or "none"
        rows = [("host", env.get("host")), ("OS", env.get("os")), ("Python", env.get("python")),
                ("CPU", cpu.get("model")),
                ("cores (logical / physical / usable)",
                 f"{cpu.get('logical_cores')} / {cpu.get('physical_cores')} / {cpu.get('usable_cores')}"),
                ("CPU flags", flags), ("governor", cpu.get("governor")),
                ("memory GiB", env.get("memory_gib")),
                ("GPUs", gpus), ("environment variables", json.dumps(env.get("env_vars") or {})),
                ("packages", ", ".join(f"{k} {v}" for k, v in pkgs.items() if v) or MISSING)]
        rows = [(k, MISSING if v is None else v) for k, v in rows]
        heading = f"### Environment {i} ({len(cells)} cell(s))" if len(envs) > 1 else f"{len(cells)} cell(s):"
        out += [heading, "", md_table(("", "value"), rows), ""]
    versions = sorted({(c.runtime, json.dumps(c.r["runtime"].get("versions") or {}, sort_keys=True),
                        c.r["runtime"].get("device")) for c in ctx.cells},
                      key=lambda t: (_rank(t[0], _RUNTIME_ORDER), t[1], str(t[2])))
    out += ["Runtime versions and devices:", "",
            md_table(("runtime", "versions", "device"),
                     [(r, ", ".join(f"{k} {v}" for k, v in json.loads(v).items()) or MISSING, d or MISSING)
                      for r, v, d in versions]), ""]
    commits = sorted({(str(dig(c.r, "git", "commit")), str(dig(c.r, "git", "dirty"))) for c in ctx.cells})
    out += ["Code: " + "; ".join(f"commit {c}" + (" (uncommitted changes)" if d == "True" else "")
                                 for c, d in commits), ""]
    return out


def _env_summary(env: dict) -> dict:
    keep = ("host", "os", "python", "cpu", "memory_gib", "gpus", "packages", "env_vars")
    return {k: env.get(k) for k in keep}


# --- entry points -------------------------------------------------------------------------------------------

def build_report(results_paths: list[Path], out_dir: Path, y_metric: str = "auto") -> Path:
    """Write ``out_dir/report.md`` and ``out_dir/plots/*.png|svg`` from result records; return report.md."""
    results = load_results(results_paths)
    cells = select_cells(results.records)
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    extra = _series_extra_fn(cells)
    styler = plots.Styler([series_key(c, extra) for c in cells])
    ctx = Context(cells, out_dir, choose_y_metric(cells, y_metric), styler, extra)
    counts = {s: sum(c.status == s for c in cells) for s in dict.fromkeys(c.status for c in cells)}
    lines = ["# Benchmark report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from {len(results.records)} "
             f"record(s) in {len(results.files)} file(s): "
             + ", ".join(f"`{p}` ({n})" for p, n in results.files) + ".", "",
             f"{len(cells)} cell(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".", ""]
    if results.problems:
        lines += [f"**{len(results.problems)} unreadable line(s) skipped** (see *Unreadable lines*).", ""]
    for section in (section_accuracy, section_batch, section_all_cells, section_failures, section_notes,
                    section_reruns, section_environment):
        lines += section(ctx)
    if results.problems:
        lines += ["## Unreadable lines", "", *(f"- {md_escape(p)}" for p in results.problems), ""]
    _remove_stale_plots(out_dir / "plots", ctx.written)
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    log.info("wrote %s", path)
    return path


def _remove_stale_plots(folder: Path, keep: Sequence[Path]) -> None:
    """Plots of an earlier report into the same folder would read as current; remove those not rewritten."""
    keep_names = {p.name for p in keep}
    for path in folder.iterdir():
        if path.suffix in (".png", ".svg") and path.name not in keep_names:
            path.unlink()
            log.info("removed stale plot %s", path)


def atomic_write_text(path: Path, text: str) -> None:
    """Temp file + ``os.replace``: a reader never sees half a report."""
    write_text_atomic(Path(path), text if text.endswith("\n") else text + "\n")


