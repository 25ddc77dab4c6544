"""Markdown building blocks of the report and the comparison: escaped tables, number formats, and the one
rule for a table cell of a run that failed (its status) or a field a record lacks (``missing``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.report.results import Cell
from core.files import write_text_atomic

MISSING = "missing"
WHISKERS = "whiskers: latency p10 to p90"


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


def fmt_ci(ci: Sequence[float] | None, scale: float = 100.0, digits: int = 2) -> str:
    """``[lo, hi]`` of an interval (a fraction, shown in % by default); ``missing`` when there is none."""
    if ci is None:
        return MISSING
    return f"[{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]"


def cell_value(cell: Cell, value: float | None, fmt: Callable[[float], str]) -> str:
    """A table cell: the status of a failed or skipped run, ``missing`` for an absent field."""
    if cell.failed:
        return cell.status
    return MISSING if value is None else fmt(value)


def latency_cells(cell: Cell) -> tuple[str, str, str]:
    """p50, p10 and p90 of one batch, as table cells."""
    return tuple(cell_value(cell, cell.latency(k), fmt_ms) for k in ("p50", "p10", "p90"))


def atomic_write_text(path: Path, text: str) -> None:
    """Temp file + ``os.replace``: a reader never sees half a report."""
    write_text_atomic(Path(path), text if text.endswith("\n") else text + "\n")
