"""``python -m bench``: benchmark one model on one runtime, list runtimes, run the sweep, report, compare.

    python -m bench --runtime ov --model MobileViT_S --batch 8 [--precision bf16] [--scope end2end]
    python -m bench --runtime ort --model MobileViT_S --scenario throughput [--requests 4]
    python -m bench --runtime ort --manifest path/to/model.onnx.json     # bring your own exported model
    python -m bench list [--json]
    python -m bench sweep [--config bench.yaml] [--results PATH] [--retry-errors]
    python -m bench report [RESULTS...] [--out DIR]
    python -m bench compare A.jsonl B.jsonl
    python -m bench recommend results/runs.jsonl --model LeViT_192 --max-latency-ms 10 --max-drop 0.5
    python -m bench tune --model MobileViT_XXS --objective latency --max-drop 10   # adaptive search + recommend
    python -m bench explain --runtime ov --model LeViT_128S --precision int8   # where drift comes from

Every run appends one record (ok or error) to the results file; a usage error (unknown model, bad batch)
appends none. Expected failures print one ``error: ...`` line on stderr and exit 2 (bad arguments) or 1
(the run failed); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.accuracy.drift_pass import DriftSettings
from bench.cell import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DriftPass, run_cell
from bench.cli_common import add_target_arguments, fail, setup_logging
from bench.config import BenchConfig, ConfigError, load_config
from bench.records import Record, append_record
from bench.request import BenchRequest, Output, Target, UsageError, measure_params, with_int8_recipe
from bench.table import error_line, format_drift, format_table, one_line
from core.files import check_appendable, write_text_atomic
from core.preprocess import preprocess_choice
from core.proc import Terminated, exit_code_of, sigterm_interrupts
from export.quantize import Int8Recipe
from runtimes import runtimes_that
from runtimes.base import RuntimeOptions

log = logging.getLogger(__name__)


# --- argument parsing -----------------------------------------------------------------------------------
def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(p)
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--precision", default="fp32", help="fp32 (default), fp16, bf16 or int8")
    p.add_argument("--device", help="cpu, cuda, cuda:N, gpu, ... (default: the runtime's first device)")
    p.add_argument("--threads", type=int, help="CPU threads (default: one per physical core)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="runtime-specific option (repeatable), e.g. --option hint=throughput; "
                        "`python -m bench list` shows each runtime's options")
    p.add_argument("--warmup", type=int, help="warm-up runs after the first run (bench.yaml: measure.warmup)")
    p.add_argument("--iterations", type=int, help="minimum timed runs (bench.yaml: measure.iterations)")
    p.add_argument("--duration", type=float, help="minimum timed seconds (measure.min_duration_s)")
    p.add_argument("--max-duration", type=float, help="stop timing after this many seconds (safety cap)")
    p.add_argument("--scope", help="compute (run only, default) or end2end (host inputs in, outputs out)")
    p.add_argument("--scenario", help="latency (one request at a time, default) or throughput (--requests in "
                                      "flight; images/s and the latency of each request under that load)")
    p.add_argument("--requests", type=int, help="throughput scenario: requests in flight (default: what the "
                                                "runtime recommends, e.g. OpenVINO's optimal number)")
    p.add_argument("--seed", type=int, help="seed of the synthetic inputs (default 0)")
    p.add_argument("--results", help="JSON-lines file to append to (default: results/runs.jsonl)")
    p.add_argument("--json", action="store_true", help="print the record as JSON after the table")
    p.add_argument("--wide", action="store_true", help="print every column of the table, notes inline (default: "
                                                       "the main figures in 100 columns, notes below)")
    p.add_argument("--profile", type=int, nargs="?", const=15, metavar="TOP",
                   help="after timing, profile the model (ort/ov, CPU) and write its top TOP ops by time (default "
                   "15) to <results>-<record id>-profile.md beside the record")
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--record-id", help=argparse.SUPPRESS)
    q = p.add_argument_group("int8 model (made on demand by the export stage, as python -m export --precision int8)")
    q.add_argument("--calibration", metavar="DIR|LIST|NPY",
                   help="calibration images of the int8 model (default: the bundled ones; never evaluation images)")
    q.add_argument("--calibration-size", type=int, metavar="N", help="calibrate on N images spread over the set")
    q.add_argument("--max-drop", type=float, metavar="X",
                   help="ov: NNCF's accuracy control, keeping in float the layers that cost more than X top-1 "
                        "agreement with fp32")
    d = p.add_argument_group("drift (a separate pass after timing)")
    d.add_argument("--drift", action="store_true", help="also measure drift from Paddle's FP32 logits")
    d.add_argument("--data", help="export (default: the images the export stored Paddle's logits for), "
                                  "synthetic, or an image folder / PaddleClas list file")
    d.add_argument("--labels", help="PaddleClas list file (path label) for --data")
    d.add_argument("--preprocess", metavar="eval|infer|CONFIG.yaml", help="PaddleClas preprocessing: eval (default: "
                   "what its published top-1 means), infer, or a PaddleClas training/deploy config (a brought model's)")
    d.add_argument("--enforce-gates", action="store_true",
                   help="exit 1 when the drift gates of bench.yaml fail for this precision")
    return p


def drift_settings_from_args(args: argparse.Namespace, cfg: BenchConfig) -> DriftSettings | None:
    if not (args.drift or args.data or args.labels or args.enforce_gates or args.preprocess):
        return None
    if args.labels and args.data in (None, "export", "synthetic"):
        raise UsageError("--labels needs --data FOLDER (the images the list file names)")
    return DriftSettings(data=args.data or "export", labels=args.labels, gates=cfg.gates,
                         pipeline=preprocess_choice(args.preprocess) if args.preprocess else cfg.sweep.drift_preprocess)


def request_from_args(args: argparse.Namespace, cfg: BenchConfig) -> BenchRequest:
    """Layer CLI flags over bench.yaml over defaults."""
    m = cfg.measure
    pick = _pick
    measure = measure_params(
        pick(args.warmup, m.warmup), pick(args.iterations, m.iterations), pick(args.duration, m.min_duration_s),
        pick(args.max_duration, max(m.max_duration_s, 2 * (args.duration or 0))), args.scope or m.scope,
        pick(args.seed, m.seed))
    target = Target(model=args.model, manifest=args.manifest, opset=args.opset,
                    weights=args.weights or cfg.export.weights, fixed_batch_export=cfg.export.batch != "dynamic",
                    artifacts=args.artifacts or str(cfg.artifacts), no_export=args.no_export,
                    optimize=args.optimize or cfg.export.optimize,
                    **vars(Int8Recipe(args.calibration, args.calibration_size, args.max_drop).resolved()))
    target = with_int8_recipe(target, args.runtime, args.precision, cfg.export.int8)  # where bench.yaml's applies
    scenario = args.scenario or m.scenario
    # bench.yaml's measure.requests applies to throughput runs only; a --requests flag is always passed on, so
    # that --requests without --scenario throughput is the usage error it is.
    requests = args.requests if args.requests is not None else m.requests if scenario == "throughput" else None
    options = RuntimeOptions(device=args.device, precision=args.precision,
                             threads=pick(args.threads, m.threads), batch=args.batch,
                             extra=parse_options(args.option), scenario=scenario, requests=requests)
    return BenchRequest(runtime_name=args.runtime, target=target, runtime=options, measure=measure,
                        drift=drift_settings_from_args(args, cfg),
                        output=Output(args.results or str(cfg.results), args.run_id, args.record_id),
                        enforce_gates=args.enforce_gates)


def parse_options(items: list[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = yaml.safe_load(value)  # "4" -> 4, "true" -> True, "latency" -> "latency"
    return options


def _pick(value, default):
    return default if value is None else value


# --- commands -------------------------------------------------------------------------------------------
def cmd_run(argv: list[str], drift_pass: DriftPass | None = None) -> int:
    args = build_run_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        cfg = load_config(args.config)
        request = request_from_args(args, cfg)
    except (ConfigError, UsageError) as exc:
        return fail(str(exc), EXIT_USAGE, exc, args.debug)
    if args.profile is not None and (args.profile < 1 or not _profilable(request)):
        return fail(f"--profile TOP needs a positive TOP and a runtime that can profile on the CPU "
                    f"({', '.join(profiling_runtimes())})", EXIT_USAGE)
    results = Path(request.output.results)
    try:
        check_appendable(results)  # before measuring, not after
    except OSError as exc:
        return fail(f"results file {results} is not writable ({exc.strerror or exc})", EXIT_FAILED, exc,
                    args.debug)
    result = run_cell(request, drift_pass)
    record = result.record
    if result.usage_error:  # the request was wrong, nothing ran: no record
        return fail(error_line(record.error), EXIT_USAGE, result.exception, args.debug)
    try:
        append_record(results, record)
    except OSError as exc:
        return fail(f"cannot append to {results} ({exc.strerror or exc})", EXIT_FAILED, exc, args.debug)
    if result.exit_code != EXIT_OK:
        return fail(error_line(record.error), result.exit_code, result.exception, args.debug)
    print_run(record, results, args.json, args.wide)
    if args.profile is not None:
        _write_profile(request, record, results, args.profile)
    return _check_gates(request, record)


def profiling_runtimes() -> list[str]:
    return runtimes_that(lambda runtime: runtime.can_profile())


def _profilable(request: BenchRequest) -> bool:
    """Whether the runtime's class can profile (``Runtime.can_profile``), on the CPU."""
    from runtimes import get_runtime
    from runtimes.base import RuntimeUnavailable

    try:
        runtime = get_runtime(request.runtime_name)
    except (ValueError, RuntimeUnavailable):
        return True  # the run reports the unknown or missing runtime itself
    return runtime.can_profile() and (request.runtime.device or "cpu") == "cpu"


