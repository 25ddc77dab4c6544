"""Load awareness: what other processes did around a cell, the contention flag, and the verdicts that
``bench compare`` and the report refuse on a flagged cell."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import run_module
from test_report import record, write

from bench.harness import machine
from bench.harness.machine import MachineWatch, Snapshot, judge, window
from bench.records import read_records
from bench.report import compare as cmp
from bench.report.build import build_report
from bench.table import format_table

CONTENDED = {"contended": True, "contention": ["other processes used 1.40 cores on average while the cell was "
                                               "measured (limit 0.25): python (pid 42) 98 %"]}


def snap(at: float, busy: float, own: float, processes: dict | None = None, steal: float = 0.0) -> Snapshot:
    return Snapshot(at=at, busy_s=busy, steal_s=steal, own_s=own, pressure_us=None, cpu_count=2,
                    processes=processes or {})


def test_a_window_counts_the_cpu_time_of_other_processes_only():
    tick = machine._TICK_S
    a = snap(0.0, 10.0, 1.0, {5: ("spin", 0, 100), 7: ("old", 40, 100), 8: ("kworker/0:1-a", 3, 9)})
    b = snap(1.0, 12.0, 2.5, {5: ("spin", round(0.5 / tick), 100), 6: ("new", round(0.1 / tick), 300),
                               7: ("reused", round(0.2 / tick), 400), 8: ("kworker/0:1-b", 3, 9)})
    w = window(a, b)
    # 2.0 s busy on our CPUs, 1.5 s of it ours: others used 0.5 of a core.
    assert w["others_cores"] == pytest.approx(0.5)
    busy = {p["pid"]: p["cpu_pct"] for p in w["busy"]}
    # A process born in the window counts whole; a recycled pid is a new process; a kernel thread that
    # renamed itself (same start time) only counts what it used in the window (here nothing).
    assert busy == {5: pytest.approx(50.0), 6: pytest.approx(10.0), 7: pytest.approx(20.0)}
    assert window(a, snap(0.2, 11.0, 1.0))["others_cores"] == 2  # 10 ms ticks: clamped to the CPU count
    assert window(a, snap(0.02, 11.0, 1.0))["others_cores"] is None  # two ticks: noise, not a figure


def test_judge_uses_the_measurement_or_both_sides_of_a_short_one():
    quiet, busy = {"others_cores": 0.05, "busy": []}, {"others_cores": 0.9,
                                                       "busy": [{"pid": 42, "name": "spin", "cpu_pct": 90.0}]}
    assert judge(quiet, {**busy, "window_s": 2.0}, quiet) == [
        "other processes used 0.90 cores on average while the cell was measured (limit 0.25): "
        "spin (pid 42) 90 %"]
    assert judge(busy, {**quiet, "window_s": 2.0}, busy) == []  # measured quiet: the samples around don't count
    assert judge(busy, {**quiet, "window_s": 0.05}, busy)[0].startswith(
        "other processes used 0.90 cores just before and 0.90 just after")
    assert judge(busy, {**quiet, "window_s": 0.05}, quiet) == []
    steal = {"others_cores": 0.6, "steal_cores": 0.6, "busy": [], "window_s": 2.0}
    assert "the hypervisor (steal) 60 %" in judge(quiet, steal, quiet)[0]


def test_a_busy_process_is_named_and_flags_the_measurement():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        watch = MachineWatch()
        watch.begin()
        time.sleep(0.6)  # the "measurement": this process idles, the spinner does not
        watch.end()
        section = watch.section()
    finally:
        spinner.kill()
        spinner.wait()
    assert section["contended"] is True, section
    assert spinner.pid in [p["pid"] for p in section["during"]["busy"]], section["during"]
    assert section["during"]["window_s"] >= 0.6 and section["before"]["window_s"] >= machine.MIN_WINDOW_S
    assert len(section["before"]["loadavg"]) == 3 and "governor" in section


def test_the_after_window_is_waited_for_only_when_the_timed_part_is_too_short_to_judge(monkeypatch):
    slept, now = [], [0.0]
    monkeypatch.setattr(machine.time, "sleep", lambda s: slept.append(round(s, 6)))
    monkeypatch.setattr(machine.time, "monotonic", lambda: now[0])

    def at(t: float, step):
        now[0] = t
        return step()

    long = at(0.0, MachineWatch)
    at(0.3, long.begin)  # the before window is long enough: no wait
    at(0.9, long.end)  # a 0.6 s timed part, judged on its own
    section = at(0.91, long.section)  # no wait for an after window nobody needs; too short to read: None
    assert slept == [] and section["after"]["others_cores"] is None and section["during"]["window_s"] == 0.6
    short = at(2.0, MachineWatch)
    at(2.1, short.begin)  # waits for the rest of its before window
    at(2.4, short.end)  # 0.3 s, too short: judged from the windows around it
    at(2.5, short.section)  # so it waits for the rest of its after window too
    assert slept == [round(machine.MIN_WINDOW_S - 0.1, 6)] * 2


def test_every_record_has_the_machine_section(onnx_artifact, tmp_path):
    from bench.cell import run_cell
    from bench.harness.measure import MeasureParams
    from bench.request import BenchRequest, Output, Target
    from runtimes.base import RuntimeOptions

    request = BenchRequest("null", Target(manifest=str(onnx_artifact)), RuntimeOptions(batch=2),
                           MeasureParams(0, 3, 0.0, 5.0), output=Output(str(tmp_path / "r.jsonl")))
    result = run_cell(request)
    section = result.record.machine
    assert set(section) >= {"before", "during", "after", "contended", "contention", "governor", "usable_cpus",
                            "memory_estimate"}
    assert section["contended"] == bool(section["contention"]) == result.record.contended
    assert section["memory_estimate"]["available_bytes"] > section["memory_estimate"]["high_bytes"] > 0


def test_a_contended_record_says_so_in_the_table():
    flagged = record(runtime="null")
    flagged.machine = CONTENDED
    assert flagged.contended and flagged.contention == CONTENDED["contention"]
    assert "CONTENDED: other processes were busy" in format_table([flagged])
    old = record(runtime="null")  # records from before load awareness: no machine section
    assert not old.contended and "CONTENDED" not in format_table([old])


def test_compare_gives_no_verdict_on_a_contended_cell(tmp_path):
    """The issue's case: B looked 0.325x (faster) only because A was measured beside other processes."""
    slow = record(runtime="ort", p50=10.0, cv=0.02)
    slow.machine = CONTENDED
    a = write(tmp_path / "a.jsonl", [slow, record(runtime="ov", p50=10.0, cv=0.02)])
    b = write(tmp_path / "b.jsonl", [record(runtime="ort", p50=3.25, cv=0.02), record(runtime="ov", p50=3.25,
                                                                                        cv=0.02)])
    text = cmp.compare([a], [b])
    ort = [line for line in text.splitlines() if line.startswith("| LeViT_128S | 1 | 17 | ort | fp32 | 10.00")]
    assert len(ort) == 1 and "| 0.325 |" in ort[0] and "no verdict: A contended" in ort[0]
    assert "B faster" not in ort[0] and "B lower" not in ort[0]
    ov = [line for line in text.splitlines() if line.startswith("| LeViT_128S | 1 | 17 | ov | fp32 | 10.00")]
    assert "B faster" in ov[0]  # a clean pair still gets its verdict
    assert "## Measured under contention" in text
    assert "| LeViT_128S | 1 | 17 | ort | fp32 | A | other processes used 1.40 cores" in text
    assert "2 cell(s); host(s) box-a; commit(s) abc123; 1 measured under contention; 1 without load " \
           "information (recorded before load awareness: assumed quiet)" in text


