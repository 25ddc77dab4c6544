"""``python -m bench tune --model M | --manifest PATH --objective latency|throughput [budgets] [axes]
[--time-budget MIN]``: an adaptive search instead of the full sweep, then the recommendation.

Every candidate this host can run (runtime x precision x graph level x batch x threads or requests in flight;
``bench.tune.space``) gets a short screening measurement; candidates dominated beyond their noise, or past a
timing budget beyond it, are dropped and about 1/eta of the rest go on to a rung eta times longer
(``bench.tune.search``); the finalists get the full measurement and the drift pass (``bench.tune.runner``).
Every measurement is an ordinary record in the results file (``report`` and ``recommend`` read it; rerun the
same command to resume), and the recommendation is ``bench recommend``'s over this tune's records.
Exit 0 with a choice, 1 without one (or nothing to search here), 2 for bad input (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench.accuracy.drift_pass import DriftSettings
from bench.budgets import BudgetError, Budgets, add_budget_arguments, budgets_from_args
from bench.config import ALL_PRECISIONS, BenchConfig, ConfigError, canonical_runtime, expand_model_patterns, load_config
from bench.recommend.cli import EXIT_NONE, EXIT_OK, EXIT_USAGE, InputError, Parser, positive_int
from bench.recommend.table import format_recommendation
from bench.records import read_records
from bench.report.choice import recommend
from bench.request import Target
from bench.sweep.lock import SweepBusy, SweepLock
from bench.sweep.runner import probe_runtimes
from bench.tune.runner import BudgetSpent, Clock, Search, TuneRun
from bench.tune.space import Candidate, Setting, Space, candidates
from core.cpu import cpu_flags
from core.files import check_appendable
from core.manifest import ManifestError, load_manifest
from core.proc import Terminated, exit_code_of
from export.optimize.levels import DEFAULT_LEVEL, LEVELS
from runtimes import list_runtimes


def build_parser() -> Parser:
    p = Parser(prog="python -m bench tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="zoo model name, e.g. MobileViT_XXS")
    what.add_argument("--manifest", help="an exported model (model.onnx.json or its folder) instead")
    p.add_argument("--opset", type=positive_int, default=17, help="opset of the export (default 17)")
    p.add_argument("--weights", help="seeded, official, or a .pdparams path/URL (default: bench.yaml's)")
    add_budget_arguments(p, objective_required=True)
    axes = p.add_argument_group("candidates (default: everything this host can run)")
    axes.add_argument("--runtimes", nargs="+", help="default: every runtime available here")
    axes.add_argument("--precisions", nargs="+", help="default: every precision each runtime offers here")
    axes.add_argument("--batch", nargs="+", type=positive_int, help="default: 1 (latency), 1 8 (throughput)")
    axes.add_argument("--threads", nargs="+", type=positive_int,
                      help="default: all cores, half of them, one (latency); the runtime's split (throughput)")
    axes.add_argument("--requests", nargs="+", type=positive_int,
                      help="throughput: requests in flight (default: the runtime's recommendation and one per core)")
    axes.add_argument("--optimize", nargs="+", choices=list(LEVELS), help="graph levels (default: all)")
    s = p.add_argument_group("search")
    s.add_argument("--time-budget", type=float, metavar="MIN", help="wall-clock minutes for this run (default: none)")
    s.add_argument("--screen-seconds", type=float, default=Search.screen_s, help="timed seconds of the first rung")
    s.add_argument("--eta", type=positive_int, default=Search.eta, help="rung length factor and 1/keep (default 3)")
    s.add_argument("--rungs", type=positive_int, default=Search.rungs, help="screening rungs at most (default 3)")
    s.add_argument("--finalists", type=positive_int, default=Search.finalists, help="full measurements (default 3)")
    s.add_argument("--min-noise", type=float, default=Search.min_noise, help="noise floor of each run (default 0.03)")
    s.add_argument("--retry-contended", action="store_true",
                   help="measure again what an earlier run of this tune measured under contention")
    p.add_argument("--results", type=Path, help="JSON-lines file (default: bench.yaml results)")
    p.add_argument("--artifacts", help="export folder (default: bench.yaml artifacts)")
    p.add_argument("--config", type=Path, help="bench.yaml: measurement, drift, gates (default ./bench.yaml)")
    p.add_argument("--dry-run", action="store_true", help="list the candidates and what was left out; measure nothing")
    return p


@dataclass
class Job:
    setting: Setting
    search: Search
    space: Space
    model: str


def job_from_args(args: argparse.Namespace) -> Job:
    """Everything the tune needs, checked; ``InputError``/``BudgetError``/``ConfigError`` say what is wrong."""
    budgets = budgets_from_args(args)
    for flag, value in (("--time-budget", args.time_budget), ("--screen-seconds", args.screen_seconds)):
        if value is not None and not value > 0:
            raise InputError(f"{flag} must be a positive number, got {value:g}")
    if not args.min_noise >= 0:
        raise InputError(f"--min-noise must be 0 or more, got {args.min_noise:g}")
    if args.requests and budgets.objective != "throughput":
        raise InputError("--requests (requests in flight) needs --objective throughput")
    cfg = load_config(args.config)
    runtimes = tuple(dict.fromkeys(canonical_runtime(r) for r in args.runtimes or list_runtimes()))
    unknown = [p for p in args.precisions or () if p not in ALL_PRECISIONS]
    if unknown:
        raise InputError(f"unknown precision {unknown[0]!r}; allowed: {', '.join(ALL_PRECISIONS)}")
    target, model = _target(args, cfg)
    levels = tuple(args.optimize) if args.optimize else None
    if target.manifest:
        if levels:
            raise InputError("--optimize chooses the graph levels of the exports tune makes; a --manifest model is "
                             "searched as it is")
        levels = (DEFAULT_LEVEL,)
    space = Space(budgets.objective, runtimes, tuple(args.precisions) if args.precisions else None,
                  tuple(args.batch) if args.batch else None, tuple(args.threads) if args.threads else None,
                  tuple(args.requests) if args.requests else None, levels)
    setting = Setting(target, cfg, str(args.results or cfg.results), _drift(cfg, budgets), cfg.sweep.devices,
                      "latency" if budgets.objective == "latency" else "throughput")
    search = Search(budgets, args.screen_seconds, args.eta, args.rungs, args.finalists, args.min_noise,
                    args.retry_contended)
    return Job(setting, search, space, model)


def _target(args: argparse.Namespace, cfg: BenchConfig) -> tuple[Target, str]:
    common = dict(weights=args.weights or cfg.export.weights, fixed_batch_export=cfg.export.batch != "dynamic",
                  artifacts=args.artifacts or str(cfg.artifacts), no_export=True)
    if args.manifest:
        try:
            manifest = load_manifest(Path(args.manifest))
        except ManifestError as exc:
            raise InputError(str(exc)) from None
        opset = manifest.opset_requested or manifest.opset_written
        path = str(Path(args.manifest).resolve())
        return Target(model=manifest.model, manifest=path, opset=opset, **common), manifest.model
    matched = expand_model_patterns([args.model])
    if len(matched) > 1:
        raise InputError(f"--model {args.model!r} matches {', '.join(matched)}; tune one model at a time")
    return Target(model=matched[0], opset=args.opset, **common), matched[0]


def _drift(cfg: BenchConfig, budgets: Budgets) -> DriftSettings | None:
    if cfg.sweep.drift_data is None:
        if budgets.max_drop is not None:
            raise InputError("--max-drop needs the finalists' drift pass, which bench.yaml turns off "
                             "(sweep.drift: false)")
        return None
    return DriftSettings(data=cfg.sweep.drift_data, labels=cfg.sweep.drift_labels, gates=cfg.gates,
                         cache_dir=str(Path(cfg.artifacts) / "reference-cache"))


def tune_id(job: Job, found: list[Candidate]) -> str:
    """Same model, candidates, budgets, search and measurement -> same id: rerunning the command resumes."""
    drift = asdict(job.setting.drift) if job.setting.drift else None
    search = {**asdict(job.search), "retry_contended": None}  # how to resume is no part of what is searched
    basis = {"target": asdict(job.setting.target), "candidates": [asdict(c) for c in found], "search": search,
             "measure": asdict(job.setting.config.measure), "drift": drift, "scenario": job.setting.scenario}
    return "tune-" + hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:10]


def plan(job: Job) -> tuple[list[Candidate], list[str]]:
    """The candidates this host can run, and what was left out (runtimes unavailable here included)."""
    available = probe_runtimes(job.space.runtimes)
    runtimes = tuple(r for r in job.space.runtimes if available[r][0])
    gone = [f"{r}: not available here ({available[r][1]})" for r in job.space.runtimes if not available[r][0]]
    found, left_out = candidates(replace(job.space, runtimes=runtimes), job.setting.devices, cpu_flags())
    return found, gone + left_out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        job = job_from_args(args)
        check_appendable(Path(job.setting.results))
    except (InputError, BudgetError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: results file {args.results} is not writable ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_NONE
    found, left_out = plan(job)
    for why in left_out:
        print(f"left out: {why}")
    if not found:
        print("error: no candidate can run here (see 'left out' above)", file=sys.stderr)
        return EXIT_NONE
    ident = tune_id(job, found)
    budgets = job.search.budgets
    print(f"tune {ident}: {len(found)} candidate(s) of {job.model}; {budgets.describe()}; results "
          f"{job.setting.results}")
    if args.dry_run:
        for c in found:
            print(f"  {c.runtime} {c.precision} optimize={c.level} b{c.batch} threads {c.threads or 'auto'}"
                  + (f" requests {c.requests or 'auto'}" if job.setting.scenario == "throughput" else ""))
        return EXIT_OK
    return _run(job, ident, found, args)


def _run(job: Job, ident: str, found: list[Candidate], args: argparse.Namespace) -> int:
    clock = Clock(args.time_budget * 60 if args.time_budget else None)
    lock = SweepLock(Path(job.setting.results), f"python -m bench tune --model {job.model}")
    try:
        lock.acquire()
        run = TuneRun(ident, job.setting, job.search, clock, lock.fd)
        try:
            run.run(found)
        except BudgetSpent:
            print(f"time budget of {args.time_budget:g} min spent after {run.cells_run} cell(s): the recommendation "
                  "below is from what was measured; rerun the same command to go on (it resumes)")
    except SweepBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NONE
    except KeyboardInterrupt as exc:
        how = str(exc) if isinstance(exc, Terminated) else "interrupted"
        print(f"\n{how}: the cell in flight was stopped and not recorded; finished cells are in "
              f"{job.setting.results}; rerun the same command to resume", file=sys.stderr)
        return exit_code_of(exc)
    finally:
        lock.release()
    records = [r for r in read_records(Path(job.setting.results)).records if str(r.record.run_id).startswith(ident)]
    recs = recommend(records, job.search.budgets, job.model, min_noise=job.search.min_noise)
    print("\n" + "\n\n".join(format_recommendation(rec) for rec in recs))
    print(f"\ntook {clock.elapsed / 60:.1f} min; records under run ids {ident}-*; `python -m bench report "
          f"{job.setting.results}` draws them")
    return EXIT_OK if recs and all(rec.choice is not None for rec in recs) else EXIT_NONE

