"""``python -m export``: export zoo models (or a brought Paddle inference model) to ONNX at the opsets asked,
with validation and parity. Prints a table; an error is one ``error:`` line and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from core.manifest import load_manifest, manifest_path_of
from core.preprocess import Preprocess
from core.proc import keep_signal_handlers
from core.progress import take_channel
from core.yamlio import ConfigError
from export.config import read_export_config
from export.convert import MAX_OPSET, MIN_OPSET, ExportError
from export.layout import DEFAULT_ROOT, LayoutError, discard_unfinished, parse_batch
from export.models import MODELS, UnknownModelError
from export.optimize.levels import DEFAULT_LEVEL, LEVELS
from export.pipeline import ExportResult, check_request, run_export
from export.preprocess_args import add_preprocess_arguments, preprocess_from_args
from export.quantize import PrecisionUsageError
from export.quantize.cli import add_precision_arguments, derive_all, derived_request, format_derived_row
from export.request import DEFAULT_IMAGES, ExportRequest
from export.weights import WeightsError

log = logging.getLogger("export")

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
USAGE_ERRORS = (UnknownModelError, LayoutError, ConfigError, PrecisionUsageError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    p.add_argument("--model", nargs="+", help=f"models to export (default: bench.yaml); known: {', '.join(MODELS)}")
    p.add_argument("--opset", nargs="+", type=int, help=f"ONNX opsets, {MIN_OPSET}..{MAX_OPSET} (default: bench.yaml)")
    p.add_argument("--batch", default=None, help="'dynamic' (default) or a fixed batch size")
    p.add_argument("--weights", default=None,
                   help="'seeded' (default, no download), 'official' (PaddleClas URL), a .pdparams PATH or URL")
    p.add_argument("--out", type=Path, default=DEFAULT_ROOT, help="artifacts folder (default: artifacts)")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                   help="labelled images (val_list.txt) for the real-image parity check and Paddle reference")
    p.add_argument("--config", type=Path, default=Path("bench.yaml"), help="matrix used when --model is absent")
    p.add_argument("--paddle-model", type=Path,
                   help="bring your own Paddle inference model (NAME.json + NAME.pdiparams); --model names it")
    p.add_argument("--input-shape", help="C,H,W of a brought model's input, e.g. 3,224,224 (default: what its "
                                         "--preprocess makes)")
    p.add_argument("--manifest", type=Path,
                   help="derive --precision int8|fp16 models from this fp32 export (model.onnx.json or its folder), "
                        "a brought model's included, instead of exporting")
    p.add_argument("--optimize", choices=list(LEVELS),
                   help=f"graph optimisation passes after folding (default: bench.yaml's export.optimize, else "
                   f"{DEFAULT_LEVEL}); "
                   + "; ".join(f"{name}: {level.description}" for name, level in LEVELS.items()))
    p.add_argument("--force", action="store_true", help="rebuild even when the cache is fresh")
    add_preprocess_arguments(p)
    add_precision_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def requests_from_args(args: argparse.Namespace) -> list[ExportRequest]:
    preprocess = preprocess_from_args(args)
    if args.manifest:
        given = [flag for flag, value in (("--model", args.model), ("--opset", args.opset), ("--paddle-model",
                 args.paddle_model), ("--input-shape", args.input_shape), ("--batch", args.batch), ("--weights",
                 args.weights), ("--optimize", args.optimize), ("--out", args.out != DEFAULT_ROOT)) if value]
        if given:
            raise LayoutError(f"--manifest derives models from an export as it is, beside it; drop "
                              f"{', '.join(given)}")
        if args.precision == "fp32":
            raise LayoutError("--manifest derives reduced-precision models: add --precision int8 or fp16")
        return []
    if args.paddle_model:
        return _brought_model_requests(args, preprocess)
    models, opsets, batch, weights, optimize = args.model, args.opset, args.batch, args.weights, args.optimize
    if not models or not opsets:
        config = read_export_config(args.config) if args.config.is_file() else None
        if config is None:
            raise ConfigError(f"{args.config} not found; pass --model and --opset")
        models = models or list(config.models)
        opsets = opsets or list(config.opsets)
        batch = batch or config.batch
        weights = weights or config.weights
        optimize = optimize or config.optimize
    batch = parse_batch(batch)
    return [ExportRequest(m, o, batch, weights, args.out, args.images, args.force, optimize=optimize or DEFAULT_LEVEL)
            for m in models for o in opsets]


def _brought_model_requests(args: argparse.Namespace, preprocess: Preprocess | None) -> list[ExportRequest]:
    if not args.model or len(args.model) != 1 or not args.opset:
        raise LayoutError("--paddle-model needs one --model NAME and --opset")
    shape = preprocess.output_shape if preprocess and args.input_shape is None else _input_shape(args.input_shape)
    if preprocess and shape != preprocess.output_shape:
        raise LayoutError(f"--input-shape {','.join(map(str, shape))} is not what the preprocessing makes "
                          f"({','.join(map(str, preprocess.output_shape))})")
    batch = parse_batch(args.batch)
    images = args.images if preprocess else None  # real-image parity and reference logits need preprocessing
    return [ExportRequest(args.model[0], o, batch, None, args.out, images, args.force, args.paddle_model, shape,
                          args.optimize or DEFAULT_LEVEL, preprocess) for o in args.opset]


def _input_shape(value: str | None) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in (value or "").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise LayoutError(f"--input-shape must be C,H,W positive integers, got {value!r} (or pass --preprocess)")
    return shape


def main(argv: list[str] | None = None) -> int:
    take_channel()  # a parent's progress bar follows the stages (bench's on-demand export)
    with keep_signal_handlers():  # the handlers below are this call's: a caller's come back after it
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines drown the table
    terminated: list[int] = []

    # A second signal while the first is being handled must not cut the cleanup short: the kernel can send the
    # parent-death SIGTERM twice (once per exiting thread of the parent), a user can press Ctrl-C twice.
    stopping: list[int] = []

    def on_sigterm(signum, frame):  # a killed sweep or CI timeout unwinds like Ctrl-C: the unfinished export goes
        if stopping:
            return
        stopping.append(signum)
        terminated.append(signum)
        discard_unfinished()  # now: unwinding through paddle can crash the process before any cleanup
        sys.exit(128 + signum)

    def on_sigint(signum, frame):
        if stopping:
            return
        stopping.append(signum)
        discard_unfinished()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigint)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="No ccache found")  # printed by every paddle import
    try:
        requests = requests_from_args(args)
        derived = derived_request(args)  # reduced precision: checked (calibration set included) before exporting
        for request in requests:  # refuse a bad matrix before spending minutes on its first cells
            check_request(request)
        run_all(requests, derived, args.manifest)
    except USAGE_ERRORS as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (ExportError, WeightsError, OSError) as exc:
        if terminated:
            return _terminated(terminated[0], exc)
        message = str(exc)
        if "is not writable" in message:
            message += "; pass --out DIR"
        return _fail(message, EXIT_FAILED)
    except ImportError as exc:
        if terminated:  # a signal handled inside a C extension's init reads as its ImportError
            return _terminated(terminated[0], exc)
        return _fail(f"{exc.name or exc} is not installed; export needs: pip install -e .[export]", EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted; finished exports are kept, the unfinished one was discarded", EXIT_INTERRUPTED)
    except BaseException as exc:
        if not terminated:  # paddle can wrap our SystemExit in an exception of its own
            raise
        return _terminated(terminated[0], exc)
    return 0


def run_all(requests: list[ExportRequest], derived: list, manifest: Path | None) -> None:
    """Export each request (and the models derived from it), or derive from ``--manifest``; print the rows."""
    for number, request in enumerate(requests):
        result = run_export(request)
        if number == 0:
            print(f"{'model':<14} {'opset':>5} {'nodes':>6} {'max|d| seeded':>13} {'max|d| images':>13} "
                  f"{'top-1 agree':>11} {'seconds':>8}  cache")
        print(format_row(result))
        for made in derive_all(result.manifest_path, derived):
            print(format_derived_row(made))
    for made in derive_all(manifest_path_of(manifest), derived) if manifest else ():
        print(format_derived_row(made))


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _terminated(signum: int, exc: BaseException) -> int:
    return _fail(f"terminated by signal {signum} ({type(exc).__name__} while stopping); finished exports are "
                 "kept, the unfinished one was discarded", 128 + signum)


def format_row(result: ExportResult) -> str:
    manifest = load_manifest(result.manifest_path)
    figures = manifest.parity
    images = figures.get("images", {})
    images_diff = f"{images['max_abs_diff']:>13.2e}" if images else f"{'-':>13}"
    agreement = min(figures["seeded"]["top1_agreement"], images.get("top1_agreement", 1.0))
    return (f"{manifest.model:<14} {manifest.opset_written:>5} {manifest.graph.node_count:>6} "
            f"{figures['seeded']['max_abs_diff']:>13.2e} {images_diff} {agreement:>11.1%} "
            f"{manifest.export_seconds:>8.1f}  {'hit' if result.cache_hit else 'built'}  {result.manifest_path}")
