"""Result records: round trip, atomic append, tolerant reading."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from bench.records import (
    SCHEMA_VERSION,
    Record,
    RecordError,
    append_record,
    cell_key,
    new_run_id,
    read_records,
)


def make_record(status: str = "ok", **kw) -> Record:
    fields = dict(
        run_id="run-1",
        status=status,
        model={"name": "MobileViT_XXS", "opset": 17, "batch": "dynamic", "onnx_sha256": "ab" * 32,
               "manifest": "artifacts/x/model.onnx.json",
               "weights": {"requested": "seeded", "kind": "seeded"}},
        runtime={"name": "ov", "versions": {"openvino": "2026.4.1"}, "device": "cpu", "precision": "bf16",
                 "options_asked": {}, "effective": {"precision": "f32"}, "notes": ["no native bf16"]},
        params={"batch": 8, "warmup": 10, "iterations": 50, "min_duration_s": 2.0, "scope": "compute",
                "threads": None, "seed": 0},
        timing={"scope": "compute", "load_s": 0.5, "first_run_ms": 12.0, "latency_ms": {"p50": 3.0},
                "device_latency_ms": None, "throughput_ips": 2500.0} if status == "ok" else None,
        error=None if status == "ok" else {"type": "RuntimeUnavailable", "message": "no tensorrt"},
        environment={"host": "h"},
        git={"commit": None, "dirty": True},
    )
    return Record(**{**fields, **kw})


def test_round_trip_through_json():
    record = make_record()
    data = json.loads(json.dumps(record.to_dict()))
    assert data["schema_version"] == SCHEMA_VERSION
    assert list(data)[:6] == ["schema_version", "record_id", "run_id", "timestamp_utc", "status", "error"]
    assert {"drift", "gates", "environment", "git", "timing"} <= set(data)
    assert data["drift"] is None and data["gates"] is None
    assert Record.from_dict(data) == record


def test_status_and_error_are_checked():
    with pytest.raises(RecordError, match="status"):
        make_record(status="fine")
    with pytest.raises(RecordError, match="error"):
        make_record(status="error", error=None)
    with pytest.raises(RecordError, match="timing"):
        make_record(timing=None)
    assert make_record(status="skipped").timing is None


def test_append_then_read_keeps_order(tmp_path):
    path = tmp_path / "deep" / "runs.jsonl"
    records = [make_record(run_id=f"run-{i}") for i in range(3)] + [make_record(status="error")]
    for record in records:
        append_record(path, record)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["schema_version"] == 1 for line in lines)
    result = read_records(path)
    assert result.problems == []
    assert [r.record_id for r in result.records] == [r.record_id for r in records]


def test_reading_tolerates_and_reports_corrupt_lines(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, make_record())
    with path.open("a") as f:
        f.write("not json at all\n")
        f.write("\n")  # blank lines are not problems
        f.write(json.dumps({**make_record().to_dict(), "schema_version": 99}) + "\n")
        f.write('{"schema_version": 1, "run_id": "x"}\n')  # missing keys
        f.write('{"schema_version": 1, "status": "ok", "trunc')  # a writer killed mid-line
    append_record(path, make_record(run_id="after-torn-line"))
    result = read_records(path)
    assert [r.run_id for r in result.records] == ["run-1", "after-torn-line"]
    assert [n for n, _ in result.problems] == [2, 4, 5, 6]
    assert "schema_version 99" in dict(result.problems)[4]


def test_missing_file_reads_as_empty(tmp_path):
    result = read_records(tmp_path / "none.jsonl")
    assert result.records == [] and result.problems == []


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = tmp_path / "runs.jsonl"
    timing = {"scope": "compute", "load_s": float("nan"), "latency_ms": {"cv": float("inf")}}
    record = make_record(timing=timing)
    append_record(path, record)
    data = json.loads(path.read_text())  # strict JSON: NaN would not parse in other readers
    assert data["timing"]["load_s"] is None and data["timing"]["latency_ms"]["cv"] is None


def test_cell_key():
    assert cell_key(make_record().to_dict()) == ("MobileViT_XXS", 17, 8, "ov", "bf16", "seeded")
    assert make_record().cell_key == ("MobileViT_XXS", 17, 8, "ov", "bf16", "seeded")


def test_run_ids_are_unique_and_sortable():
    a, b = new_run_id(), new_run_id()
    assert a != b and a[:8].isdigit() and a[8] == "T"


def _writer(args: tuple[str, int]) -> None:
    path, n = args
    for i in range(n):
        append_record(Path(path), make_record(run_id=f"w{i}", environment={"pad": "x" * 5000}))


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "runs.jsonl"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_writer, [(str(path), 25)] * 4)
    result = read_records(path)
    assert result.problems == []
    assert len(result.records) == 100
