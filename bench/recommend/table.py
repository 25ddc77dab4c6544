"""A recommendation as the terminal shows it: one short table (the choice with its margin to each budget, every
configuration better on the objective with why it was rejected, the ones tied with the choice; the rows are
the report's, ``bench.report.recommendation.rows``), then the commands that make and run the choice; or, when
nothing qualifies, which budget bound."""

from __future__ import annotations

from bench.recommend.commands import export_command, run_command
from bench.report.choice import Recommendation
from bench.report.recommendation import drop_bases, header, rows, untrained_banner

_TEXT_COLUMNS = (0, 1)


def format_table(table: list[tuple[str, ...]], percentile: str) -> str:
    """Aligned columns: text left, numbers right, the last column free."""
    table = [header(percentile), *table]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [c.ljust(widths[i]) if i in _TEXT_COLUMNS else c.rjust(widths[i]) for i, c in enumerate(row)]
        cells[-1] = row[-1]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def format_recommendation(rec: Recommendation) -> str:
    """The recommendation for one model and place, as printed."""
    lines = [f"{rec.model} on {rec.where}: {rec.budgets.describe()}"]
    if rec.untrained:
        lines.append(untrained_banner(rec))
    table = rows(rec)
    if table:
        lines += ["", format_table(table, rec.budgets.percentile)]
    if len(rec.judged) > len(table):
        lines.append(f"  ({len(rec.judged) - len(table)} other configuration(s), worse on the objective, not shown)")
    if drop_bases(rec):
        lines.append(f"  {drop_bases(rec)}")
    if rec.choice is None:
        lines += ["", f"no configuration qualifies: {rec.binding}"]
        return "\n".join(lines)
    export = export_command(rec.choice.cell)
    brought = f"(brought as an export: {rec.choice.cell.record.model.manifest})"
    lines += ["", f"make it:  {export or brought}",
              f"run it:   {run_command(rec.choice.cell)}"]
    return "\n".join(lines)
