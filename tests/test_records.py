"""Result records: round trip, atomic append, tolerant reading."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from bench.records import (
    SCHEMA_VERSION,
    ErrorInfo,
    ModelInfo,
    Params,
    Record,
    RecordError,
    RuntimeInfo,
    Timing,
    append_record,
    new_run_id,
    read_records,
)


def make_record(status: str = "ok", **kw) -> Record:
    fields = dict(
        run_id="run-1",
        status=status,
        model=ModelInfo(name="MobileViT_XXS", opset=17, batch="dynamic", sha256="ab" * 32,
                        manifest="artifacts/x/model.onnx.json",
                        weights={"requested": "seeded", "kind": "seeded"}),
        runtime=RuntimeInfo(name="ov", versions={"openvino": "2026.4.1"}, device="cpu", precision="bf16",
                            options_asked={}, effective={"precision": "fp32"}, notes=["no native bf16"]),
        params=Params(batch=8, warmup=10, iterations=50, min_duration_s=2.0, scope="compute", threads=None,
                      seed=0),
        timing=Timing(scope="compute", load_s=0.5, first_run_ms=12.0, latency_ms={"p50": 3.0},
                      device_latency_ms=None, throughput_ips=2500.0) if status == "ok" else None,
        error=None if status == "ok" else ErrorInfo(type="RuntimeUnavailable", message="no tensorrt"),
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
    assert Record.from_dict(data).runtime.precision_ran == "fp32"


def test_schema_1_records_are_read():
    data = make_record().to_dict()
    data["schema_version"] = 1
    data["model"]["onnx_sha256"] = data["model"].pop("sha256")
    for key in ("machine", "memory"):
        data.pop(key)
    record = Record.from_dict(data)
    assert record.model.sha256 == "ab" * 32 and record.schema_version == 1 and record.memory is None


def test_unknown_fields_survive_a_round_trip():
    data = make_record().to_dict()
    data["runtime"]["future_field"] = {"x": 1}
    assert Record.from_dict(data).to_dict()["runtime"]["future_field"] == {"x": 1}


@pytest.mark.parametrize("change, message", [
    ({"status": "fine"}, "status"),
    ({"status": "error", "error": None}, "error"),
    ({"timing": None}, "timing"),
])
def test_invariants_are_checked_on_append_and_marked_on_read(tmp_path, change, message):
    record = make_record(**change)
    with pytest.raises(RecordError, match=message):
        append_record(tmp_path / "runs.jsonl", record)
    assert not (tmp_path / "runs.jsonl").exists()
    (tmp_path / "runs.jsonl").write_text(json.dumps(record.to_dict()) + "\n")
    loaded = read_records(tmp_path / "runs.jsonl").records
    assert len(loaded) == 1 and message in loaded[0].invalid and loaded[0].status == "invalid"
    assert make_record(status="skipped").timing is None


def test_append_then_read_keeps_order(tmp_path):
    path = tmp_path / "deep" / "runs.jsonl"
    records = [make_record(run_id=f"run-{i}") for i in range(3)] + [make_record(status="error")]
    for record in records:
        append_record(path, record)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["schema_version"] == SCHEMA_VERSION for line in lines)
    result = read_records(path)
    assert result.problems == []
    assert [r.record.record_id for r in result.records] == [r.record_id for r in records]
    assert [r.source for r in result.records] == [f"{path}:{n}" for n in range(1, 5)]


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
    assert [r.record.run_id for r in result.records] == ["run-1", "after-torn-line"]
    lines = [int(p.split(":")[1]) for p in result.problems]
    assert lines == [2, 4, 5, 6]
    assert "schema_version 99" in result.problems[1]


def test_missing_file_reads_as_empty(tmp_path):
    result = read_records(tmp_path / "none.jsonl")
    assert result.records == [] and result.problems == []


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = tmp_path / "runs.jsonl"
    timing = Timing(scope="compute", load_s=float("nan"), latency_ms={"cv": float("inf")})
    record = make_record(timing=timing)
    append_record(path, record)
    data = json.loads(path.read_text())  # strict JSON: NaN would not parse in other readers
    assert data["timing"]["load_s"] is None and data["timing"]["latency_ms"]["cv"] is None


def test_cell_key_of_a_record_equals_the_key_of_its_request():
    from bench.request import BenchRequest, Target
    from runtimes.base import RuntimeOptions

    request = BenchRequest("ov", Target(model="MobileViT_XXS", opset=17), RuntimeOptions(precision="bf16", batch=8))
    key = ("MobileViT_XXS", 17, 8, "ov", "bf16", "latency", None, None, "seeded")
    assert make_record().cell_key == key == request.cell_key  # a record without a scenario ran latency


def test_both_scenarios_and_each_concurrency_of_a_cell_are_distinct_cells():
    from bench.request import BenchRequest, Target
    from runtimes.base import RuntimeOptions

    def key(**options):
        options = RuntimeOptions(precision="bf16", batch=8, **options)
        request = BenchRequest("ov", Target(model="MobileViT_XXS", opset=17), options)
        params = Params(batch=8, scenario=request.runtime.scenario, requests=request.runtime.requests)
        assert make_record(params=params).cell_key == request.cell_key  # requests and records agree
        return request.cell_key

    keys = [key(), key(scenario="throughput"), key(scenario="throughput", requests=4)]
    assert len(set(keys)) == 3
    assert key(scenario="latency") == keys[0]


def test_each_thread_count_asked_is_a_cell_of_its_own():
    from bench.request import BenchRequest, Target
    from runtimes.base import RuntimeOptions

    keys = []
    for threads in (None, 1, 2):
        request = BenchRequest("ort", Target(model="LeViT_128S"), RuntimeOptions(batch=1, threads=threads))
        record = make_record(params=Params(batch=1, threads=threads),
                             runtime=RuntimeInfo(name="ort", precision="fp32"),
                             model=ModelInfo(name="LeViT_128S", opset=17, weights={"requested": "seeded"}))
        assert record.cell_key == request.cell_key
        keys.append(request.cell_key)
    assert len(set(keys)) == 3  # a search over thread counts keeps every count apart


def test_run_ids_are_unique_and_sortable():
    ids = [new_run_id() for _ in range(3)]
    assert len(set(ids)) == 3 and all(i[:8].isdigit() and i[8] == "T" for i in ids)
    later = "29991231T235959Z-00000000"
    assert sorted([later, *ids])[-1] == later  # the timestamp prefix sorts chronologically


def _writer(args: tuple[str, int]) -> None:
    path, n = args
    for i in range(n):
        append_record(Path(path), make_record(run_id=f"w{i}", environment={"pad": "x" * 50000}))


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "runs.jsonl"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_writer, [(str(path), 25)] * 4)
    result = read_records(path)
    assert result.problems == []
    assert len(result.records) == 100 and {r.record.run_id for r in result.records} == {f"w{i}" for i in range(25)}
