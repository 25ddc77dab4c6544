"""The report's section for a sweep across hosts: one table per target (bench.yaml ``targets:``), the node that
measured each cell beside it. Written only when some record was placed on a target (``placement``).

Latency is never pooled across hosts: a cell is keyed by its host and its target (``results.select_cells``),
so the same cell measured on two machines is two rows, each with its own figures.
"""

from __future__ import annotations

from bench.report.markdown import cell_value, latency_cells, md_table
from bench.report.results import Cell, group_cells
from bench.report.sections import Context

HEADER = ("model", "runtime", "precision", "opset", "batch", "scenario", "host", "node", "attempt", "status",
          "p50 ms", "p10 ms", "p90 ms", "images/s", "note")


def section_targets(ctx: Context) -> list[str]:
    if not any(c.target for c in ctx.cells):
        return []
    out = ["## Per target", "",
           "A table per kind of machine the sweep placed cells on (bench.yaml `targets:`), each cell with the "
           "host and Ray node that measured it. Figures are never pooled across hosts: a cell measured on two "
           "hosts has a row for each. `attempt 2`: the cell's first node failed mid-cell (see the note) and "
           "another node of the same target ran it.", ""]
    drawn, undrawn = group_cells(ctx.cells, lambda c: c.target or "any node")
    for target, cells in {**drawn, **undrawn}.items():
        hosts = sorted({str(c.host) for c in cells})
        out += [f"### {target}", "", f"{len(cells)} cell(s) on {len(hosts)} host(s): {', '.join(hosts)}.", "",
                md_table(HEADER, [_row(c) for c in cells]), ""]
    return out


def _row(c: Cell) -> tuple:
    placement = c.record.placement if isinstance(c.record.placement, dict) else {}
    retry = placement.get("retry_of") or {}
    notes = [c.message] if not c.ok else []
    if retry:
        notes.append(f"first attempt on {retry.get('node')} failed: {retry.get('error')}")
    if c.contention:
        notes.append("contended (see *Measured under contention*)")
    node = placement.get("node_id")
    return (c.model, c.runtime, c.precision, c.opset, c.batch, c.scenario_label, c.host,
            node[:12] if node else "?", placement.get("attempt", 1), c.status, *latency_cells(c),
            cell_value(c, c.timing_number("throughput_ips"), lambda v: f"{v:.1f}"), "; ".join(notes))
