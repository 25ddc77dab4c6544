"""Report, plots and run comparison on synthetic result records (real matplotlib, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import compare as cmp
from bench import report
from bench.plots import pareto_front
from bench.records import Record, append_record

ENV = {"host": "box-a", "os": "Linux-6.1-x86_64", "python": "3.11.9",
       "cpu": {"model": "Test CPU 9000", "logical_cores": 2, "physical_cores": 1, "usable_cores": 2,
               "flags": {"avx2": True, "avx512f": False}, "governor": None},
       "memory_gib": 7.7, "gpus": [], "packages": {"onnxruntime": "1.31.1", "openvino": None, "numpy": "2.4.6"},
       "env_vars": {}}


def latency(p50: float, cv: float = 0.02, count: int = 100) -> dict:
    return {"count": count, "mean": p50 * 1.01, "std": p50 * cv, "cv": cv, "min": p50 * 0.9, "p50": p50,
            "p90": p50 * 1.1, "p95": p50 * 1.15, "p99": p50 * 1.3, "max": p50 * 1.5}


def drift(agreement: float, top1: float = 0.75, n: int = 1000) -> dict:
    return {"n": n, "num_classes": 1000, "finite": True, "nonfinite_values": 0, "nonfinite_images": 0,
            "reference_nonfinite_values": 0, "agreement": agreement,
            "agreement_ci": [agreement - 0.004, min(1.0, agreement + 0.002)], "flipped": round((1 - agreement) * n),
            "compared_images": n, "max_abs_diff": 3e-5, "mean_abs_diff": 1e-6, "cosine_min": 0.99999,
            "cosine_mean": 0.999999, "labelled": True, "reference_top1": 0.76, "reference_top5": 0.93,
            "candidate_top1": top1, "candidate_top5": 0.93, "top1_delta": top1 - 0.76,
            "top1_delta_ci": [top1 - 0.77, top1 - 0.75], "confidence": 0.95}


def record(model="LeViT_128S", runtime="ort", precision="fp32", opset=17, batch=1, p50=5.0, status="ok",
           message=None, cv=0.02, ips=None, agreement=None, top1=0.75, host="box-a", ts="2026-01-01T00:00:00Z",
           notes=(), weights="official", **over) -> dict:
    timing = None
    if status == "ok":
        timing = {"scope": "compute", "load_s": 0.5, "first_run_ms": p50 * 3, "latency_ms": latency(p50, cv),
                  "device_latency_ms": None, "throughput_ips": ips if ips is not None else 1000 * batch / p50,
                  "wall_s": 2.0, "stopped_by": "iterations"}
    rec = Record(
        run_id="r1", status=status, error=None if status == "ok" else {"type": "RuntimeError", "message": message},
        model={"name": model, "opset": opset, "opset_written": opset, "batch": "dynamic", "onnx_sha256": "ab",
               "manifest": None, "weights": {"requested": weights}},
        runtime={"name": runtime, "versions": {runtime: "1.0"}, "device": "cpu", "precision": precision,
                 "options_asked": None, "effective": {"threads": 2}, "notes": list(notes)},
        params={"batch": batch, "warmup": 10, "iterations": 50, "min_duration_s": 2, "max_duration_s": 30,
                "scope": "compute", "threads": None, "seed": 0},
        timing=timing, drift=drift(agreement, top1) if agreement is not None else None,
        environment={**ENV, "host": host}, git={"commit": "abc123", "dirty": False}, timestamp_utc=ts,
    ).to_dict()
    rec.update(over)
    return rec


def write(path: Path, records: list[dict]) -> Path:
    for r in records:
        append_record(path, r)
    return path


@pytest.fixture
def results(tmp_path) -> Path:
    recs = [
        record(runtime="paddle", p50=8.0),
        record(runtime="ort", p50=5.25, agreement=1.0, top1=0.76),
        record(runtime="ov", p50=4.125, agreement=1.0, top1=0.76),
        record(runtime="ov", precision="bf16", p50=2.5, agreement=0.985, top1=0.752,
               notes=["bf16 lowered: Softmax kept in fp32"]),
        record(runtime="ort", precision="fp16", status="error", message="fp16 needs a GPU: no CUDA device"),
        record(runtime="ov", batch=8, p50=20.0, agreement=1.0, top1=0.76),
        record(runtime="ort", batch=8, p50=30.0, agreement=1.0, top1=0.76),
        record(model="MobileViT_XXS", runtime="ov", p50=3.0, agreement=0.999, top1=0.69),
    ]
    # A record that claims ok but holds no timing (fails the schema check, still must show up), and one
    # whose timing lacks the percentiles.
    broken = record(runtime="trt", p50=1.0, agreement=1.0)
    broken["timing"] = None
    partial = record(runtime="ort", opset=13, p50=5.5, agreement=1.0)
    partial["timing"]["latency_ms"] = {"count": 3}
    recs += [broken, partial]
    # A re-run: an earlier slower ok run and a later failed one for ov fp32 batch 1.
    recs.insert(0, record(runtime="ov", p50=9.0, agreement=1.0, ts="2025-12-31T00:00:00Z"))
    recs.append(record(runtime="ov", status="error", message="later crash", ts="2026-01-02T00:00:00Z"))
    return write(tmp_path / "runs.jsonl", recs)


# --- report ----------------------------------------------------------------------------------------------

def test_report_builds_with_plots_and_tables(results, tmp_path):
    out = tmp_path / "out"
    path = report.build_report([results], out)
    assert path == out / "report.md"
    text = path.read_text()
    pngs, svgs = sorted((out / "plots").glob("*.png")), sorted((out / "plots").glob("*.svg"))
    assert len(pngs) == len(svgs) >= 4  # 2 families x batch 1 + LeViT batch 8 + per-model batch plots
    assert all(p.stat().st_size > 1000 for p in pngs + svgs)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    for p in pngs:
        assert f"(plots/{p.name})" in text
    # Numbers behind the plots.
    assert "| LeViT_128S | ov | bf16 | 17 | 2.500 | 2.250 | 2.750 | 75.20 |" in text
    assert "| LeViT_128S | ov | fp32 | 17 | 4.125 |" in text
    assert "| ov | fp32 | 17 | 8 | 20.00 | 18.00 | 22.00 | 2.500 | 400.0 |" in text
    # Top-1 accuracy on the y axis (labelled, official weights); Paddle's value is the recorded reference.
    assert "top-1 accuracy" in text and "76.00" in text
    # Environment and notes.
    assert "Test CPU 9000" in text and "onnxruntime 1.31.1" in text
    assert "bf16 lowered: Softmax kept in fp32" in text


def test_pareto_marked_in_table(results, tmp_path):
    text = report.build_report([results], tmp_path / "out").read_text()
    rows = {line.split("|")[2].strip() + " " + line.split("|")[3].strip(): line
            for line in text.splitlines() if line.startswith("| LeViT_128S |") and "| 17 |" in line}
    # bf16 is fastest (2.5 ms, 75.2 %); ov fp32 (4.125 ms, 76 %) is more accurate; ort fp32 and paddle are
    # dominated by ov fp32.
    assert "| yes |" in rows["ov bf16"] and "| yes |" in rows["ov fp32"]
    assert "| no |" in rows["ort fp32"]


def test_errors_and_missing_are_shown(results, tmp_path):
    text = report.build_report([results], tmp_path / "out").read_text()
    fp16 = [line for line in text.splitlines() if "| ort | fp16 |" in line]
    assert fp16 and all("error" in line for line in fp16)
    assert any("fp16 needs a GPU: no CUDA device" in line for line in fp16)
    # ok record whose timing lacks percentiles: missing, never 0.
    partial = [line for line in text.splitlines() if line.startswith("| LeViT_128S | ort | fp32 | 13 |")]
    assert partial and "| missing | missing | missing |" in partial[0]
    # ok record without timing: kept, marked invalid with the schema message, numbers missing.
    trt = [line for line in text.splitlines() if "| trt | fp32 |" in line]
    assert trt and all("invalid" in line for line in trt)
    assert any("needs timing" in line for line in trt)
    assert "| 0.000 |" not in text


def test_reruns_use_latest_ok(results, tmp_path):
    text = report.build_report([results], tmp_path / "out").read_text()
    assert "| LeViT_128S | ov | fp32 | 17 | 4.125 |" in text and "| 9.000 |" not in text
    reruns = text.split("## Re-runs")[1].split("##")[0]
    assert "LeViT_128S b1 opset 17 ov fp32" in reruns and "later crash" in reruns


def test_agreement_axis_for_seeded_weights(tmp_path):
    path = write(tmp_path / "r.jsonl", [record(runtime="paddle", weights="seeded"),
                                       record(runtime="ort", agreement=0.995, weights="seeded")])
    text = report.build_report([path], tmp_path / "out").read_text()
    assert "top-1 agreement with Paddle" in text
    assert "| 100.00 (reference) |" in text and "| 99.50 |" in text


def test_stale_plots_removed(results, tmp_path):
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "old.png").write_bytes(b"x")
    report.build_report([results], out)
    assert not (out / "plots" / "old.png").exists()


def test_pareto_front_hand_made():
    # (latency, accuracy): A fastest, C most accurate, B dominated by D, E ties A exactly, F has no accuracy.
    pts = [(1.0, 70.0), (3.0, 72.0), (4.0, 80.0), (2.0, 75.0), (1.0, 70.0), (0.5, None)]
    assert pareto_front(pts) == [True, False, True, True, True, False]
    assert pareto_front([]) == []
    assert pareto_front([(2.0, 50.0), (2.0, 60.0)]) == [False, True]


# --- unreadable input ------------------------------------------------------------------------------------

def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(report.ReportError, match=r"empty\.jsonl: empty results file"):
        report.build_report([empty], tmp_path / "out")


def test_garbage_file_is_an_error(tmp_path):
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\x00\xff not json\n[1, 2]\n")
    with pytest.raises(report.ReportError, match=r"garbage\.jsonl: no readable record in 2"):
        report.build_report([garbage], tmp_path / "out")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(report.ReportError, match="no such results file"):
        report.load_results([tmp_path / "nope.jsonl"])


def test_partly_corrupt_file_lists_the_bad_lines(results, tmp_path):
    with results.open("a") as f:
        f.write('{"truncated": \n')
    text = report.build_report([results], tmp_path / "out").read_text()
    assert "## Unreadable lines" in text and "JSONDecodeError" in text


def test_cli_exit_codes(results, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert report.main_report([str(empty), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "empty results file" in err[0]
    assert report.main_report([str(results), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip().endswith("report.md")
    assert cmp.main_compare([str(empty), str(results)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


# --- compare ---------------------------------------------------------------------------------------------

def test_ratio_with_noise_hand_made():
    # 10 % slower, each side 2 % CV: the band 1.1 * exp(+-sqrt(2) * ln 1.02) = [1.070, 1.131] excludes 1.
    r = cmp.ratio_with_noise(10.0, 0.02, 11.0, 0.02)
    assert r.ratio == pytest.approx(1.1)
    assert r.lo == pytest.approx(1.1 * 1.02 ** -(2 ** 0.5)) and r.hi == pytest.approx(1.1 * 1.02 ** (2 ** 0.5))
    assert not r.within_noise
    # 2 % slower with 3 % CV on each side: within noise.
    assert cmp.ratio_with_noise(10.0, 0.03, 10.2, 0.03).within_noise
    # A noise floor widens quiet runs' bands.
    assert not cmp.ratio_with_noise(10.0, 0.001, 10.2, 0.001).within_noise
    assert cmp.ratio_with_noise(10.0, 0.001, 10.2, 0.001, min_noise=0.02).within_noise
    # Unknown noise is never called "within noise".
    assert cmp.ratio_with_noise(10.0, None, 10.0, 0.02).within_noise is None


def test_compare_tables(tmp_path):
    a = write(tmp_path / "a.jsonl", [
        record(runtime="ort", p50=10.0, cv=0.02, agreement=1.0),
        record(runtime="ov", p50=10.0, cv=0.03, agreement=0.99),
        record(runtime="ov", precision="bf16", p50=5.0, agreement=0.98),
        record(runtime="paddle", p50=12.0),
    ])
    b = write(tmp_path / "b.jsonl", [
        record(runtime="ort", p50=11.0, cv=0.02, agreement=1.0, host="box-b"),
        record(runtime="ov", p50=10.2, cv=0.03, agreement=0.99, host="box-b"),
        record(runtime="ov", precision="bf16", status="error", message="bf16 not supported here", host="box-b"),
        record(runtime="trt", p50=1.0, host="box-b"),
    ])
    text = cmp.compare([a], [b])
    lines = text.splitlines()
    ort = next(line for line in lines if "| LeViT_128S | 1 | 17 | ort | fp32 | 10.00 (±2.0 %) | 11.00 (±2.0 %)" in line)
    assert "| 1.100 |" in ort and "B slower" in ort
    ov = next(line for line in lines if "| ov | fp32 | 10.00 (±3.0 %) | 10.20 (±3.0 %)" in line)
    assert "| 1.020 |" in ov and "within noise" in ov
    bf16 = [line for line in lines if "| ov | bf16 |" in line]
    assert len(bf16) == 3 and all("error: RuntimeError: bf16 not supported here" in line for line in bf16)
    assert any("| paddle |" in line and "missing in B" in line for line in lines)
    assert any("| trt |" in line and "missing in A" in line for line in lines)
    assert "box-a" in text and "box-b" in text


def test_compare_cli_writes_file(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", [record(p50=10.0)])
    b = write(tmp_path / "b.jsonl", [record(p50=10.0)])
    out = tmp_path / "cmp.md"
    assert cmp.main_compare([str(a), str(b), "--out", str(out)]) == 0
    assert "within noise" in out.read_text()
