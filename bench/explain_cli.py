"""``python -m bench explain``: parse the flags, resolve the model ``python -m bench`` would run (made on demand),
then explain it with ``bench.explain`` (see ``bench.explain.cli`` for the explain-specific flags and output)."""

from __future__ import annotations

import argparse

from bench.cell import EXIT_FAILED, EXIT_USAGE, BenchFailure, resolve_manifest
from bench.cli_common import add_target_arguments, fail, setup_logging
from bench.config import ConfigError, canonical_runtime, load_config
from bench.explain import cli as explain_cli
from bench.explain.run import UNSUPPORTED, ExplainError
from bench.launcher import ExportFailed
from bench.request import BenchRequest, UsageError, validate, with_int8_recipe
from bench.request import Target as BenchTarget
from runtimes.base import RuntimeOptions
from runtimes.host import default_threads


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench explain", description=explain_cli.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(p)
    p.add_argument("--precision", help="fp32, fp16, bf16 (ov) or int8 (default: the manifest's, else fp32)")
    p.add_argument("--batch", type=int, default=8, help="deployed batch of a dynamic-batch model on ov (default 8)")
    p.add_argument("--threads", type=int, help="CPU threads (default: one per physical core)")
    p.add_argument("--json", action="store_true", help="print the explain section as JSON at the end")
    explain_cli.add_explain_arguments(p)
    return p


def main(argv: list[str]) -> int:
    """Explain where a runtime/precision departs from ORT fp32, layer by layer (``bench.explain``)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        runtime = canonical_runtime(args.runtime)
        if runtime in UNSUPPORTED:
            return fail(f"explain on {runtime}: {UNSUPPORTED[runtime]}", EXIT_FAILED)
        explain_cli.check_arguments(args)
        cfg = load_config(args.config)
        # The model `python -m bench` would run at this precision (an int8 or fp16 one made on demand, with
        # bench.yaml's int8 recipe), so explain and the benchmark look at the same model.
        precision = args.precision or "fp32"
        target = BenchTarget(model=args.model, manifest=args.manifest, opset=args.opset,
                             weights=args.weights or cfg.export.weights, artifacts=args.artifacts or str(cfg.artifacts),
                             no_export=args.no_export, optimize=args.optimize or cfg.export.optimize)
        target = with_int8_recipe(target, runtime, precision, cfg.export.int8)
        options = RuntimeOptions(precision=precision, threads=args.threads, batch=args.batch)
        request, _ = validate(BenchRequest(runtime_name=runtime, target=target, runtime=options))
    except (ConfigError, UsageError, ValueError) as exc:
        return fail(str(exc), EXIT_USAGE, exc, args.debug)
    try:
        chosen = explain_cli.resolve_target(runtime, args.precision, resolve_manifest(request), args.batch,
                                            args.threads or default_threads(), args.against)
        return explain_cli.explain_and_print(chosen, explain_cli.settings_from_args(args, cfg.gates), args.out,
                                             args.json)
    except (BenchFailure, ExportFailed, ExplainError, OSError) as exc:
        return fail(str(exc), EXIT_FAILED, exc, args.debug)
