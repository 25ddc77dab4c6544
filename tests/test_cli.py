"""``python -m bench`` end to end, in subprocesses: one record per run, one error line per failure."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_onnx, write_manifest

from bench.records import read_records
from runtimes import probe

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--warmup", "2", "--iterations", "20", "--duration", "0.05"]


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_error_line(proc: subprocess.CompletedProcess, code: int, fragment: str) -> str:
    assert proc.returncode == code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert fragment in errors[0]
    assert "Traceback" not in proc.stderr
    return errors[0]


def only_record(results: Path):
    result = read_records(results)
    assert result.problems == []
    assert len(result.records) == 1 and result.records[0].invalid is None
    return result.records[0].record


@pytest.fixture
def results(tmp_path) -> Path:
    return tmp_path / "results" / "runs.jsonl"


def test_null_run_prints_table_and_appends_ok_record(onnx_artifact, results):
    proc = bench("--runtime", "null", "--manifest", str(onnx_artifact), "--batch", "4", *FAST,
                 "--results", str(results), "--wide")
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()[:2]
    for column in ("scenario", "p50 ms", "p90 ms", "p99 ms", "mean±std ms", "CV", "img/s", "peak MiB", "load s",
                   "first ms", "notes"):
        assert column in header
    assert row.startswith("Tiny") and "null" in row
    record = only_record(results)
    assert record.status == "ok" and record.error is None
    assert record.model.name == "Tiny" and record.model.opset == 13
    assert record.model.sha256 == json.loads(onnx_artifact.read_text())["graph"]["sha256"]
    assert record.runtime.name == "null" and record.runtime.precision == "fp32"
    assert record.params.to_dict() == {"batch": 4, "warmup": 2, "iterations": 20, "min_duration_s": 0.05,
                                       "max_duration_s": 30.0, "scope": "compute", "threads": None, "seed": 0,
                                       "scenario": "latency", "requests": None}
    assert record.timing.scenario == "latency" and record.timing.requests == 1
    assert record.memory["peak_mib"] > 0 and record.memory["method"] in ("clear_refs", "sampled")
    assert f"{record.memory['peak_mib']:.0f}" in row
    assert record.timing.latency_ms["count"] >= 20 and record.timing.scope == "compute"
    assert isinstance(record.timing.throughput_ips, float)
    assert record.environment["cpu"]["logical_cores"] >= 1 and "git" in record.to_dict()


def test_throughput_scenario_run_records_what_ran(onnx_artifact, results):
    proc = bench("--runtime", "null", "--manifest", str(onnx_artifact), "--scenario", "throughput",
                 "--requests", "3", *FAST, "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "throughput x3" in proc.stdout.splitlines()[1]
    record = only_record(results)
    assert (record.params.scenario, record.params.requests) == ("throughput", 3)
    assert record.timing.scenario == "throughput" and record.timing.requests == 3
    assert record.runtime.effective["requests"] == 3 and record.runtime.effective["requests_source"] == "asked"


def test_requests_without_the_throughput_scenario_is_a_usage_error(onnx_artifact, results):
    proc = bench("--runtime", "null", "--manifest", str(onnx_artifact), "--requests", "2", "--results",
                 str(results))
    assert_one_error_line(proc, 2, "--requests (requests in flight) needs --scenario throughput")
    proc = bench("--runtime", "null", "--manifest", str(onnx_artifact), "--scenario", "offline", "--results",
                 str(results))
    assert_one_error_line(proc, 2, "--scenario must be one of latency, throughput")
    assert not results.exists()


def test_manifest_folder_and_end2end_scope(onnx_artifact, results):
    proc = bench("--runtime", "null", "--manifest", str(onnx_artifact.parent), "--scope", "end2end", *FAST,
                 "--results", str(results), "--json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.split("\n---\n", 1)[1])
    assert printed["timing"]["scope"] == "end2end"
    assert only_record(results).record_id == printed["record_id"]


@pytest.mark.parametrize("batch", ["0", "-3"])
def test_bad_batch_is_a_usage_error_without_a_record(onnx_artifact, results, batch):
    proc = bench("--runtime", "null", "--manifest", str(onnx_artifact), "--batch", batch,
                 "--results", str(results))
    assert_one_error_line(proc, 2, "--batch must be a positive integer")
    assert not results.exists()  # a usage error is not a result: the report must not plot batch -3


def test_unknown_precision_for_runtime(onnx_artifact, results):
    proc = bench("--runtime", "ort", "--precision", "int4", "--manifest", str(onnx_artifact),
                 "--results", str(results))
    assert_one_error_line(proc, 2, "runtime 'ort' does not support precision 'int4'; choose one of fp32, fp16, int8")
    assert not results.exists()


def test_unknown_option_lists_the_allowed_ones(onnx_artifact, results):
    proc = bench("--runtime", "ov", "--option", "hnt=throughput", "--manifest", str(onnx_artifact),
                 "--results", str(results))
    assert_one_error_line(proc, 2, "unknown option 'hnt' for runtime 'ov'; allowed: hint, streams")
    proc = bench("--runtime", "ov", "--option", "hint=fast", "--manifest", str(onnx_artifact),
                 "--results", str(results))
    assert_one_error_line(proc, 2, "option hint='fast' for runtime 'ov': expected one of 'latency', 'throughput'")
    assert not results.exists()


def test_unknown_model_and_runtime(results):
    proc = bench("--runtime", "ort", "--model", "ResNet50", "--results", str(results))
    assert_one_error_line(proc, 2, "unknown model 'ResNet50'; known models: LeViT_128S")
    proc = bench("--runtime", "tensorrtx", "--model", "MobileViT_S", "--results", str(results))
    assert_one_error_line(proc, 2, "unknown runtime 'tensorrtx'; allowed: ort, ov, paddle, trt")
    assert not results.exists()


def test_runtime_alias_is_accepted(onnx_artifact, results):
    proc = bench("--runtime", "onnxruntime", "--manifest", str(onnx_artifact), *FAST, "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert only_record(results).runtime.name == "ort"


def test_tensorrt_absent(onnx_artifact, results):
    if probe("trt").available:
        pytest.skip("TensorRT is available on this machine; the absent-runtime path cannot be exercised")
    proc = bench("--runtime", "trt", "--manifest", str(onnx_artifact), "--results", str(results))
    assert_one_error_line(proc, 1, "runtime 'trt' is not available: tensorrt is not installed")
    record = only_record(results)
    assert record.status == "error" and "tensorrt" in record.error.message


def test_missing_export_with_no_export_names_the_command(tmp_path, results):
    proc = bench("--runtime", "ort", "--model", "MobileViT_XXS", "--opset", "13", "--no-export",
                 "--artifacts", str(tmp_path / "empty"), "--results", str(results))
    line = assert_one_error_line(proc, 1, "MobileViT_XXS opset 13 is not exported")
    assert f"run: python -m export --model MobileViT_XXS --opset 13 --out {tmp_path / 'empty'}" in line
    assert only_record(results).error.type == "BenchFailure"


def test_ov_fp16_runs_as_this_cpu_can_and_the_record_and_table_say_so(onnx_artifact, results):
    """fp16 on OpenVINO's CPU plugin runs as the nearest format this CPU kind has (fp16; bf16 on a CPU with
    bf16 but no fp16; fp32 on one with neither): exit 0, and the record and the table say what ran."""
    from core.cpu import float_precision_run

    proc = bench("--runtime", "ov", "--manifest", str(onnx_artifact), "--precision", "fp16", *FAST,
                 "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    record = only_record(results)
    ran = float_precision_run("fp16")
    assert record.runtime.precision == "fp16" and record.runtime.effective["precision"] == ran
    if ran != "fp16":
        assert f"fp16→{ran}" in proc.stdout.splitlines()[1]
        assert any(f"no native fp16 (avx512_fp16/amx_fp16): it ran {ran}" in n for n in record.runtime.notes)


def test_the_table_fits_100_columns_and_wide_has_every_column():
    """The default table: the figures that decide in at most 100 columns, notes wrapped below each row, a
    precision that ran as another shown as such; --wide: every column, notes inline."""
    from test_report import record, throughput_record

    from bench.table import COLUMNS, format_table

    note = "asked fp16 but CPU has no native fp16 (avx512_fp16/amx_fp16): it ran bf16; --precision bf16 asks for it"
    records = [record(model="MobileViT_XXS", runtime="ov", precision="fp16", ran="bf16", p50=1234.5, batch=64,
                      notes=[note]),
               throughput_record("ort", 8, 30.0, 17990.0, 16, 16, 12345.0),
               record(status="error", message="a failure " * 30)]
    narrow = format_table(records)
    assert max(len(line) for line in narrow.splitlines()) <= 100, narrow
    lines = narrow.splitlines()
    assert lines[0].split() == ["model", "opset", "runtime", "prec", "batch", "scenario", "p50", "ms", "p99", "ms",
                                "img/s", "peak", "MiB"]
    assert "fp16→bf16" in lines[1] and "throughput x16" in lines[2]
    assert lines[4].startswith("MobileViT_XXS ov fp16 b64 latency: asked fp16") and "ERROR: a failure" in narrow
    wide = format_table(records, wide=True)
    assert wide.splitlines()[0].split()[:3] == list(COLUMNS[:3]) and "mean±std ms" in wide
    assert "fp16 (ran bf16)" in wide and note in wide


@pytest.mark.parametrize("case", ["missing weights", "manifest that is a list", "manifest not there"])
def test_model_files_the_user_named_wrongly_are_usage_errors(case, onnx_artifact, tmp_path, results):
    """Input the user can fix before anything runs: one error line, exit 2, no record, nothing made on disk."""
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([json.loads(onnx_artifact.read_text())]))
    target, fragment = {
        "missing weights": (["--model", "LeViT_128S", "--weights", str(tmp_path / "nope.pdparams")],
                            f"weights file {tmp_path / 'nope.pdparams'} does not exist; pass --weights PATH"),
        "manifest that is a list": (["--manifest", str(listed)], f"--manifest: {listed}: expected a JSON object, "
                                                                 "got list"),
        "manifest not there": (["--manifest", str(tmp_path / "none.json")], f"manifest {tmp_path / 'none.json'} "
                                                                            "not found"),
    }[case]
    proc = bench("--runtime", "ort", *target, "--artifacts", str(tmp_path / "art"), "--results", str(results))
    assert_one_error_line(proc, 2, fragment)
    assert not results.exists() and not results.parent.exists() and not (tmp_path / "art").exists()


@pytest.fixture
def corrupt_artifact(onnx_artifact, tmp_path) -> Path:
    folder = tmp_path / "corrupt"
    shutil.copytree(onnx_artifact.parent, folder)
    (folder / "model.onnx").write_bytes(b"\x08\x07this is not an ONNX protobuf" * 10)
    return folder / "model.onnx.json"


def test_corrupt_onnx_caught_by_the_manifest_hash(corrupt_artifact, results):
    proc = bench("--runtime", "ort", "--manifest", str(corrupt_artifact), "--results", str(results))
    assert_one_error_line(proc, 1, "does not match its manifest")
    assert only_record(results).model.name == "Tiny"


def test_corrupt_onnx_with_matching_hash_fails_in_the_runtime(corrupt_artifact, results):
    manifest = json.loads(corrupt_artifact.read_text())
    garbage = (corrupt_artifact.parent / "model.onnx").read_bytes()
    manifest["graph"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    corrupt_artifact.write_text(json.dumps(manifest))
    proc = bench("--runtime", "ort", "--manifest", str(corrupt_artifact), "--results", str(results))
    line = assert_one_error_line(proc, 1, "InvalidProtobuf")
    assert "model.onnx" in line  # ORT names the file it could not parse
    record = only_record(results)
    assert record.status == "error" and record.runtime.name == "ort" and record.error.type == "InvalidProtobuf"


def test_unwritable_results_folder(onnx_artifact, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the results folder should be")
    proc = bench("--runtime", "null", "--manifest", str(onnx_artifact),
                 "--results", str(blocker / "runs.jsonl"))
    assert_one_error_line(proc, 1, "is not writable")
    assert proc.stdout == ""


def test_debug_shows_the_traceback(results):
    proc = bench("--runtime", "ort", "--model", "ResNet50", "--results", str(results), "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


@pytest.mark.slow  # probing paddle imports it
def test_list_reports_every_runtime_with_aliases_and_options():
    proc = bench("list")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if not line.startswith(" ")}
    assert {"ort", "ov", "paddle", "trt"} <= set(lines)
    assert "available" in lines["ort"]
    assert "aliases: onnxruntime" in proc.stdout and "aliases: openvino" in proc.stdout
    assert "options: hint=None, streams=None" in proc.stdout  # hint None: the scenario's
    assert "concurrency='threads'" in proc.stdout


def test_list_options_prints_what_each_runtime_class_declares(capsys):
    from conftest import call_main

    from bench.list_cli import main

    code, out, err = call_main(main, capsys, "--options", "ov", "ort")
    assert code == 0, err
    assert out.startswith("ov: precisions fp32, bf16, fp16, int8; devices cpu, gpu, auto")
    assert "  --option streams=...  (int or null; default None)\n      NUM_STREAMS; default: what the" in out
    assert "--option concurrency=...  (one of 'threads', 'run_async'; default 'threads')" in out
    code, out, _ = call_main(main, capsys, "--options", "--json", "paddle")
    (paddle,) = json.loads(out)
    assert paddle["options"] == [] and paddle["capabilities"]["runs_paddle_model"] is True
    code, _, err = call_main(main, capsys, "--options", "tensorrtx")
    assert code == 2 and err.startswith("error: unknown runtime 'tensorrtx'")


def test_list_named_runtimes_as_json():
    proc = bench("list", "--json", "null", "trt")
    found = {a["name"]: a for a in json.loads(proc.stdout)}
    assert found["null"]["available"] is True
    assert found["trt"]["available"] == probe("trt").available
    if not found["trt"]["available"]:
        assert "tensorrt" in found["trt"]["reason"]


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--runtime", "ort", "--model", "LeViT_128S", "--calibration-size", "40"],
     "--calibration-size make the int8 model of ov or ort: add --precision int8"),
    (["--runtime", "ort", "--model", "LeViT_128S", "--precision", "int8", "--max-drop", "0.02"],
     "--max-drop (NNCF's accuracy control) makes the OpenVINO int8 model: use --runtime ov"),
    (["--runtime", "paddle", "--model", "LeViT_128S", "--precision", "int8", "--calibration", "calib"],
     "add --precision int8 (runtime ov or ort)"),
])
def test_int8_recipe_flags_are_checked_before_any_export(tmp_path, results, flags, fragment):
    proc = bench(*flags, "--artifacts", str(tmp_path / "art"), "--results", str(results))
    assert_one_error_line(proc, 2, fragment)
    assert not results.exists() and not (tmp_path / "art").exists()


def test_int8_recipe_flags_refuse_a_manifest_of_an_int8_model(tmp_path, results):
    """A --manifest of an fp32 export gets its int8 model made with the flags; one of an int8 model cannot."""
    make_tiny_onnx(tmp_path / "model.onnx")
    manifest = write_manifest(tmp_path, precision="int8")
    proc = bench("--runtime", "ov", "--precision", "int8", "--manifest", str(manifest), "--max-drop", "0.01",
                 "--results", str(results))
    assert_one_error_line(proc, 2, f"--max-drop shape the int8 model the export stage makes from an fp32 export; "
                                   f"{manifest} is already int8")
    assert not results.exists()


def test_int8_recipe_is_part_of_the_export_command_and_the_cell_key():
    from bench.cell import export_spec
    from bench.request import BenchRequest, Target
    from runtimes.base import RuntimeOptions

    def request(precision: str, **int8) -> BenchRequest:
        return BenchRequest("ov", Target(model="LeViT_128S", **int8), RuntimeOptions(precision=precision, batch=1))

    plain, tuned = request("int8"), request("int8", calibration="/data/calib", max_drop=0.02)
    assert export_spec(plain).command()[-4:] == ["--precision", "int8", "--runtime", "ov"]
    assert export_spec(tuned).command()[-8:] == ["--precision", "int8", "--runtime", "ov", "--calibration",
                                                 "/data/calib", "--max-drop", "0.02"]
    assert export_spec(tuned).shell_command().endswith("--runtime ov --calibration /data/calib --max-drop 0.02")
    assert export_spec(tuned).manifest_path == export_spec(plain).manifest_path  # one folder, told apart by key
    assert tuned.target.weights_key == "seeded+calibration=/data/calib+max_drop=0.02" != plain.target.weights_key
    assert BenchRequest.from_dict(tuned.to_dict()).target == tuned.target  # sweeps and cells pass it on


def test_a_manifest_of_an_fp32_export_gets_its_derived_model_made_as_python_m_export_manifest_makes_it(
        onnx_artifact):
    from bench.cell import export_spec
    from bench.request import BenchRequest, Target
    from runtimes.base import RuntimeOptions

    def request(runtime: str, precision: str, **int8) -> BenchRequest:
        return BenchRequest(runtime, Target(manifest=str(onnx_artifact.parent), **int8),
                            RuntimeOptions(precision=precision, batch=1))

    tuned = export_spec(request("ort", "int8", calibration="/data/calib"))
    assert tuned.command() == ["--manifest", str(onnx_artifact), "--precision", "int8", "--runtime", "ort",
                               "--calibration", "/data/calib"]
    assert tuned.shell_command() == f"python -m export {' '.join(tuned.command())}"
    assert tuned.manifest_path == onnx_artifact.parent.with_name(onnx_artifact.parent.name + "-int8-ort") / \
        onnx_artifact.name
    assert export_spec(request("ort", "fp16")).command()[-2:] == ["--precision", "fp16"]
    assert export_spec(request("ort", "fp32")) is None and export_spec(request("ov", "bf16")) is None
    keyed = request("ort", "int8", calibration="/data/calib").target.weights_key
    assert keyed == f"manifest:{onnx_artifact}+calibration=/data/calib"
