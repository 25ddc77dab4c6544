"""Report, plots and run comparison on synthetic result records (real matplotlib, no mocks).

Records are built in memory with the ``bench.records`` dataclasses and written with ``append_record``: no
paddle, no export.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.records import ErrorInfo, LoadedRecord, ModelInfo, Params, Record, RuntimeInfo, Timing, append_record
from bench.report import compare as cmp
from bench.report.build import build_report
from bench.report.cli import main_compare, main_report
from bench.report.plots import pareto_front
from bench.report.results import Cell, ReportError, load_results, select_cells

ENV = {
    "host": "box-a", "os": "Linux-6.1-x86_64", "python": "3.11.9",
    "cpu": {"model": "Test CPU 9000", "logical_cores": 2, "physical_cores": 1, "usable_cores": 2,
            "flags": {"avx2": True, "avx512f": False}, "governor": None},
    "memory_gib": 7.7, "gpus": [], "env_vars": {},
    "packages": {"onnxruntime": "1.31.1", "openvino": None, "numpy": "2.4.6"},
}


def latency(p50: float, cv: float = 0.02, count: int = 100) -> dict:
    """The fields bench.harness.stats.LatencyStats writes."""
    return {"count": count, "mean": p50 * 1.01, "std": p50 * cv, "cv": cv, "min": p50 * 0.9, "p5": p50 * 0.92,
            "p10": p50 * 0.95, "p50": p50, "p90": p50 * 1.1, "p95": p50 * 1.15, "p99": p50 * 1.3, "max": p50 * 1.5}


def drift(agreement: float, top1: float = 0.75, n: int = 1000, ref: float = 0.76) -> dict:
    """The fields core.metrics.DriftResult writes (intervals simplified)."""
    return {"n": n, "num_classes": 1000, "finite": True, "nonfinite_values": 0, "nonfinite_images": 0,
            "reference_nonfinite_values": 0, "agreement": agreement,
            "agreement_ci": [agreement - 0.004, min(1.0, agreement + 0.002)],
            "flipped": round((1 - agreement) * n), "compared_images": n, "max_abs_diff": 3e-5,
            "mean_abs_diff": 1e-6, "cosine_min": 0.99999, "cosine_mean": 0.999999, "labelled": True,
            "reference_top1": ref, "reference_top5": 0.93, "candidate_top1": top1, "candidate_top5": 0.93,
            "top1_delta": top1 - ref, "top1_delta_ci": [top1 - ref - 0.01, top1 - ref + 0.01], "confidence": 0.95}


def record(model="LeViT_128S", runtime="ort", precision="fp32", opset=17, batch=1, p50=5.0, status="ok",
           message=None, cv=0.02, agreement=None, top1=0.75, ref=0.76, host="box-a", ts="2026-01-01T00:00:00Z",
           notes=(), weights="official", ran=None, cores_busy=None) -> Record:
    """One record as the harness writes it (``append_record`` checks its invariants)."""
    timing = None
    if status == "ok":
        timing = Timing(scope="compute", load_s=0.5, first_run_ms=p50 * 3, latency_ms=latency(p50, cv),
                        device_latency_ms=None, throughput_ips=1000 * batch / p50, wall_s=2.0,
                        stopped_by="iterations", cores_busy=cores_busy)
    return Record(
        run_id="r1",
        status=status,
        error=None if status == "ok" else ErrorInfo(type="RuntimeError", message=message),
        model=ModelInfo(name=model, opset=opset, opset_written=opset, batch="dynamic", sha256="ab",
                        weights={"requested": weights}),
        runtime=RuntimeInfo(name=runtime, versions={runtime: "1.0"}, device="cpu", precision=precision,
                            effective={"precision": ran or precision, "threads": 2}, notes=list(notes)),
        params=Params(batch=batch, warmup=10, iterations=50, min_duration_s=2, max_duration_s=30, scope="compute",
                      threads=None, seed=0),
        timing=timing,
        drift=drift(agreement, top1, ref=ref) if agreement is not None else None,
        environment={**ENV, "host": host},
        git={"commit": "abc123", "dirty": False},
        timestamp_utc=ts,
    )


def write(path: Path, records: list[Record]) -> Path:
    """Append records; one that breaks an invariant (which ``append_record`` refuses) is written as is."""
    for r in records:
        try:
            r.check()
        except ValueError:
            with path.open("a") as f:
                f.write(json.dumps(r.to_dict()) + "\n")
        else:
            append_record(path, r)
    return path


def _fixture_records() -> list[Record]:
    recs = [
        record(runtime="ov", p50=9.0, agreement=1.0, ts="2025-12-31T00:00:00Z"),  # superseded by a re-run
        record(runtime="paddle", p50=8.0),
        record(runtime="ort", p50=5.25, agreement=1.0, top1=0.76),
        record(runtime="ov", p50=4.125, agreement=1.0, top1=0.76),
        record(runtime="ov", precision="bf16", p50=2.5, agreement=0.985, top1=0.752,
               notes=["bf16 lowered: Softmax kept in fp32"]),
        record(runtime="ort", precision="fp16", status="error", message="fp16 needs a GPU: no CUDA device"),
        record(runtime="ov", batch=8, p50=20.0, agreement=1.0, top1=0.76),
        record(runtime="ort", batch=8, p50=30.0, agreement=1.0, top1=0.76),
        record(model="MobileViT_XXS", runtime="ov", p50=3.0, agreement=0.999, top1=0.69, ref=0.69),
        record(model="MobileViT_XXS", runtime="ov", precision="bf16", p50=3.0, agreement=1.0, top1=0.69, ref=0.69,
               ran="fp32"),
        # A later failed re-run of ov fp32 batch 1: the earlier ok record stays in the tables.
        record(runtime="ov", status="error", message="later crash", ts="2026-01-02T00:00:00Z"),
    ]
    broken = record(runtime="trt", p50=1.0, agreement=1.0)  # claims ok but holds no timing
    broken.timing = None
    partial = record(runtime="ort", opset=13, p50=5.5, agreement=1.0)  # timing without percentiles
    partial.timing.latency_ms = {"count": 3}
    return recs + [broken, partial]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """One report over the fixture records (plus a corrupt line and a stale plot), shared by the tests."""
    root = tmp_path_factory.mktemp("report")
    results = write(root / "runs.jsonl", _fixture_records())
    with results.open("a") as f:
        f.write('{"truncated": \n')
    out = root / "out"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "old.png").write_bytes(b"x")
    path = build_report([results], out)
    assert path == out / "report.md"
    return out, path.read_text()


def _rows(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


# --- report ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_writes_plots(built):
    out, text = built
    pngs, svgs = sorted((out / "plots").glob("*.png")), sorted((out / "plots").glob("*.svg"))
    # Latency vs accuracy: LeViT b1, LeViT b8, MobileViT b1; vs batch and throughput vs latency: a figure each
    # for LeViT_128S and MobileViT_XXS.
    assert [p.stem for p in pngs] == [p.stem for p in svgs] and len(pngs) == 7
    assert all(p.stat().st_size > 5000 for p in pngs + svgs)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert all(b"<svg" in p.read_bytes()[:2000] for p in svgs)
    for p in pngs + svgs:
        assert f"(plots/{p.name})" in text
    assert not (out / "plots" / "old.png").exists()  # a stale plot from an earlier report is removed
    assert not list(out.rglob("*.tmp"))


def test_tables_hold_the_numbers(built):
    _, text = built
    assert "| LeViT_128S | ov | bf16 | 17 | 2.500 | 2.375 | 2.750 | 75.20 | [72.43, 77.78] | yes |" in text
    assert "| LeViT_128S | ov | fp32 | 17 | 4.125 | 3.919 | 4.538 | 76.00 |" in text
    assert "| ov | fp32 | 17 | 8 | 1 | 20.00 | 19.00 | 22.00 | 2.500 | 400.0 | missing |" in text
    # Labelled results with official weights: top-1 accuracy on the y axis; Paddle's from reference_top1.
    assert "top-1 accuracy" in text
    assert "76.00" in _rows(text, "| LeViT_128S | paddle | fp32 | 17 | 8.000 |")[0]
    assert "Test CPU 9000" in text and "onnxruntime 1.31.1" in text
    assert "bf16 lowered: Softmax kept in fp32" in text
    assert "asked bf16, ran fp32" in text


def test_pareto_marked_in_table(built):
    _, text = built
    rows = {
        tuple(c.strip() for c in r.split("|")[2:5]): r
        for r in _rows(text, "| LeViT_128S |")
        if r.count("|") == 12
    }  # the latency-vs-accuracy table
    # bf16 is fastest (2.5 ms, 75.2 %); ov fp32 (4.125 ms, 76 %) beats ort fp32 and paddle on both axes.
    assert "| yes |" in rows[("ov", "bf16", "17")] and "| yes |" in rows[("ov", "fp32", "17")]
    assert "| no |" in rows[("ort", "fp32", "17")] and "| no |" in rows[("paddle", "fp32", "17")]
    assert "| not plotted |" in rows[("ort", "fp16", "17")]


def test_errors_and_missing_are_shown(built):
    _, text = built
    fp16 = [line for line in text.splitlines() if "| ort | fp16 |" in line]
    assert fp16 and all("error" in line for line in fp16)
    assert any("fp16 needs a GPU: no CUDA device" in line for line in fp16)
    # An ok record whose timing lacks the percentiles: missing, never 0.
    partial = _rows(text, "| LeViT_128S | ort | fp32 | 13 |")
    assert partial and "| missing | missing | missing |" in partial[0]
    # An ok record without timing: kept, marked invalid with the schema's message, timing missing.
    trt = [line for line in text.splitlines() if "| trt | fp32 |" in line]
    assert len(trt) == 4 and all("invalid" in line and "needs timing" in line for line in trt)
    assert "| 1 | 17 | trt | fp32 | fp32 | compute | latency | invalid | missing | missing | missing |" in text
    assert "| 0.000 |" not in text
    assert "## Unreadable lines" in text and "JSONDecodeError" in text


def test_reruns_use_latest_ok(built):
    _, text = built
    assert "| LeViT_128S | ov | fp32 | 17 | 4.125 |" in text and "| 9.000 |" not in text
    reruns = text.split("## Re-runs")[1].split("\n## ")[0]
    assert "LeViT_128S b1 opset 17 ov fp32" in reruns and "later crash" in reruns


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["seeded", "seeded-calibrated"])
def test_agreement_axis_for_seeded_weights(tmp_path, weights):
    path = write(
        tmp_path / "r.jsonl",
        [
            record(runtime="paddle", weights=weights),
            record(runtime="ort", agreement=0.995, weights=weights),
        ],
    )
    text = build_report([path], tmp_path / "out").read_text()
    assert "top-1 agreement with Paddle" in text
    assert "| 100.00 (reference) |" in text and "| 99.50 |" in text
    assert (tmp_path / "out" / "plots" / "latency_vs_agreement_LeViT_b1.png").stat().st_size > 5000


def test_pareto_front_hand_made():
    # (latency, accuracy): A fastest, C most accurate, B dominated by D, E ties A exactly, F has no accuracy.
    pts = [(1.0, 70.0), (3.0, 72.0), (4.0, 80.0), (2.0, 75.0), (1.0, 70.0), (0.5, None)]
    assert pareto_front(pts) == [True, False, True, True, True, False]
    assert pareto_front([]) == []
    assert pareto_front([(2.0, 50.0), (2.0, 60.0)]) == [False, True]


# --- unreadable input -----------------------------------------------------------------------------------


def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ReportError, match=r"empty\.jsonl: empty results file"):
        build_report([empty], tmp_path / "out")


def test_garbage_file_is_an_error(tmp_path):
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\x00\xff not json\n[1, 2]\n")
    with pytest.raises(ReportError, match=r"garbage\.jsonl: no readable record in 2 non-empty line"):
        build_report([garbage], tmp_path / "out")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ReportError, match="no such results file"):
        load_results([tmp_path / "nope.jsonl"])


@pytest.mark.slow
def test_cli_exit_codes(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main_report([str(empty), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "empty results file" in err[0]
    good = write(tmp_path / "good.jsonl", [record(p50=4.0)])
    assert main_report([str(good), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "report.md")
    assert main_compare([str(empty), str(good)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


# --- compare --------------------------------------------------------------------------------------------


def test_ratio_with_noise_hand_made():
    # 10 % slower, each side 2 % CV: the band 1.1 * exp(+-sqrt(2) * ln 1.02) = [1.070, 1.131] excludes 1.
    r = cmp.ratio_with_noise(10.0, 0.02, 11.0, 0.02)
    assert r.ratio == pytest.approx(1.1)
    assert r.lo == pytest.approx(1.1 * 1.02 ** -(2**0.5))
    assert r.hi == pytest.approx(1.1 * 1.02 ** (2**0.5))
    assert r.within_noise is False
    # 2 % slower with 3 % CV on each side: within noise.
    assert cmp.ratio_with_noise(10.0, 0.03, 10.2, 0.03).within_noise is True
    # A noise floor widens quiet runs' bands.
    assert cmp.ratio_with_noise(10.0, 0.001, 10.2, 0.001).within_noise is False
    assert cmp.ratio_with_noise(10.0, 0.001, 10.2, 0.001, min_noise=0.02).within_noise is True
    # Unknown noise is never called "within noise".
    assert cmp.ratio_with_noise(10.0, None, 10.0, 0.02).within_noise is None


def test_compare_tables(tmp_path):
    a = write(
        tmp_path / "a.jsonl",
        [
            record(runtime="ort", p50=10.0, cv=0.02, agreement=1.0),
            record(runtime="ov", p50=10.0, cv=0.03, agreement=0.99),
            record(runtime="ov", precision="bf16", p50=5.0, agreement=0.98),
            record(runtime="paddle", p50=12.0),
        ],
    )
    b = write(
        tmp_path / "b.jsonl",
        [
            record(runtime="ort", p50=11.0, cv=0.02, agreement=1.0, host="box-b"),
            record(runtime="ov", p50=10.2, cv=0.03, agreement=0.95, host="box-b"),
            record(runtime="ov", precision="bf16", status="error", message="bf16 unsupported", host="box-b"),
            record(runtime="trt", p50=1.0, host="box-b"),
        ],
    )
    text = cmp.compare([a], [b])
    lines = text.splitlines()
    ort = _rows(text, "| LeViT_128S | 1 | 17 | ort | fp32 | 10.00 (±2.0 %) | 11.00 (±2.0 %) |")
    assert len(ort) == 1 and "| 1.100 | [1.070, 1.131] | B slower |" in ort[0]
    ov = _rows(text, "| LeViT_128S | 1 | 17 | ov | fp32 | 10.00 (±3.0 %) | 10.20 (±3.0 %) |")
    assert len(ov) == 1 and "| 1.020 |" in ov[0] and "within noise" in ov[0]
    # Drift: agreement 99 % [98.6, 99.2] vs 95 % [94.6, 95.2]: intervals apart.
    ov_drift = _rows(text, "| LeViT_128S | 1 | 17 | ov | fp32 | top-1 agreement |")
    assert len(ov_drift) == 1 and "| -4.00 | B lower |" in ov_drift[0]
    bf16 = [line for line in lines if "| ov | bf16 |" in line]
    assert len(bf16) == 3 and all("error: RuntimeError: bf16 unsupported" in line for line in bf16)
    assert any("| paddle |" in line and "missing in B" in line for line in lines)
    assert any("| trt |" in line and "missing in A" in line for line in lines)
    assert "box-a" in text and "box-b" in text


def test_compare_keeps_the_scenarios_of_a_cell_apart(tmp_path):
    latency, throughput = record(p50=10.0), throughput_record("ort", 1, 20.0, 100.0, None, 2, 300.0)
    a = write(tmp_path / "a.jsonl", [latency, throughput])
    b = write(tmp_path / "b.jsonl", [record(p50=10.0), throughput_record("ort", 1, 20.0, 110.0, None, 2, 300.0)])
    text = cmp.compare([a], [b])
    assert len(_rows(text, "| LeViT_128S | 1 | 17 | ort | fp32 | 10.00")) == 1
    [row] = _rows(text, "| LeViT_128S | 1 | 17 | ort throughput x2 | fp32 | 20.00")
    assert "| 100.0 (±2.0 %) | 110.0 (±2.0 %) | 1.100 |" in row


def test_compare_cli_writes_file(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", [record(p50=10.0)])
    b = write(tmp_path / "b.jsonl", [record(p50=10.0)])
    out = tmp_path / "cmp.md"
    assert main_compare([str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "within noise" in out.read_text()


@pytest.mark.slow
def test_two_hosts_are_told_apart(tmp_path):
    a = write(tmp_path / "a.jsonl", [record(runtime="ov", p50=4.0, agreement=1.0)])
    b = write(tmp_path / "b.jsonl", [record(runtime="ov", p50=3.0, agreement=1.0, host="box-b")])
    text = build_report([a, b], tmp_path / "out").read_text()
    assert "| LeViT_128S | ov @box-a | fp32 | 17 | 4.000 |" in text
    assert "| LeViT_128S | ov @box-b | fp32 | 17 | 3.000 |" in text
    assert "### Environment 2 (1 cell(s))" in text


# --- failed cells and reproducible output -----------------------------------------------------------------


@pytest.mark.slow
def test_failed_cells_draw_no_empty_plots(tmp_path):
    """A group with no ok cell (a usage error's batch, an unknown model, a runtime missing here) gets no plot;
    its cells are listed apart. A failed cell of a drawn group stays in that group's table, not plotted."""
    path = write(
        tmp_path / "r.jsonl",
        [
            record(runtime="ort", p50=5.0, agreement=1.0, top1=0.76),
            record(runtime="ort", batch=-3, status="error", message="--batch must be a positive integer, got -3"),
            record(model=None, runtime="ov", status="error", message="unknown model 'NoNet'"),
            record(runtime="trt", precision="fp16", opset=13, status="skipped", message="no CUDA device here"),
            record(model="MobileViT_XXS", runtime="trt", status="skipped", message="no CUDA device here"),
        ],
    )
    out = tmp_path / "out"
    text = build_report([path], out).read_text()
    stems = sorted(p.name for p in (out / "plots").iterdir())
    assert stems == ["batch_LeViT_128S.png", "batch_LeViT_128S.svg",
                     "latency_vs_top1_LeViT_b1.png", "latency_vs_top1_LeViT_b1.svg",
                     "throughput_latency_LeViT_128S.png", "throughput_latency_LeViT_128S.svg"]
    for heading in ("### LeViT, batch -3", "### None", "### MobileViT"):
        assert heading not in text
    assert "Not drawn, no ok cell: LeViT, batch -3 (1 cell(s)); MobileViT, batch 1 (1 cell(s)); " \
           "None, batch 1 (1 cell(s))." in text
    assert "Not drawn, no ok cell: MobileViT_XXS (1 cell(s)); None (1 cell(s))." in text
    failures = text.split("## Failed and skipped cells")[1].split("\n## ")[0]
    for label, status, message in (
        ("LeViT_128S b-3 opset 17 ort fp32", "error", "--batch must be a positive integer, got -3"),
        ("None b1 opset 17 ov fp32", "error", "unknown model 'NoNet'"),
        ("LeViT_128S b1 opset 13 trt fp16", "skipped", "no CUDA device here"),
        ("MobileViT_XXS b1 opset 17 trt fp32", "skipped", "no CUDA device here"),
    ):
        row = _rows(failures, f"| {label} |")
        assert len(row) == 1 and f"| {status} |" in row[0] and message in row[0]
    # The skipped trt cell shares the drawn LeViT batch-1 group: in its table, not plotted, with the reason.
    trt = _rows(text, "| LeViT_128S | trt | fp16 | 13 |")
    assert len(trt) == 1 and "| not plotted |" in trt[0] and "no CUDA device here" in trt[0]


def test_each_cell_shows_its_latest_outcome_and_superseded_errors_are_counted(tmp_path):
    """Failed attempts at LeViT_128S ort fp32 (a weights file that was not there: no model was ever loaded, each
    with its own weights key) and a failed run of the cell itself, then an ok run: one cell, its ok record, five
    superseded errors counted. A failure after the ok run is the cell's latest news and is not superseded."""
    attempts = [failed_attempt(f"/w{i}", f"2026-01-01T00:0{i}:00Z") for i in range(4)]
    recs = [*attempts, record(status="error", message="crash", ts="2026-01-01T00:05:00Z"),
            record(agreement=1.0, ts="2026-01-01T00:06:00Z"),
            record(runtime="ov", agreement=1.0, ts="2026-01-01T00:06:00Z"),
            record(runtime="ov", status="error", message="later crash", ts="2026-01-01T00:07:00Z"),
            record(runtime="paddle", status="error", message="never ran ok", weights="/w9")]
    cells = select_cells(load_results([write(tmp_path / "r.jsonl", recs)]).records)
    ort = [c for c in cells if c.runtime == "ort"]
    assert len(ort) == 1 and ort[0].ok and len(ort[0].history) == 6 and ort[0].superseded_errors == 5
    (ov,) = [c for c in cells if c.runtime == "ov"]
    assert ov.ok and ov.superseded_errors == 0  # its failure came after the ok run
    assert [c.status for c in cells if c.runtime == "paddle"] == ["error"]  # no ok run to supersede it
    text = build_report([tmp_path / "r.jsonl"], tmp_path / "out").read_text()
    assert "5 superseded error record(s)" in text
    assert "weights file missing" not in text and "ort fp32 (error)" not in text and "never ran ok" in text


def failed_attempt(weights: str, ts: str) -> Record:
    """An error record of a run that failed before it had a model (no model hash), as a missing weights file
    left one before such input was refused up front."""
    attempt = record(status="error", message="weights file missing", weights=weights, ts=ts)
    attempt.model = dataclasses.replace(attempt.model, sha256=None)
    return attempt


def test_report_of_failed_cells_only(tmp_path):
    path = write(tmp_path / "r.jsonl", [record(batch=-3, status="error", message="bad batch")])
    out = tmp_path / "out"
    text = build_report([path], out).read_text()
    assert list((out / "plots").iterdir()) == []
    assert "1 cell(s): 1 error." in text and "bad batch" in text.split("## Failed and skipped cells")[1]


@pytest.mark.slow
def test_rebuild_gives_the_same_bytes(tmp_path):
    """Same records, same report: the SVG ids are salted with a fixed salt and no file carries a date."""
    path = write(tmp_path / "r.jsonl", [record(runtime="paddle", p50=8.0), record(runtime="ov", agreement=1.0)])
    texts, plots = [], []
    for name in ("one", "two"):
        report = build_report([path], tmp_path / name)
        texts.append([line for line in report.read_text().splitlines() if not line.startswith("Generated")])
        plots.append({p.name: p.read_bytes() for p in sorted((tmp_path / name / "plots").iterdir())})
    assert texts[0] == texts[1]
    assert len(plots[0]) == 6 and plots[0] == plots[1]


def throughput_record(runtime: str, batch: int, p50: float, ips: float, requests: int | None, ran: int,
                      peak: float, notes: tuple = ()) -> Record:
    """A throughput-scenario record: ``requests`` asked (None: the runtime's own), ``ran`` in flight."""
    r = record(runtime=runtime, batch=batch, p50=p50)
    r.params.scenario, r.params.requests = "throughput", requests
    r.timing.scenario, r.timing.requests, r.timing.throughput_ips = "throughput", ran, ips
    r.timing.notes = list(notes)
    r.runtime.effective["requests"] = ran
    r.memory = {"method": "clear_refs", "peak_mib": peak, "load_increase_mib": 30.0}
    return r


@pytest.mark.slow
def test_throughput_scenario_and_memory_in_the_report(tmp_path):
    """Both scenarios of a cell coexist; each scenario has its batch figure; the throughput-vs-latency table
    marks the front and compares each throughput cell with its latency twin; memory is a column and a panel."""
    latency_ov = record(runtime="ov", p50=10.0)  # 100 images/s at batch 1
    latency_ov.memory = {"method": "clear_refs", "peak_mib": 300.0, "load_increase_mib": 25.0}
    records = [
        latency_ov,
        record(runtime="ov", batch=8, p50=40.0),  # 200 images/s
        throughput_record("ov", 1, 18.0, 180.0, None, 2, 320.0),
        throughput_record("ov", 1, 35.0, 150.0, 4, 4, 350.0),  # beaten: slower and fewer images/s than x2
        record(runtime="ort", p50=12.0, cores_busy=1.9),  # 83.3 images/s, both cores busy
        throughput_record("ort", 1, 30.0, 80.0, None, 2, 280.0,
                          notes=("the process kept 1.00 of 2 cores busy during the timed loop",)),
    ]
    out = tmp_path / "out"
    text = build_report([write(tmp_path / "r.jsonl", records)], out).read_text()
    names = {p.name for p in (out / "plots").iterdir()}
    assert {"batch_LeViT_128S.png", "batch_LeViT_128S_throughput.png",
            "throughput_latency_LeViT_128S.png"} <= names
    assert "### LeViT_128S, latency scenario" in text and "### LeViT_128S, throughput scenario" in text
    tradeoff = text.split("## Throughput vs latency")[1].split("\n## ")[0]
    rows = {tuple(c.strip() for c in r.split("|")[1:7]): r for r in tradeoff.splitlines() if r.startswith("| o")}
    # columns: runtime, precision, opset, scenario, batch, requests ... images/s, peak MiB, front, vs latency
    ov_x2 = rows[("ov x auto", "fp32", "17", "throughput x2", "1", "2")]
    assert "| 180.0 | 320 | yes | x1.80 |" in ov_x2
    assert "| 150.0 | 350 | no | x1.50 |" in rows[("ov x4", "fp32", "17", "throughput x4", "1", "4")]
    assert "| yes |" in rows[("ov", "fp32", "17", "latency", "1", "1")]  # fastest: on the front
    assert "| yes |" in rows[("ov", "fp32", "17", "latency", "8", "1")]  # most images/s: on the front
    ort = rows[("ort x auto", "fp32", "17", "throughput x2", "1", "2")]
    assert "x0.96 (see note; one request at a time already kept 1.90 of 2 cores busy)" in ort
    assert "kept 1.00 of 2 cores busy" in ort
    # memory: the all-cells column and the batch tables
    assert "| LeViT_128S | 1 | 17 | ov | fp32 | fp32 | compute | latency | ok | 10.00 |" in text
    assert "| 100.0 | 300 |" in text and "| 300 | +25 |" in text
    assert "the process kept 1.00 of 2 cores busy" in text.split("## Notes recorded by the runs")[1]


def test_a_contended_cell_is_on_no_front(tmp_path):
    """One rule for every front: the fastest cell, measured under contention, is drawn in both figures but judged
    against nothing; the quiet cells form the front without it."""
    contended = record(runtime="ov", p50=2.0, agreement=1.0)  # fastest and most images/s, but contended
    contended.machine = {"contended": True, "contention": ["other processes used 1.40 cores"]}
    records = [contended, record(runtime="ort", p50=5.0, agreement=1.0), record(runtime="paddle", p50=8.0)]
    text = build_report([write(tmp_path / "r.jsonl", records)], tmp_path / "out").read_text()
    for section, ov_row in (("## Latency vs accuracy", "| LeViT_128S | ov |"), ("## Throughput vs latency", "| ov |")):
        part = text.split(section)[1].split("\n## ")[0]
        (row,) = _rows(part, ov_row)
        assert "| no verdict (contended) |" in row, row
        (ort,) = _rows(part, ov_row.replace("ov", "ort"))
        assert "| yes |" in ort, ort  # with the contended cell judged, ort would be beaten


def test_drift_and_gates_are_read_leniently():
    """Malformed drift and gates sections read as missing, never as numbers or a crash."""
    r = record(agreement=1.0)
    r.drift.update(agreement=float("nan"), agreement_ci=[0.9, "x"], top1_delta_ci=[0.1], finite="yes")
    r.gates = {"passed": False, "checks": [{"metric": "agreement", "value": 0.9, "threshold": 1.0, "passed": False},
                                           "not a check", {"metric": "max_abs_diff", "passed": True}]}
    (cell,) = select_cells([LoadedRecord(r, "mem:1", 0)])
    assert isinstance(cell, Cell)
    assert cell.drift.number("agreement") is None and cell.drift.interval("agreement_ci") is None
    assert cell.drift.interval("top1_delta_ci") is None and cell.drift.finite is None
    assert cell.drift.number("candidate_top1") == 0.75
    lo, hi = cell.drift.top1_interval
    assert lo < 0.75 < hi
    assert [c.metric for c in cell.gates.failed] == ["agreement"] and cell.gates.passed is False
    r.gates = {"checks": []}  # no verdict: no gates result
    assert cell.gates is None
