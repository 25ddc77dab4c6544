"""``python -m bench recommend RESULTS... --model M [--target T] (--max-latency-ms X | --min-throughput N)
[--max-drop P] [--batch B] [--objective latency|throughput] [--percentile p90] [--min-noise F]``

From existing records, per model and host (or target), the configuration to deploy: the best on the objective
among those that meet every budget, judged conservatively (latency by its p90 or the percentile asked, drift
by the upper end of its 95 % interval: on labels when the records have them, else on agreement with Paddle).
It prints the choice with its margin to each budget, every configuration better on the objective with why it
was rejected, and the commands that make and run the choice. Exit 0 with a choice; 1 when no configuration
qualifies (it says which budget bound); 2 for bad input (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.budgets import BudgetError, add_budget_arguments, budgets_from_args
from bench.recommend.table import format_recommendation
from bench.records import LoadedRecord
from bench.report.choice import Recommendation, recommend
from bench.report.judge import where_of
from bench.report.results import Cell, ReportError, load_results, select_cells

EXIT_OK, EXIT_NONE, EXIT_USAGE = 0, 1, 2


class InputError(ValueError):
    """Bad input to recommend or tune: one ``error:`` line, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are the project's one ``error:`` line (exit 2), without the usage block."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> Parser:
    p = Parser(prog="python -m bench recommend", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="JSON-lines results files or folders of them")
    p.add_argument("--model", required=True, help="the model to deploy (as its records name it)")
    p.add_argument("--target", help="only this target or host (default: a recommendation for each one)")
    p.add_argument("--batch", type=positive_int, help="only configurations at this batch")
    p.add_argument("--min-noise", type=float, default=0.0,
                   help="floor of each run's relative noise when telling objective figures apart (default 0)")
    add_budget_arguments(p)
    return p


def check_model(model: str, records: Sequence[LoadedRecord]) -> None:
    """An unknown model, or records of other models only: ``InputError`` naming what the records hold."""
    held = sorted({str(r.record.model.name) for r in records})
    if model in held:
        return
    from export.models import MODELS

    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; zoo models: {', '.join(MODELS)}; the results hold: "
                         f"{', '.join(held)}")
    raise InputError(f"the results hold no record of {model} (only of {', '.join(held)}): pass the results of a "
                     f"sweep or tune of {model}")


def check_selection(recs: list[Recommendation], model: str, records: Sequence[LoadedRecord], target: str | None,
                    batch: int | None) -> None:
    """A --target or --batch that leaves no record of the model: ``InputError`` naming what there is."""
    if recs:
        return
    cells: list[Cell] = [c for c in select_cells(records) if c.model == model]
    places = sorted({where_of(c) for c in cells} | {str(c.host) for c in cells})
    batches = sorted({c.batch for c in cells if c.batch is not None})
    if target is not None and target not in places:
        raise InputError(f"no record of {model} on {target!r}; its records were made on: {', '.join(places)}")
    raise InputError(f"no record of {model} at batch {batch}; its records have batch "
                     f"{', '.join(map(str, batches))}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.max_latency_ms is None and args.min_throughput is None:
            raise InputError("give a budget: --max-latency-ms X or --min-throughput N")
        budgets = budgets_from_args(args, batch=args.batch)
        records = load_results(args.results).records
        check_model(args.model, records)
        recs = recommend(records, budgets, args.model, args.target, args.min_noise)
        check_selection(recs, args.model, records, args.target, args.batch)
    except (InputError, BudgetError, ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print("\n\n".join(format_recommendation(rec) for rec in recs))
    return EXIT_OK if all(rec.choice is not None for rec in recs) else EXIT_NONE