def _write_profile(request: BenchRequest, record: Record, results: Path, top: int) -> None:
    """The layer-time table of the model that just ran, beside its record (``bench.layer_times``)."""
    from bench.layer_times import profile_table
    from core.cores import default_threads

    path = results.with_name(f"{results.stem}-{record.record_id}-profile.md")
    table = profile_table(record.runtime.name, Path(record.model.manifest), request.batch,
                          request.runtime.threads or default_threads(), top,
                          f"{record.model.name} opset {record.model.opset} (record {record.record_id})",
                          precision=request.runtime.precision)
    write_text_atomic(path, table)
    print(f"layer times (top {top} ops) written to {path}")


def print_run(record: Record, results: Path, as_json: bool, wide: bool = False) -> None:
    print(format_table([record], wide=wide))
    if record.drift:
        print(format_drift(record))
    for reason in record.contention:
        print(f"warning: measured under contention: {reason}; compare these figures only with care, and "
              "see the README's 'Quiet measurements'", file=sys.stderr)
    for warning in (record.machine or {}).get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"\nrecord {record.record_id} appended to {results}")
    if as_json:
        print("---")
        print(json.dumps(record.to_dict(), indent=1))


def _check_gates(request: BenchRequest, record: Record) -> int:
    gates = record.gates
    if request.enforce_gates and gates and not gates["passed"]:
        failed = [c for c in gates["checks"] if c["passed"] is False]
        return fail(f"drift gates failed for {gates['precision']}: " + ", ".join(
            f"{c['metric']} {c['value']:.4g} vs {c['threshold']:g}" for c in failed), EXIT_FAILED)
    return EXIT_OK


