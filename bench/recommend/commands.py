"""The exact commands that make a recommended configuration's artifact and run it, rebuilt from its record:
the request a sweep or ``python -m bench`` would have made (model, opset, weights, graph level, int8 recipe,
runtime, precision, device, threads, batch, scenario, runtime options), then ``python -m export``'s command
for its export (``bench.launcher.ExportSpec.shell_command``, the one the benchmark stage itself names) and
``python -m bench``'s for the run, drift pass included."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from bench.cell import export_spec
from bench.report.results import Cell
from bench.request import BenchRequest, Target
from export.optimize.levels import DEFAULT_LEVEL
from runtimes.base import RuntimeOptions

# The settings ``Target.weights_key`` appends to the weights with "+", and how to read each back.
_KEY_SETTINGS = {"optimize": str, "calibration": str, "calibration_size": int, "max_drop": float}
_SPLIT = re.compile(r"\+(?=(?:" + "|".join(_KEY_SETTINGS) + ")=)")
MANIFEST_KEY = "manifest:"


def target_of(cell: Cell) -> Target:
    """The target of the cell's request, read back from its weights key and manifest path."""
    key = str(cell.weights)
    artifacts = _artifacts_root(cell)
    if key.startswith(MANIFEST_KEY):
        return Target(model=cell.model, manifest=key[len(MANIFEST_KEY):], opset=cell.opset or 17, artifacts=artifacts)
    weights, *parts = _SPLIT.split(key)
    settings = {}
    for part in parts:
        name, _, value = part.partition("=")
        settings[name] = _KEY_SETTINGS[name](value)
    return Target(model=cell.model, opset=cell.opset or 17, weights=weights or "seeded", artifacts=artifacts,
                  fixed_batch_export=isinstance(cell.record.model.batch, int), **settings)


def _artifacts_root(cell: Cell) -> str:
    """The artifacts folder of the export that ran: the parent of the ``<model>`` folder of its manifest path
    (``<artifacts>/<model>/<weights>/opset<N>-b<batch>/model.onnx.json``), else the default."""
    manifest = cell.record.model.manifest
    if manifest:
        path = Path(manifest)
        for parent in path.parents:
            if parent.name == cell.model:
                return str(parent.parent)
    return "artifacts"


def request_of(cell: Cell) -> BenchRequest:
    """The request that measures this configuration again."""
    record = cell.record
    asked = record.runtime.options_asked if isinstance(record.runtime.options_asked, dict) else {}
    options = RuntimeOptions(device=record.runtime.device or "cpu", precision=cell.precision,
                             threads=record.params.threads, batch=cell.batch or 1, extra=dict(asked.get("extra") or {}),
                             scenario=cell.scenario, requests=record.params.requests)
    return BenchRequest(runtime_name=cell.runtime, target=target_of(cell), runtime=options)


def export_command(cell: Cell) -> str | None:
    """``python -m export ...`` that makes the configuration's artifact; None for a model brought as a manifest."""
    request = request_of(cell)
    if request.target.manifest:
        return None
    return export_spec(request).shell_command()


def run_command(cell: Cell) -> str:
    """``python -m bench ...`` that runs the configuration, with its drift pass."""
    request = request_of(cell)
    target, options = request.target, request.runtime
    if target.manifest:
        parts = ["--manifest", target.manifest]
    else:
        parts = ["--model", str(target.model), "--opset", str(target.opset)]
        parts += _unless(target.weights, "seeded", "--weights") + _unless(target.optimize, DEFAULT_LEVEL, "--optimize")
        parts += target.int8_recipe.export_flags() + _unless(target.artifacts, "artifacts", "--artifacts")
    parts += ["--batch", str(options.batch)] + _unless(options.precision, "fp32", "--precision")
    parts += _unless(options.device, "cpu", "--device")
    if options.threads:
        parts += ["--threads", str(options.threads)]
    if options.scenario != "latency":
        parts += ["--scenario", options.scenario]
        parts += ["--requests", str(options.requests)] if options.requests else []
    for key, value in options.extra.items():
        parts += ["--option", f"{key}={value}"]
    return " ".join(["python -m bench --runtime", request.runtime_name, *map(shlex.quote, parts + drift_flags(cell))])


def drift_flags(cell: Cell) -> list[str]:
    """The drift pass the record's came from: the export's images (``--drift``), the synthetic set, or a folder
    of images with its labels."""
    drift = cell.record.drift if isinstance(cell.record.drift, dict) else {}
    data = drift.get("data") if isinstance(drift.get("data"), dict) else {}
    if not drift or str(drift.get("reference_source", "")).startswith("export") or not data:
        return ["--drift"]
    if data.get("kind") == "synthetic":
        return ["--data", "synthetic"]
    if not data.get("root"):
        return ["--drift"]
    return ["--data", str(data["root"])] + (["--labels", str(data["list_file"])] if data.get("list_file") else [])


def _unless(value, default, flag: str) -> list[str]:
    return [] if value in (None, default) else [flag, str(value)]
