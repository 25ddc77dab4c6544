"""The cells of a sweep: bench.yaml's matrix as a list of requests, in a stable order, and its identity."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from bench.accuracy.drift_pass import DriftSettings
from bench.config import BenchConfig
from bench.harness.measure import MeasureParams
from bench.request import BenchRequest, Output, Target, with_int8_recipe
from core.manifest import ManifestError, load_manifest
from export.optimize.levels import DEFAULT_LEVEL
from runtimes.base import RuntimeOptions


def sweep_id(cfg: BenchConfig) -> str:
    """Same measurement settings -> same id, so rerunning the sweep resumes it (adding cells is fine)."""
    # The scenario and the requests in flight are axes of the cells (part of each cell's key), not settings of
    # the sweep: leaving them out keeps the id of sweeps recorded before they existed.
    measure = {k: v for k, v in dataclasses.asdict(cfg.measure).items() if k not in ("scenario", "requests")}
    basis = {"measure": measure, "export_batch": cfg.export.batch,
             "devices": cfg.sweep.devices, "drift": [cfg.sweep.drift_data, cfg.sweep.drift_labels]}
    if cfg.sweep.drift_preprocess not in (None, "eval"):  # other drift tensors (eval: the export's own)
        basis["drift_preprocess"] = cfg.sweep.drift_preprocess
    if cfg.export.optimize != DEFAULT_LEVEL:  # another graph: another sweep (the default keeps earlier sweep ids)
        basis["optimize"] = cfg.export.optimize
    if cfg.export.int8.asked():  # another int8 recipe: other int8 models, another sweep
        basis["int8"] = cfg.export.int8.asked()
    return "sweep-" + hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:10]


def plan(cfg: BenchConfig, run_id: str, results: Path) -> list[BenchRequest]:
    """Every cell of the matrix on every target of ``sweep.targets``, in a stable order (model-major, so one
    export serves consecutive cells)."""
    m, s = cfg.measure, cfg.sweep
    measure = MeasureParams(m.warmup, m.iterations, m.min_duration_s, m.max_duration_s, m.scope, m.seed)
    drift = None
    if s.drift_data is not None:
        drift = DriftSettings(data=s.drift_data, labels=s.drift_labels, pipeline=s.drift_preprocess, gates=cfg.gates,
                              cache_dir=str(Path(cfg.artifacts) / "reference-cache"))
    common = dict(weights=cfg.export.weights, fixed_batch_export=cfg.export.batch != "dynamic",
                  artifacts=str(cfg.artifacts), no_export=True, optimize=cfg.export.optimize)
    targets = [Target(model=model, opset=opset, **common) for model in s.models for opset in s.opsets]
    for path in s.manifests:
        model, opset = _manifest_identity(Path(path))
        targets.append(Target(model=model, opset=opset, manifest=str(path), **common))
    cells = []
    for target in targets:
        for runtime in s.runtimes:
            for precision in s.precisions_for(runtime):
                cell_target = with_int8_recipe(target, runtime, precision, cfg.export.int8)
                for batch in s.batches:
                    for scenario, requests in scenario_axis(cfg):
                        options = RuntimeOptions(device=s.devices.get(runtime), precision=precision,
                                                 threads=m.threads, batch=batch, scenario=scenario,
                                                 requests=requests)
                        cells.append(BenchRequest(runtime_name=runtime, target=cell_target, runtime=options,
                                                  measure=measure, drift=drift,
                                                  output=Output(str(results), run_id)))
    # The target axis, innermost: one export serves a cell on each kind of machine in a row.
    return [dataclasses.replace(cell, host_target=target) for cell in cells for target in s.targets or (None,)]


def scenario_axis(cfg: BenchConfig) -> list[tuple[str, int | None]]:
    """(scenario, requests in flight) of each cell: latency once, throughput once per ``sweep.requests``."""
    scenarios = cfg.sweep.scenarios or (cfg.measure.scenario,)
    requests = cfg.sweep.requests if cfg.sweep.requests != (None,) else (cfg.measure.requests,)
    return [(scenario, None) if scenario == "latency" else (scenario, r)
            for scenario in scenarios for r in (requests if scenario == "throughput" else (None,))]


def _manifest_identity(path: Path) -> tuple[str, int | None]:
    """(model, opset) as the cell will record them; an unreadable manifest fails later, in its cell."""
    try:
        manifest = load_manifest(path)
    except ManifestError:
        return str(path), None
    return manifest.model, manifest.opset_requested or manifest.opset_written
