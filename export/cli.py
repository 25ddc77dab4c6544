"""``python -m export``: export zoo models to ONNX at the opsets asked, with validation and parity."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from export.convert import MAX_OPSET, MIN_OPSET, ExportError, check_opset
from export.models import MODELS, UnknownModelError, get_spec
from export.pipeline import DEFAULT_IMAGES, DEFAULT_ROOT, ExportRequest, parse_batch, run_export
from export.weights import WeightsError

log = logging.getLogger("export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "--model", nargs="+", help=f"models to export (default: bench.yaml); known: {', '.join(MODELS)}"
    )
    parser.add_argument(
        "--opset", nargs="+", type=int, help=f"ONNX opsets, {MIN_OPSET}..{MAX_OPSET} (default: bench.yaml)"
    )
    parser.add_argument("--batch", default=None, help="'dynamic' (default) or a fixed batch size")
    parser.add_argument(
        "--weights",
        default=None,
        help="'seeded' (default, no download), 'official' (PaddleClas URL), a .pdparams PATH or URL",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_ROOT, help="artifacts folder (default: artifacts)"
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        help="labelled images (val_list.txt) for the real-image parity check and Paddle reference",
    )
    parser.add_argument(
        "--config", type=Path, default=Path("bench.yaml"), help="matrix used when --model is absent"
    )
    parser.add_argument(
        "--paddle-model",
        type=Path,
        help="bring your own Paddle inference model (NAME.json + NAME.pdiparams); --model names it",
    )
    parser.add_argument("--input-shape", help="C,H,W of a brought model's input, e.g. 3,224,224")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is fresh")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _requests(args) -> list[ExportRequest]:
    if args.paddle_model:
        return _brought_model_requests(args)
    models, opsets, batch, weights = args.model, args.opset, args.batch, args.weights
    if not models or not opsets:
        from bench.config import load_config

        export_cfg = load_config(args.config).export
        models = models or list(export_cfg.models)
        opsets = opsets or list(export_cfg.opsets)
        batch = batch or export_cfg.batch
        weights = weights or export_cfg.weights
    batch = parse_batch(batch or "dynamic")
    return [
        ExportRequest(m, o, batch, weights, args.out, args.images, args.force) for m in models for o in opsets
    ]


def _brought_model_requests(args) -> list[ExportRequest]:
    if not args.model or len(args.model) != 1 or not args.opset:
        raise ValueError("--paddle-model needs one --model NAME and --opset")
    try:
        shape = tuple(int(v) for v in (args.input_shape or "").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--input-shape must be C,H,W positive integers, got {args.input_shape!r}")
    batch = parse_batch(args.batch or "dynamic")
    return [
        ExportRequest(args.model[0], o, batch, None, args.out, None, args.force, args.paddle_model, shape)
        for o in args.opset
    ]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines drown the table
    # SIGTERM (a killed sweep, a CI timeout) unwinds like Ctrl-C, so the unfinished export is removed.
    terminated = []

    def on_sigterm(signum, frame):
        terminated.append(signum)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    warnings.filterwarnings("ignore", message="No ccache found")  # printed by every paddle import
    try:
        requests = _requests(args)
        for request in requests:  # refuse a bad matrix before spending minutes on its first cells
            if request.paddle_model is None:
                get_spec(request.model)
            check_opset(request.opset)
        for number, request in enumerate(requests):
            summary = run_export(request)
            if number == 0:
                print(
                    f"{'model':<14} {'opset':>5} {'nodes':>6} {'max|d| seeded':>13} {'max|d| images':>13} "
                    f"{'top-1 agree':>11} {'seconds':>8}  cache"
                )
            _print_row(summary)
    except (ExportError, UnknownModelError, WeightsError, ValueError, OSError) as exc:
        if terminated:
            return _terminated(terminated[0], exc)
        print(f"error: {exc}", file=sys.stderr)
        return (
            2 if isinstance(exc, (UnknownModelError, ValueError)) and not isinstance(exc, ExportError) else 1
        )
    except ImportError as exc:
        print(
            f"error: {exc.name or exc} is not installed; export needs: pip install -e .[export]",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "error: interrupted; finished exports are kept, the unfinished one was discarded", file=sys.stderr
        )
        return 130
    except BaseException as exc:
        if not terminated:  # paddle can wrap our SystemExit in an exception of its own
            raise
        return _terminated(terminated[0], exc)
    return 0


def _terminated(signum: int, exc: BaseException) -> int:
    print(
        f"error: terminated by signal {signum} ({type(exc).__name__} while stopping); "
        "finished exports are kept, the unfinished one was discarded",
        file=sys.stderr,
    )
    return 128 + signum


def _print_row(summary: dict) -> None:
    manifest = summary["manifest"]
    figures = manifest["parity"]
    images = figures.get("images", {})
    images_diff = f"{images['max_abs_diff']:>13.2e}" if images else f"{'-':>13}"
    agreement = min(figures["seeded"]["top1_agreement"], images.get("top1_agreement", 1.0))
    print(
        f"{manifest['model']:<14} {manifest['opset']['written']:>5} {manifest['onnx']['node_count']:>6} "
        f"{figures['seeded']['max_abs_diff']:>13.2e} {images_diff} "
        f"{agreement:>11.1%} {manifest['export_seconds']:>8.1f}  {'hit' if summary['cache_hit'] else 'built'}"
        f"  {summary['manifest_path']}"
    )
