"""``python -m bench report`` and ``python -m bench compare``: argument parsing and the one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.budgets import BudgetError, Budgets, add_budget_arguments, budgets_from_args, given_on_command_line
from bench.config import ConfigError, load_config
from bench.records import DEFAULT_RESULTS
from bench.report.build import build_report
from bench.report.compare import compare
from bench.report.markdown import atomic_write_text
from bench.report.results import Y_METRICS, ReportError

DEFAULT_OUT = Path("results/report")


def main_report(argv: list[str] | None = None) -> int:
    """Exit 0 and print the report path, or one ``error:`` line and exit 1."""
    p = argparse.ArgumentParser(prog="python -m bench report",
                                description="Turn result records into a Markdown report with PNG/SVG plots.")
    p.add_argument("results", nargs="*", type=Path, default=[DEFAULT_RESULTS],
                   help=f"JSON-lines results files or folders of them (default: {DEFAULT_RESULTS})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--y", choices=Y_METRICS, default="auto",
                   help="y axis: top-1 accuracy, top-1 agreement with Paddle, or auto (accuracy when every "
                        "drift result is labelled and no weights are seeded)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")
    p.add_argument("--config", type=Path, help="bench.yaml whose recommend: budgets make the Recommendation section "
                                               "(default: ./bench.yaml if present)")
    p.add_argument("--batch", type=int, help="Recommendation: only configurations at this batch")
    add_budget_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        path = build_report(args.results, args.out, args.y, report_budgets(args))
    except (ReportError, OSError, ConfigError, BudgetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def report_budgets(args: argparse.Namespace) -> tuple[Budgets, str] | None:
    """The Recommendation section's budgets: the command line's, else bench.yaml's ``recommend:``, else none."""
    if given_on_command_line(args) or args.batch is not None:
        return budgets_from_args(args, args.batch), "the command line"
    budgets = load_config(args.config).recommend
    return (budgets, f"{args.config or 'bench.yaml'} recommend:") if budgets else None


def main_compare(argv: list[str] | None = None) -> int:
    """Print (or write) the comparison; one ``error:`` line and exit 1."""
    p = argparse.ArgumentParser(prog="python -m bench compare",
                                description="Compare two result sets: ratios B/A with noise bands.")
    p.add_argument("a", type=Path, help="results file or folder of *.jsonl (the baseline)")
    p.add_argument("b", type=Path, help="results file or folder of *.jsonl (the candidate)")
    p.add_argument("--out", type=Path, help="write the Markdown here instead of printing it")
    p.add_argument("--min-noise", type=float, default=0.0,
                   help="floor for each side's relative noise, e.g. 0.02 for 2 %% (default 0)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        text = compare([args.a], [args.b], args.min_noise)
        if args.out:
            atomic_write_text(args.out, text)
            print(args.out)
        else:
            print(text)
    except (ReportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
