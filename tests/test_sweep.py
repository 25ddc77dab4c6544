"""``python -m bench sweep``: a subprocess per cell, resumable, crash-tolerant (null runtime, tiny model)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.config import config_from_dict
from bench.records import read_records
from bench.request import BenchRequest
from bench.sweep.plan import plan, scenario_axis, sweep_id

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, manifests: list[Path], batches=(1, 2), min_duration_s=0.05, **sweep) -> Path:
    config = {
        "results": str(tmp_path / "runs.jsonl"),
        "sweep": {"models": [], "manifests": [str(m) for m in manifests], "runtimes": ["null"],
                  "batches": list(batches), "drift": False, **sweep},
        "measure": {"warmup": 1, "iterations": 5, "min_duration_s": min_duration_s, "max_duration_s": 5},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_sweep(config: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "sweep", "--config", str(config), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def sweep(config: Path, *args: str) -> subprocess.CompletedProcess:
    proc = start_sweep(config, *args)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def records(config: Path):
    result = read_records(Path(yaml.safe_load(config.read_text())["results"]))
    assert result.problems == [] and all(r.invalid is None for r in result.records)
    return [r.record for r in result.records]


@pytest.fixture
def corrupt_manifest(onnx_artifact, tmp_path) -> Path:
    folder = tmp_path / "corrupt"
    shutil.copytree(onnx_artifact.parent, folder)
    (folder / "model.onnx").write_bytes(b"garbage")
    return folder / "model.onnx.json"


def test_plan_and_identity(onnx_artifact, tmp_path):
    cfg = config_from_dict(yaml.safe_load(write_config(tmp_path, [onnx_artifact]).read_text()))
    cells = plan(cfg, sweep_id(cfg), tmp_path / "r.jsonl")
    assert [(c.target.model, c.target.opset, c.batch, c.runtime_name) for c in cells] == [
        ("Tiny", 13, 1, "null"), ("Tiny", 13, 2, "null")]
    assert all(c.target.no_export and c.output.run_id == sweep_id(cfg) for c in cells)
    assert sweep_id(cfg) == sweep_id(config_from_dict(yaml.safe_load(write_config(tmp_path, []).read_text())))
    changed = config_from_dict({"measure": {"iterations": 6}})
    assert sweep_id(changed) != sweep_id(cfg)
    assert cells[0].cell_key[-1] == f"manifest:{onnx_artifact.resolve()}"


def test_plan_crosses_scenarios_and_requests_in_flight(onnx_artifact, tmp_path):
    path = write_config(tmp_path, [onnx_artifact], batches=(1,), scenarios=["latency", "throughput"],
                        requests=[None, 4])
    cfg = config_from_dict(yaml.safe_load(path.read_text()))
    cells = plan(cfg, sweep_id(cfg), tmp_path / "r.jsonl")
    assert [(c.runtime.scenario, c.runtime.requests) for c in cells] == [
        ("latency", None), ("throughput", None), ("throughput", 4)]
    assert len({c.cell_key for c in cells}) == 3
    assert BenchRequest.from_dict(cells[2].to_dict()) == cells[2]  # as the cell process receives it
    # the scenario axes are cells, not settings: a sweep recorded before them keeps its id
    assert sweep_id(cfg) == sweep_id(config_from_dict(yaml.safe_load(write_config(tmp_path, []).read_text())))
    single = config_from_dict({"sweep": {"models": []}, "measure": {"scenario": "throughput", "requests": 2}})
    assert scenario_axis(single) == [("throughput", 2)]  # no sweep.scenarios: measure.scenario/requests decide


@pytest.mark.slow
def test_second_run_skips_finished_cells_and_retry_reruns_errors(onnx_artifact, corrupt_manifest, tmp_path):
    config = write_config(tmp_path, [onnx_artifact, corrupt_manifest])
    first = sweep(config)
    assert first.returncode == 1, first.stderr  # the corrupt model's cells are errors
    got = records(config)
    assert sorted(r.status for r in got) == ["error", "error", "ok", "ok"]
    assert len({r.run_id for r in got}) == 1
    assert "2 ok, 2 error, 0 skipped" in first.stdout

    second = sweep(config)
    assert "4 already done, 0 to run" in second.stderr
    assert len(records(config)) == 4

    retry = sweep(config, "--retry-errors")
    assert "2 already done, 2 to run" in retry.stderr
    new = records(config)[4:]
    assert len(new) == 2 and all(r.status == "error" and "does not match" in r.error.message for r in new)


def _cell_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"_cell" in cmdline and any(marker.encode() in part for part in cmdline):
            pids.append(int(entry.name))
    return pids


def _wait_for_cell(marker: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _cell_pids(marker)
        if pids:
            return pids[0]
        time.sleep(0.02)
    raise AssertionError("no cell process appeared")


@pytest.mark.slow
def test_crashed_cell_gets_an_error_record_and_the_sweep_goes_on(onnx_artifact, tmp_path):
    config = write_config(tmp_path, [onnx_artifact])
    proc = start_sweep(config)
    os.kill(_wait_for_cell(str(tmp_path)), signal.SIGABRT)  # what a native abort in an engine looks like
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    got = records(config)
    assert sorted(r.status for r in got) == ["error", "ok"]  # the second cell still ran
    crashed = next(r for r in got if r.status == "error")
    assert crashed.error.type == "CellCrashed" and "SIGABRT" in crashed.error.message
    assert crashed.model.name == "Tiny" and crashed.params.batch == 1

    resumed = sweep(config, "--retry-errors")
    assert resumed.returncode == 0, resumed.stderr
    assert [r.status for r in records(config)[2:]] == ["ok"]


@pytest.mark.slow
def test_ctrl_c_keeps_finished_cells_and_resume_completes(onnx_artifact, tmp_path):
    config = write_config(tmp_path, [onnx_artifact], batches=(1, 2, 3), min_duration_s=1.0)
    results = tmp_path / "runs.jsonl"
    proc = start_sweep(config, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (results.exists() and results.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    _wait_for_cell(str(tmp_path))  # the second cell is in flight
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err
    done = records(config)
    assert 1 <= len(done) < 3 and all(r.status == "ok" for r in done)

    resumed = sweep(config)
    assert resumed.returncode == 0, resumed.stderr
    final = records(config)
    assert len(final) == 3 and sorted(r.params.batch for r in final) == [1, 2, 3]


@pytest.mark.slow
def test_unavailable_runtime_cells_are_skipped_once(onnx_artifact, tmp_path):
    from runtimes import probe

    if probe("trt").available:
        pytest.skip("TensorRT is available here; the unavailable-runtime path cannot be exercised")
    config = write_config(tmp_path, [onnx_artifact], batches=(1,), runtimes=["trt"])
    first = sweep(config)
    assert first.returncode == 0, first.stderr
    assert [(r.status, r.error.type) for r in records(config)] == [("skipped", "RuntimeUnavailable")]
    sweep(config)
    assert len(records(config)) == 1


def test_invalid_config_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sweep:\n  runtimes: [tensorrtx]\n")
    result = sweep(path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: bad.yaml:2: sweep.runtimes[0]: unknown runtime 'tensorrtx'; "
                                     "allowed: ort, ov, paddle, trt")
