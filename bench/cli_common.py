"""What the ``python -m bench`` commands share: the target flags, logging setup and the one-line error exit.

Its own module so that the commands living in their own modules (``bench.explain.cli``, ``bench.accuracy_cli``)
use them without importing ``bench.cli``, which dispatches to them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from bench.table import one_line
from core.progress import set_quiet
from export.optimize.levels import DEFAULT_LEVEL, LEVELS


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    """What to run and where it comes from: shared by ``python -m bench`` and ``python -m bench explain``."""
    p.add_argument("--runtime", required=True,
                   help="ort, ov, paddle, trt; aliases onnxruntime, openvino, tensorrt, paddle_inference "
                        "(see `python -m bench list`)")
    p.add_argument("--model", help="zoo model name, e.g. MobileViT_S (fnmatch patterns must match one model)")
    p.add_argument("--manifest", help="benchmark this exported model (model.onnx.json or its folder) instead")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset of the export to use (default 17)")
    p.add_argument("--weights", help="seeded (default), official, or a .pdparams path/URL")
    p.add_argument("--artifacts", help="export folder (default: artifacts)")
    p.add_argument("--no-export", action="store_true", help="fail instead of exporting a missing model")
    p.add_argument("--optimize", choices=list(LEVELS),
                   help=f"graph optimisation level of the export (default: bench.yaml's export.optimize, else "
                   f"{DEFAULT_LEVEL}; see python -m export --help); another level is another export, made on demand")
    p.add_argument("--config", type=Path, help="bench.yaml with defaults (default: ./bench.yaml if present)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (shown only on a terminal anyway): export stages, measuring, drift")


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    set_quiet(quiet)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines would bury the table


def fail(message: str, code: int, exc: BaseException | None = None, debug: bool = False) -> int:
    if debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {one_line(message)}", file=sys.stderr)
    return code
