"""The text the CLI prints for records: the results table and the drift summary."""

from __future__ import annotations

import textwrap

from bench.records import Record

COLUMNS = ("model", "opset", "runtime", "prec", "batch", "scenario", "p50 ms", "p90 ms", "p99 ms", "mean±std ms",
           "CV", "img/s", "peak MiB", "load s", "first ms", "notes")
_TEXT_COLUMNS = ("model", "runtime", "prec", "scenario")  # left-aligned; numbers right-aligned; notes run free
# The default table fits a 100-column terminal: the figures that decide, each row's notes wrapped below it.
# --wide prints every column with the notes inline; --json the whole record.
NARROW = ("model", "opset", "runtime", "prec", "batch", "scenario", "p50 ms", "p99 ms", "img/s", "peak MiB")
WIDTH = 100
PREC = COLUMNS.index("prec")


def precision_label(record: Record, compact: bool = False) -> str:
    """The precision asked, and what ran when that differs (``bf16 (ran fp32)``, compact ``bf16→fp32``)."""
    asked, ran = record.runtime.precision, record.runtime.precision_ran
    if not (ran and asked and ran != asked):
        return str(asked)
    return f"{asked}→{ran}" if compact else f"{asked} (ran {ran})"


def scenario_label(record: Record) -> str:
    """``latency``, or ``throughput x4`` with the requests that were in flight (asked, when none ran)."""
    if record.params.scenario_ran != "throughput":
        return "latency"
    ran = record.timing.requests if record.timing else None
    return f"throughput x{ran or record.params.requests or ' auto'}"


def peak_mib(record: Record) -> str:
    """The cell process's peak resident memory over load, warm-up and timed loop, in MiB."""
    value = (record.memory or {}).get("peak_mib")
    return "" if value is None else f"{value:.0f}"


def table_rows(records: list[Record]) -> list[tuple[str, ...]]:
    rows = []
    for r in records:
        head = (str(r.model.name), str(r.model.opset), str(r.runtime.name), precision_label(r),
                str(r.params.batch), scenario_label(r))
        timing = r.timing
        if r.status != "ok" or timing is None or timing.latency_ms is None:
            message = r.error.message if r.error else ""
            rows.append(head + ("",) * 9 + (f"{r.status.upper()}: {one_line(message)}",))
            continue
        lat = timing.latency_ms
        notes = list(r.runtime.notes or []) + list(timing.notes or [])
        if timing.stopped_by == "max_duration":
            notes.insert(0, f"stopped at max duration after {lat['count']} runs")
        if r.contended:
            notes.insert(0, "CONTENDED: other processes were busy")
        rows.append(head + (
            ms(lat["p50"]), ms(lat["p90"]), ms(lat["p99"]), f"{ms(lat['mean'])}±{ms(lat['std'])}",
            f"{lat['cv']:.1%}", f"{timing.throughput_ips:.1f}", peak_mib(r), f"{timing.load_s:.2f}",
            ms(timing.first_run_ms), "; ".join(notes),
        ))
    return rows


def ms(value: float) -> str:
    """Enough digits to be useful from microseconds (null runtime) to seconds (big batches)."""
    if value >= 100:
        return f"{value:.1f}"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.1e}"


def format_table(records: list[Record], wide: bool = False) -> str:
    """The results table: every column with the notes inline (``wide``), else the ``NARROW`` columns in at most
    ``WIDTH`` characters with each row's notes (fallbacks, contention, errors) wrapped on lines below."""
    rows = table_rows(records)
    if wide:
        return _aligned(COLUMNS, rows, notes=True)
    picked = [COLUMNS.index(name) for name in NARROW]
    narrow = [tuple(precision_label(r, compact=True) if i == PREC else row[i] for i in picked)
              for r, row in zip(records, rows, strict=True)]
    lines = [_aligned(NARROW, narrow)]
    for record, row in zip(records, rows, strict=True):
        if row[-1]:
            label = "notes" if len(records) == 1 else f"{record.model.name} {record.runtime.name} " \
                f"{record.runtime.precision} b{record.params.batch} {scenario_label(record)}"
            lines.append(textwrap.fill(f"{label}: {row[-1]}", WIDTH, subsequent_indent="    "))
    return "\n".join(lines)


def _aligned(columns: tuple[str, ...], rows: list[tuple[str, ...]], notes: bool = False) -> str:
    """Columns padded to their widest cell (text left, numbers right); a last ``notes`` column runs free."""
    rows = [columns, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for row in rows:
        cells = [c.ljust(widths[i]) if columns[i] in _TEXT_COLUMNS else c.rjust(widths[i]) for i, c in enumerate(row)]
        if notes:
            cells[-1] = row[-1]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_drift(record: Record) -> str:
    """The drift pass in a few lines: agreement, flips, accuracy change with its interval, logit figures."""
    d, gates = record.drift, record.gates
    low, high = d["agreement_ci"]
    lines = [f"\ndrift vs Paddle FP32 on {d['n']} images ({d['reference_source']}):",
             f"  top-1 agreement {d['agreement']:.2%} (95% CI {low:.2%}..{high:.2%}), {d['flipped']} flipped;"
             f" max |diff| {_num(d['max_abs_diff'])}, mean |diff| {_num(d['mean_abs_diff'])},"
             f" min cosine {_num(d['cosine_min'], '.6f')}; finite: {d['finite']}"]
    if d.get("labelled"):
        lo, hi = d["top1_delta_ci"]
        lines.append(f"  top-1 {d['candidate_top1']:.2%} vs Paddle {d['reference_top1']:.2%}: delta "
                     f"{d['top1_delta']:+.2%} (95% CI {lo:+.2%}..{hi:+.2%}), McNemar p={d['mcnemar_p']:.3g}")
        if record.model.weights and record.model.weights.get("trained") is False:
            kind = record.model.weights.get("kind") or "seeded"
            lines.append(f"  ({kind} weights{', the default' if kind == 'seeded' else ''}: an untrained network, "
                         "so top-1 accuracy near 0 % is expected; agreement with Paddle is the figure that matters "
                         "here. --weights official gives the trained model's accuracy)")
    if gates:
        lines.append(f"  gates ({gates['precision']}): {'PASS' if gates['passed'] else 'FAIL'}")
    if d["data"].get("skipped"):
        skipped = d["data"]["skipped"]
        shown = ", ".join(s["name"] for s in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        lines.append(f"  skipped {len(skipped)} unreadable image(s): {shown} (all named in the record)")
    return "\n".join(lines)


def _num(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def error_line(error) -> str:
    """The record's error as the user reads it; our own error types need no prefix."""
    if error.type in ("UsageError", "BenchFailure", "DataError", "ExportFailed"):
        return error.message
    return f"{error.type}: {error.message}"


def one_line(message: str, limit: int = 400) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
