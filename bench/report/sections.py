"""The report's table sections: every cell, the failed and skipped ones, the notes the runs recorded, the
re-runs, and the environment. Each section is a function of the ``Context`` returning Markdown lines.
(The sections with a figure are in ``bench.report.figures``.)"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.env import cpu_name
from bench.report import plots
from bench.report.markdown import MISSING, cell_value, fmt_ci, fmt_ms, fmt_pct, md_table
from bench.report.recommendation import Recommended
from bench.report.results import RUNTIME_ORDER, Cell, rank, timestamp_of


@dataclass
class Context:
    """What every section reads: the cells (in report order), the y metric, the series styles, and the
    plots written so far."""

    cells: list[Cell]
    out_dir: Path
    metric: str
    styler: plots.Styler
    series_extra: Callable[[Cell], str]
    written: list[Path] = field(default_factory=list)
    recommended: Recommended | None = None  # the Recommendation section's, when budgets were given

    def series(self, cell: Cell) -> plots.SeriesKey:
        return series_key(cell, self.series_extra)

    def runtime(self, cell: Cell) -> str:
        """The runtime column: with the scope and host when those vary within the report."""
        return " ".join(p for p in (cell.runtime, self.series_extra(cell)) if p)


def series_key(cell: Cell, extra: Callable[[Cell], str]) -> plots.SeriesKey:
    """A legend entry; a precision the runtime lowered or raised shows what ran, e.g. ``bf16 (ran fp32)``."""
    ran = cell.ran
    precision = cell.precision if ran in (None, cell.precision) else f"{cell.precision} (ran {ran})"
    return plots.SeriesKey(cell.runtime, precision, cell.opset, extra(cell))


def series_extra_fn(cells: Sequence[Cell], with_requests: bool = True) -> Callable[[Cell], str]:
    """What tells series apart beyond runtime, precision and opset: the threads asked, the scope, the host and
    the cluster target, when they vary, and the requests in flight asked of throughput cells (``x4``, ``x auto``)
    when those vary."""
    scopes = {c.scope for c in cells}
    hosts = {c.host for c in cells}
    targets = {c.target for c in cells}
    threads = {c.record.params.threads for c in cells}
    asked = {c.record.params.requests for c in cells if c.scenario == "throughput"}

    def extra(c: Cell) -> str:
        parts = []
        if len(threads) > 1:
            parts.append(f"t{c.record.params.threads or ' auto'}")
        if len(scopes) > 1:
            parts.append(str(c.scope))
        if len(hosts) > 1:
            parts.append(f"@{c.host}")
        if len(targets) > 1:
            parts.append(f"[{c.target or 'any node'}]")
        if with_requests and len(asked) > 1 and c.scenario == "throughput":
            parts.append(f"x{c.record.params.requests or ' auto'}")
        return " ".join(parts)

    return extra


# --- all cells ----------------------------------------------------------------------------------------------

ALL_CELLS_HEADER = ("model", "batch", "opset", "runtime", "precision", "ran", "scope", "scenario", "status",
                    "p50 ms", "p90 ms", "p99 ms", "CV %", "images/s", "peak MiB", "load s", "top-1 %", "agreement %",
                    "Δ top-1 pp [95 % CI]", "max abs diff", "min cosine", "finite", "gates", "error")


def section_all_cells(ctx: Context) -> list[str]:
    rows = [_all_cells_row(ctx, c) for c in ctx.cells]
    return ["## All cells", "", "One row per cell (the record used; see *Re-runs*). `missing`: the record "
            "lacks the field (for drift columns: no drift result was recorded). `ran`: the precision the "
            "runtime reports it ran. `scenario`: latency (one request at a time) or throughput x N (N requests "
            "in flight). `peak MiB`: the cell process's peak resident memory over load, warm-up and timed loop.",
            "", md_table(ALL_CELLS_HEADER, rows), ""]


def _all_cells_row(ctx: Context, c: Cell) -> tuple:
    drift = c.drift

    def dv(key: str, fmt: Callable[[float], str]) -> str:
        if not c.failed and drift is None:
            return MISSING
        return cell_value(c, drift.number(key) if drift else None, fmt)

    delta_ci = drift.interval("top1_delta_ci") if drift else None
    ci_suffix = f" {fmt_ci(delta_ci)}" if not c.failed and delta_ci else ""
    return (c.model, c.batch, c.opset, ctx.runtime(c), c.precision, MISSING if c.ran is None else c.ran,
            c.scope, c.scenario_label, c.status,
            *(cell_value(c, c.latency(k), fmt_ms) for k in ("p50", "p90", "p99")),
            cell_value(c, c.latency("cv"), lambda v: f"{100 * v:.1f}"),
            cell_value(c, c.timing_number("throughput_ips"), lambda v: f"{v:.1f}"),
            cell_value(c, c.memory("peak_mib"), lambda v: f"{v:.0f}"),
            cell_value(c, c.timing_number("load_s"), lambda v: f"{v:.2f}"),
            dv("candidate_top1", fmt_pct), dv("agreement", fmt_pct),
            dv("top1_delta", lambda v: f"{100 * v:+.2f}") + ci_suffix,
            dv("max_abs_diff", lambda v: f"{v:.2e}"), dv("cosine_min", lambda v: f"{v:.6f}"),
            finite_text(c), gates_text(c), c.message)


def finite_text(c: Cell) -> str:
    if c.failed:
        return c.status
    drift = c.drift
    if drift is None or drift.finite is None:
        return MISSING
    if drift.finite:
        return "yes"
    return f"NO ({drift.raw('nonfinite_values')} values in {drift.raw('nonfinite_images')} images)"


def gates_text(c: Cell) -> str:
    if c.failed:
        return c.status
    gates = c.gates
    if gates is None:
        return MISSING
    if gates.passed:
        return "pass"
    return "FAIL: " + ", ".join(f"{x.metric}={x.value} vs {x.threshold}" for x in gates.failed)


# --- failures, notes, re-runs -------------------------------------------------------------------------------

def section_failures(ctx: Context) -> list[str]:
    rows = [(c.label, c.status, c.timestamp, c.message, c.used.source) for c in ctx.cells if not c.ok]
    if not rows:
        return ["## Failed and skipped cells", "", "None: every cell's latest usable record is ok.", ""]
    header = ("cell", "status", "when (UTC)", "message", "record")
    return ["## Failed and skipped cells", "", md_table(header, rows), ""]


def _cell_notes(c: Cell) -> list[str]:
    notes = [str(n) for n in c.record.runtime.notes or []] + c.harness_notes
    if c.ran is not None and c.ran != c.precision:
        notes.append(f"asked {c.precision}, ran {c.ran}")
    if c.stopped_by == "max_duration":
        notes.append(f"timing stopped at max duration after {c.latency_raw('count')} runs")
    if c.drift is not None and c.drift.finite is False:
        notes.append("non-finite logits")
    if c.ok and gates_text(c).startswith("FAIL"):
        notes.append("drift gates failed: " + gates_text(c)[6:])
    return notes


def section_notes(ctx: Context) -> list[str]:
    rows = [(c.label, "; ".join(notes)) for c in ctx.cells if (notes := _cell_notes(c))]
    out = ["## Notes recorded by the runs", "",
           "Fallbacks, lowered precision and other remarks the runtime adapters and the harness recorded.",
           ""]
    out += [md_table(("cell", "notes"), rows) if rows else "No notes recorded.", ""]
    groups: dict[tuple, int] = {}
    for c in ctx.cells:
        if c.ok:
            key = (c.runtime, c.precision, _compact(c.record.runtime.effective or {}))
            groups[key] = groups.get(key, 0) + 1
    out += ["Settings that took effect (`runtime.effective`; values longer than 80 characters are in the "
            "records):", "",
            md_table(("runtime", "precision asked", "effective settings", "cells"),
                     [(*k, n) for k, n in groups.items()]) if groups else "No ok cell.", ""]
    return out


def _compact(effective: dict) -> str:
    parts = []
    for k, v in sorted(effective.items()):
        text = json.dumps(v, sort_keys=True, default=str)
        parts.append(f"{k}={text if len(text) <= 80 else '(see record)'}")
    return ", ".join(parts) or MISSING


def section_contention(ctx: Context) -> list[str]:
    rows = [(c.label, "; ".join(c.contention)) for c in ctx.cells if c.contention]
    if not rows:
        return []
    return ["## Measured under contention", "",
            f"{len(rows)} cell(s) were measured while other processes were busy on their cores "
            "(`machine.contended` in the record). Their figures are shown but judged against nothing: no "
            "Pareto front, no faster or slower. Measure them again on a quiet machine (README: Quiet "
            "measurements).", "", md_table(("cell", "why"), rows), ""]


def section_reruns(ctx: Context) -> list[str]:
    rows = []
    for c in ctx.cells:
        if len(c.history) > 1:
            latest = c.history[-1]
            remark = ""
            if latest is not c.used:
                error = latest.record.error
                why = (error.message if error else None) or latest.invalid or ""
                if latest.status == "ok" and latest.record.contended:
                    why = "measured under contention"
                remark = f"latest run ({timestamp_of(latest)}) was {latest.status}: {why}"
            statuses = [x.status + (" (contended)" if x.status == "ok" and x.record.contended else "")
                        for x in c.history]
            rows.append((c.label, len(c.history), ", ".join(statuses),
                         f"{c.used.status} at {c.timestamp}", remark))
    if not rows:
        return ["## Re-runs", "", "Every cell was run once.", ""]
    return ["## Re-runs", "", f"{len(rows)} cell(s) were run more than once; the tables use the latest ok "
            "record measured without contention (else the latest ok record, else the latest record).", "",
            md_table(("cell", "records", "statuses (oldest first)", "used", "remark"), rows), ""]


# --- environment --------------------------------------------------------------------------------------------

def section_environment(ctx: Context) -> list[str]:
    envs: dict[str, tuple[dict, list[Cell]]] = {}
    for c in ctx.cells:
        env = c.environment
        envs.setdefault(json.dumps(_env_summary(env), sort_keys=True), (env, []))[1].append(c)
    out = ["## Environment", ""]
    for i, (env, cells) in enumerate(envs.values(), 1):
        heading = f"### Environment {i} ({len(cells)} cell(s))" if len(envs) > 1 else f"{len(cells)} cell(s):"
        out += [heading, "", md_table(("", "value"), _env_rows(env)), ""]
    versions = sorted({(c.runtime, json.dumps(c.record.runtime.versions or {}, sort_keys=True),
                        c.record.runtime.device) for c in ctx.cells},
                      key=lambda t: (rank(t[0], RUNTIME_ORDER), t[1], str(t[2])))
    out += ["Runtime versions and devices:", "",
            md_table(("runtime", "versions", "device"),
                     [(r, ", ".join(f"{k} {v}" for k, v in json.loads(v).items()) or MISSING, d or MISSING)
                      for r, v, d in versions]), ""]
    commits = sorted({(str(c.git.get("commit")), str(c.git.get("dirty"))) for c in ctx.cells})
    out += ["Code: " + "; ".join(f"commit {c}" + (" (uncommitted changes)" if d == "True" else "")
                                 for c, d in commits), ""]
    return out


def _env_rows(env: dict) -> list[tuple]:
    cpu, pkgs = env.get("cpu") or {}, env.get("packages") or {}
    flags = ", ".join(k for k, v in (cpu.get("flags") or {}).items() if v) or "none of those probed"
    gpus = "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory_mib')} MiB)"
                     for g in env.get("gpus") or []) or "none"
    rows = [("host", env.get("host")), ("OS", env.get("os")), ("Python", env.get("python")),
            ("CPU", cpu_name(cpu)),
            ("cores (logical / physical / usable)",
             f"{cpu.get('logical_cores')} / {cpu.get('physical_cores')} / {cpu.get('usable_cores')}"),
            ("CPU flags", flags), ("governor", cpu.get("governor")),
            ("memory GiB", env.get("memory_gib")),
            ("GPUs", gpus), ("environment variables", json.dumps(env.get("env_vars") or {})),
            ("packages", ", ".join(f"{k} {v}" for k, v in pkgs.items() if v) or MISSING)]
    return [(k, MISSING if v is None else v) for k, v in rows]


def _env_summary(env: dict) -> dict:
    keep = ("host", "os", "python", "cpu", "memory_gib", "gpus", "packages", "env_vars")
    return {k: env.get(k) for k in keep}