def cmd_cell(argv: list[str]) -> int:
    """Internal: run one sweep cell from its JSON request and append its record (errors included)."""
    request = BenchRequest.from_dict(json.loads(argv[0]))
    setup_logging(False)
    try:
        result = run_cell(request)
    except KeyboardInterrupt as exc:
        return exit_code_of(exc)  # no record: the sweep reruns this cell when resumed
    append_record(Path(request.output.results), result.record)
    if result.exit_code != EXIT_OK:
        print(f"error: {one_line(error_line(result.record.error))}", file=sys.stderr)
    return result.exit_code


# Subcommands that live in their own modules, imported only when asked for: (module, its main, the function that
# builds its argument parser).
_ROUTES = {
    "list": ("bench.list_cli", "main", "build_parser"),
    "list-runtimes": ("bench.list_cli", "main", "build_parser"),
    "sweep": ("bench.sweep.runner", "main", "build_parser"),
    "report": ("bench.report.cli", "main_report", "build_report_parser"),
    "compare": ("bench.report.cli", "main_compare", "build_compare_parser"),
    "recommend": ("bench.recommend.cli", "main", "build_parser"),
    "tune": ("bench.tune.cli", "main", "build_parser"),
    "_side_by_side": ("bench.tune.together", "main", None),  # tune's cells, measured in turns in one process
    "explain": ("bench.explain_cli", "main", "build_parser"),
    "accuracy": ("bench.accuracy_cli", "main", "build_parser"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C: children are stopped, finished records stay. Scoped to this call, so a
    # caller's own handling (a test process, its forked workers) is as it was afterwards.
    with sigterm_interrupts():
        try:
            return _command(argv)
        except KeyboardInterrupt as exc:
            print(f"error: {exc if isinstance(exc, Terminated) else 'interrupted'}", file=sys.stderr)
            return exit_code_of(exc)


def _command(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command in _ROUTES:
        module, function, _ = _ROUTES[command]
        return getattr(importlib.import_module(module), function)(argv[1:])
    if command == "_cell":
        return cmd_cell(argv[1:])
    return cmd_run(argv[1:] if command == "run" else argv)


def parser_for(argv: list[str]) -> tuple[argparse.ArgumentParser | None, list[str]]:
    """The parser ``python -m bench ARGV`` reads its arguments with, and those arguments; nothing runs (the README
    test parses every documented command with it). None for the internal commands, which take JSON."""
    command = argv[0] if argv else ""
    if command in _ROUTES:
        module, _, builder = _ROUTES[command]
        return (getattr(importlib.import_module(module), builder)() if builder else None), argv[1:]
    if command == "_cell":
        return None, argv[1:]
    return build_run_parser(), argv[1:] if command == "run" else argv