def test_the_report_keeps_a_contended_cell_off_the_pareto_front(tmp_path):
    fast = record(runtime="ov", p50=1.0, agreement=1.0)
    fast.machine = CONTENDED
    results = write(tmp_path / "r.jsonl", [fast, record(runtime="ort", p50=5.0, agreement=1.0)])
    text = build_report([results], tmp_path / "out").read_text()
    row = [line for line in text.splitlines() if line.startswith("| LeViT_128S | ov | fp32 | 17 | 1.000 |")]
    assert len(row) == 1 and "| no verdict (contended) |" in row[0] and "contended: other processes" in row[0]
    ort = [line for line in text.splitlines() if line.startswith("| LeViT_128S | ort | fp32 | 17 | 5.000 |")]
    assert "| yes |" in ort[0]  # alone on the front: the contended point beats nothing
    assert "## Measured under contention" in text
    assert "| LeViT_128S b1 opset 17 ov fp32 | other processes used 1.40 cores" in text


@pytest.mark.slow
def test_the_cli_warns_when_it_measured_under_contention(onnx_artifact, tmp_path):
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        run = run_module("bench", "--runtime", "null", "--manifest", str(onnx_artifact), "--duration", "1",
                         "--results", str(tmp_path / "r.jsonl"), cwd=tmp_path)
    finally:
        spinner.kill()
        spinner.wait()
    assert run.returncode == 0, run.stderr
    assert "warning: measured under contention: other processes used" in run.stderr
    assert "CONTENDED" in run.stdout
    (got,) = read_records(tmp_path / "r.jsonl").valid()
    assert got.contended and got.machine["during"]["window_s"] >= 1.0
    assert spinner.pid in [p["pid"] for p in got.machine["during"]["busy"]]


def test_a_quiet_rerun_wins_over_a_later_contended_one(tmp_path):
    from bench.report.results import load_results, select_cells
    from bench.report.sections import Context, section_reruns

    quiet = record(runtime="ov", p50=4.0, ts="2026-01-01T00:00:00Z")
    noisy = record(runtime="ov", p50=9.0, ts="2026-01-02T00:00:00Z")
    noisy.machine = CONTENDED
    cells = select_cells(load_results([write(tmp_path / "r.jsonl", [quiet, noisy])]).records)
    assert [c.latency("p50") for c in cells] == [4.0] and not cells[0].contention
    text = "\n".join(section_reruns(Context(cells, tmp_path, "agreement", None, lambda c: "")))
    assert "| ok, ok (contended) | ok at 2026-01-01T00:00:00Z | latest run (2026-01-02T00:00:00Z) was ok: " \
           "measured under contention |" in text


def test_a_sweep_reruns_contended_cells_only_when_asked(onnx_artifact, tmp_path):
    import yaml
    from test_sweep import sweep, write_config

    from bench.cell import run_cell
    from bench.config import config_from_dict
    from bench.records import append_record
    from bench.sweep.plan import plan, sweep_id

    config = write_config(tmp_path, [onnx_artifact], batches=(1,))
    cfg = config_from_dict(yaml.safe_load(config.read_text()))
    (cell,) = plan(cfg, sweep_id(cfg), tmp_path / "runs.jsonl")
    done = run_cell(cell).record
    done.machine = CONTENDED
    append_record(tmp_path / "runs.jsonl", done)
    assert "todo  Tiny opset 13 null/fp32 batch 1" not in sweep(config, "--dry-run").stdout
    assert "todo  Tiny opset 13 null/fp32 batch 1" in sweep(config, "--dry-run", "--retry-contended").stdout
