"""The explain pass of a benchmark cell: after the drift pass, when the cell fails its drift gates, find the
layer that departs first (a few images, a time limit), and return the record's ``explain`` section.

It never fails the cell: an explain that cannot run (a runtime it cannot instrument, a model without an fp32
reference, an error) is a section with ``status`` "skipped" or "error" and the reason. The CSV and the plot go
to ``<results folder>/explain/<cell>/``; the section names them relative to the results folder. The fix trials'
models are not kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bench.explain.run import ExplainError, ExplainSettings, Target, reference_of, run_explain, why_not_explained
from core.artifact import Artifact
from runtimes import get_runtime
from runtimes.base import SilentChangeError

log = logging.getLogger(__name__)

CELL_IMAGES = 8
CELL_TIME_LIMIT_S = 180.0  # measurement and fix trials; a compile already started finishes


def explain_cell(runtime: str, asked_precision: str, artifact: Artifact, batch: int, threads: int,
                 drift: dict | None, results: Path, gates: dict | None = None) -> dict[str, Any]:
    """The ``explain`` section of a cell whose drift gates failed."""
    why = why_not_explained(runtime)
    if why:
        return {"status": "skipped", "reason": why}
    try:  # what the cell ran: the model file's precision, or the hint asked (the adapter's rule)
        precision = get_runtime(runtime).precision_for(asked_precision, artifact)
    except SilentChangeError as exc:
        return {"status": "skipped", "reason": str(exc)}
    flipped = tuple((drift or {}).get("flipped_names") or ())
    started = time.perf_counter()
    folder = Path(results).parent / "explain" / _cell_folder(artifact, runtime, precision, batch)
    try:
        target = Target(runtime, precision, artifact, reference_of(artifact), batch, threads, flipped)
        # The fix trials' models (hundreds of MB for a sweep) go to a temporary folder: the section records each
        # trial's result, and `python -m bench explain` remakes a model a user wants to keep.
        settings = ExplainSettings(images=CELL_IMAGES, time_limit_s=CELL_TIME_LIMIT_S, gates=dict(gates or {}),
                                   keep_fix_models=False)
        data = run_explain(target, settings, folder).section
    except ExplainError as exc:
        return {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # the explain is a diagnosis; it must not turn an ok cell into an error
        log.warning("explain failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                "seconds": {"total": round(time.perf_counter() - started, 3)}}
    base = Path(results).parent
    data["files"] = {k: _relative(Path(v), base) for k, v in data["files"].items()}
    data["flipped_images_first"] = list(flipped[:CELL_IMAGES])
    return data


def _cell_folder(artifact: Artifact, runtime: str, precision: str, batch: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{artifact.model}-o{artifact.opset}-{runtime}-{precision}-b{batch}-{stamp}"


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)
