"""Reduced-precision exports (``export.quantize``): calibration sets, refusals, and real int8/fp16 builds.

Fast tier: the calibration set's checks and the CLI's refusals (no quantizer imported). Full tier: NNCF and ONNX
Runtime quantize a tiny ONNX model (32x32, 10 classes) for real, from a seeded ``.npy`` calibration set; the
derived manifest is checked field by field, and the int8 models agree with the fp32 logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_onnx, run_module, write_manifest

from core.cpu import cpu_flags, describe, float_precision_run, missing_instructions, native
from core.manifest import MANIFEST_NAME, load_manifest
from export.quantize import PrecisionUsageError, QuantizeError, int8_target, variant_for_run, variant_of
from export.quantize.calibration import (
    DEFAULT_CALIBRATION,
    MIN_IMAGES,
    CalibrationError,
    check_overlap,
    open_calibration,
    select,
    split_for_validation,
)

ROOT = Path(__file__).resolve().parents[1]
EVAL_IMAGES = ROOT / "data" / "imagenet-val-44"
CPUINFO = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n"


# --- fast tier -----------------------------------------------------------------------------------------------

def test_bundled_calibration_set_is_apart_from_the_evaluation_images():
    calibration = open_calibration(None)
    assert calibration.source == DEFAULT_CALIBRATION.resolve() and calibration.size == 125
    check_overlap(calibration, EVAL_IMAGES, allow=False)  # disjoint by content: no refusal
    described = calibration.describe()
    assert described["overlaps_evaluation"] == {"count": 0, "names": [], "allowed": False}
    assert described["size"] == 125 and len(described["files_sha256"]) == 64


def test_calibration_size_spreads_over_the_set_and_changes_the_identity():
    assert select(10, 5) == [0, 2, 4, 6, 8] and select(4, None) == [0, 1, 2, 3]
    full, part = open_calibration(None), open_calibration(None, 40)
    assert part.size == 40 and part.describe()["selection"] == "40 of 125, evenly spaced over the sorted list"
    assert part.files_sha256 != full.files_sha256
    kept, held = split_for_validation(np.arange(10))
    assert held.tolist() == [4, 9] and kept.tolist() == [0, 1, 2, 3, 5, 6, 7, 8]


def test_missing_empty_and_too_small_calibration_sets_are_refused(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        open_calibration(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="holds no images"):
        open_calibration(tmp_path / "empty")
    small = tmp_path / "small"
    small.mkdir()
    for path in sorted((DEFAULT_CALIBRATION / "images").iterdir())[:3]:
        shutil.copy(path, small / path.name)
    with pytest.raises(CalibrationError, match=f"has 3 image\\(s\\); {MIN_IMAGES} needed"):
        open_calibration(small)
    with pytest.raises(CalibrationError, match=f"at least {MIN_IMAGES}"):
        open_calibration(None, 4)


def test_calibrating_on_evaluation_images_is_refused_unless_asked(tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(DEFAULT_CALIBRATION / "images", mixed)
    evaluated = sorted((EVAL_IMAGES / "images").iterdir())[0]
    shutil.copy(evaluated, mixed / "zz_evaluated.JPEG")
    calibration = open_calibration(mixed)
    with pytest.raises(CalibrationError, match="1 calibration image\\(s\\) .* are evaluation images"):
        check_overlap(calibration, EVAL_IMAGES, allow=False)
    check_overlap(calibration, EVAL_IMAGES, allow=True)
    assert calibration.describe()["overlaps_evaluation"] == {"count": 1, "names": ["zz_evaluated.JPEG"],
                                                             "allowed": True}


def test_variants_and_what_a_benchmark_runs():
    assert variant_of("int8", "ov") == "int8-ov" and variant_of("int8", "ort") == "int8-ort"
    assert variant_of("fp16", None) == "fp16" and variant_of("int8", "ort-cuda") == "int8-ort-cuda"
    assert int8_target("ort", "cuda") == "ort-cuda" and int8_target("ort", "cpu") == "ort"
    assert int8_target("ov", None) == "ov"
    with pytest.raises(PrecisionUsageError, match="not 'paddle'"):
        variant_of("int8", "paddle")
    with pytest.raises(PrecisionUsageError, match="fp16 is a runtime hint"):
        variant_of("fp16", "ov")
    assert variant_for_run("ov", "int8") == "int8-ov" and variant_for_run("ort", "fp16") == "fp16"
    assert variant_for_run("ov", "bf16") is None and variant_for_run("trt", "int8") is None


def test_cpu_flags_and_missing_instructions():
    flags = cpu_flags(CPUINFO)
    assert flags["avx512_vnni"] and flags["avx2"] and not flags["amx_bf16"]
    missing = missing_instructions(flags)
    assert missing["int8"] == [] and missing["bf16"] == ["avx512_bf16", "amx_bf16"]
    assert "int8 native" in describe(flags) and "no bf16 instructions (avx512_bf16/amx_bf16)" in describe(flags)


# The three kinds of x86 CPU the suite must pass on, as /proc/cpuinfo lists them.
CPU_KINDS = {
    "avx2 only": "avx2 fma",
    "bf16 without fp16 (Zen 5)": "avx2 avx512f avx512_vnni avx512_bf16",
    "AMX with fp16 (Sapphire Rapids)": "avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16",
}


@pytest.mark.parametrize(("kind", "bf16_runs", "fp16_runs"), [
    ("avx2 only", "fp32", "fp32"),
    ("bf16 without fp16 (Zen 5)", "bf16", "bf16"),
    ("AMX with fp16 (Sapphire Rapids)", "bf16", "fp16"),
])
def test_each_cpu_kind_runs_a_float_hint_as_its_nearest_native_format(kind, bf16_runs, fp16_runs):
    flags = cpu_flags(f"processor\t: 0\nflags\t\t: fpu {CPU_KINDS[kind]}\n")
    assert float_precision_run("bf16", flags) == bf16_runs
    assert float_precision_run("fp16", flags) == fp16_runs
    assert float_precision_run("fp32", flags) == "fp32" and float_precision_run("int8", flags) == "int8"
    assert float_precision_run("fp16", {**flags, "amx_fp16": True}) == "fp16"  # AMX-FP16 alone suffices


def test_export_cli_refuses_bad_calibration_before_exporting(tmp_path):
    out = tmp_path / "artifacts"
    proc = run_module("export", "--model", "LeViT_128S", "--opset", "17", "--precision", "int8", "--runtime", "ov",
                      "--calibration", str(tmp_path / "missing"), "--out", str(out), cwd=tmp_path, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "calibration set" in errors[0], proc.stderr
    assert not out.exists() or not any(out.iterdir())


# --- full tier: real quantizers on a tiny model ----------------------------------------------------------------

def tiny_fp32_export(root: Path) -> Path:
    """A tiny fp32 export laid out like the zoo's, with fp32 reference logits for its seeded inputs."""
    from core.logits import Logits
    from export.build import REFERENCE_SEEDED, seeded_inputs
    from export.parity import ort_logits

    folder = root / "Tiny" / "seeded" / "opset13-bdyn"
    folder.mkdir(parents=True)
    make_tiny_onnx(folder / "model.onnx")
    seeded = seeded_inputs((3, 32, 32))
    Logits(ort_logits(folder / "model.onnx", seeded, None), [f"seeded_{i}" for i in range(len(seeded))]).save(
        folder / REFERENCE_SEEDED)
    return write_manifest(folder, reference={"producer": "onnxruntime fp32 (test)",
                                             "seeded": {"file": REFERENCE_SEEDED, "count": len(seeded)}},
                          optimization={"level": "portable", "passes": []})


@pytest.fixture(scope="module")
def calibration_npy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "calibration.npy"
    np.save(path, np.random.default_rng(1).standard_normal((MIN_IMAGES, 3, 32, 32)).astype(np.float32))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["ov", "ort", "ort-cuda"])
def test_int8_build_describes_itself_and_agrees_with_fp32(tmp_path, calibration_npy, runtime):
    import onnx

    from export.quantize.build import DerivedRequest, derive

    fp32_path = tiny_fp32_export(tmp_path)
    request = DerivedRequest("int8", runtime, str(calibration_npy))
    result = derive(fp32_path, request)
    assert not result.cache_hit and result.manifest_path.parent.name == f"opset13-bdyn-int8-{runtime}"
    manifest = load_manifest(result.manifest_path)
    fp32 = load_manifest(fp32_path)
    assert manifest.precision == "int8" and manifest.source["sha256"] == fp32.graph.sha256
    # made from that graph: its passes are the int8 model's too (records and layer times say "portable")
    assert manifest.optimization == fp32.optimization and manifest.optimization["level"] == "portable"
    assert manifest.graph.format == ("openvino-ir" if runtime == "ov" else "onnx")
    described = manifest.reduced_precision
    assert described["method"] == ("nncf.quantize" if runtime == "ov" else
                                   "onnxruntime.quantization.quantize_static (QDQ)")
    assert described["parameters"]["keep_head_float"] and described["parameters"]["head"]
    assert described["calibration"]["size"] == MIN_IMAGES and described["calibration"]["kind"] == "npy"
    assert len(described["calibration"]["files_sha256"]) == 64 and described["seconds"] > 0
    assert described["versions"]["onnxruntime" if runtime == "ort" else "nncf"]
    if runtime == "ov":
        assert described["census"] and described["runtime_precisions"]["matmul_conv_int8"] >= 1
        assert "1" in described["compile_checks"] and described["files"]["weights"]["file"] == "model.bin"
    else:
        census = described["census"]
        assert census["quantize_linear"] > 0 and sum(census["ort_cpu_int8_kernels"].values()) > 0
        assert described["parameters"]["reduce_range"] in (True, False)
        # ORT's CUDA provider has no int32 DequantizeLinear: the CUDA model keeps its biases float
        assert described["parameters"]["quantize_bias"] is (runtime == "ort")
        model = onnx.load(str(result.manifest_path.parent / manifest.graph.file))
        int32 = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT32]
        assert bool(int32) is (runtime == "ort"), int32
        if runtime == "ort-cuda":
            assert not described["parameters"]["reduce_range"]
    seeded = described["accuracy"]["seeded"]
    assert seeded["top1_agreement"] == 1.0 and seeded["cosine_min"] > 0.99
    assert derive(fp32_path, request).cache_hit  # same request, same calibration set: reused


@pytest.mark.slow
def test_fp16_onnx_keeps_fp32_io_and_says_it_is_for_gpus(tmp_path):
    import onnx

    from export.quantize.build import DerivedRequest, derive

    result = derive(tiny_fp32_export(tmp_path), DerivedRequest("fp16"))
    manifest = load_manifest(result.manifest_path)
    assert manifest.precision == "fp16" and "CUDA/TensorRT" in manifest.reduced_precision["cpu_note"]
    model = onnx.load(str(result.manifest_path.parent / manifest.graph.file))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert manifest.reduced_precision["accuracy"]["seeded"]["max_abs_diff"] < 1e-2


@pytest.mark.slow
def test_quantizer_failure_leaves_nothing_in_artifacts(tmp_path, calibration_npy):
    import onnx
    from onnx import helper

    from export.quantize.build import DerivedRequest, derive

    fp32_path = tiny_fp32_export(tmp_path)
    model = onnx.load(str(fp32_path.parent / "model.onnx"))  # an op no runtime knows: the quantizer fails
    model.graph.node.append(helper.make_node("NoSuchOp", ["logits"], ["odd"], domain="no.such", name="odd"))
    model.opset_import.append(helper.make_opsetid("no.such", 1))
    onnx.save(model, str(fp32_path.parent / "model.onnx"))
    before = sorted(p.name for p in fp32_path.parent.parent.iterdir())
    with pytest.raises(QuantizeError, match="int8 graph form failed: Fail: .*NoSuchOp"):
        derive(fp32_path, DerivedRequest("int8", "ort", str(calibration_npy)))
    assert sorted(p.name for p in fp32_path.parent.parent.iterdir()) == before


@pytest.mark.slow
def test_bench_runs_the_int8_models_and_records_how_they_were_made(tmp_path, calibration_npy):
    from export.quantize.build import DerivedRequest, derive

    fp32_path = tiny_fp32_export(tmp_path)
    for runtime in ("ov", "ort"):
        manifest_path = derive(fp32_path, DerivedRequest("int8", runtime, str(calibration_npy))).manifest_path
        results = tmp_path / f"runs-{runtime}.jsonl"
        proc = run_module("bench", "--runtime", runtime, "--precision", "int8", "--manifest", str(manifest_path),
                          "--warmup", "1", "--iterations", "5", "--duration", "0.05", "--results", str(results),
                          "--profile", "5", cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(results.read_text().splitlines()[-1])
        # the layer times of the int8 model itself (an OpenVINO IR for ov), as the cell ran it
        table = (tmp_path / f"runs-{runtime}-{record['record_id']}-profile.md").read_text()
        assert f"{runtime} CPU, int8, batch 1" in table and table.count("\n| ") >= 3, table
        assert record["status"] == "ok" and record["runtime"]["effective"]["precision"] == "int8"
        made = record["model"]["reduced_precision"]
        assert made["calibration"]["size"] == MIN_IMAGES and made["calibrated_on_evaluation_images"] == 0
        said = any("no int8 dot-product instructions" in n or "no int8 instructions" in n
                   for n in record["runtime"]["notes"])
        assert said == (not native("int8"))  # the record says when the CPU cannot make int8 fast
        # an int8 model asked as fp32 would be a silent change: refused
        proc = run_module("bench", "--runtime", runtime, "--precision", "fp32", "--manifest", str(manifest_path),
                          "--results", str(results), cwd=tmp_path, timeout=300)
        assert proc.returncode != 0 and "int8" in proc.stderr


def test_manifest_name_of_a_derived_folder_is_the_exports():
    from export.layout import derived_dir

    assert derived_dir(Path("a/opset17-bdyn"), "int8-ov") == Path("a/opset17-bdyn-int8-ov")
    assert MANIFEST_NAME.endswith(".json")


@pytest.mark.slow
def test_precision_speedup_script_writes_its_table(tmp_path, calibration_npy):
    import subprocess
    import sys

    out = tmp_path / "results" / "speedup.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "precision_speedup.py"), "--manifest",
                           str(tiny_fp32_export(tmp_path)), "--calibration", str(calibration_npy), "--rounds", "1",
                           "--seconds", "0.02", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "CPU flags:" in text and "int8" in text
    rows = [line for line in text.splitlines() if line.startswith(("| ov |", "| ort |"))]
    assert len(rows) == 10  # ov fp32/bf16/int8 and ort fp32/int8 at batches 1 and 8
    assert all(line.split("|")[3].strip() in ("fp32", "bf16", "int8") for line in rows)  # what ran, read back
    # ONNX Runtime's int8 profile at the largest batch: its float islands, judged where the CPU lacks VNNI
    (islands,) = [line for line in text.splitlines() if line.startswith("ort int8 profile, batch 8")]
    assert "float islands" in islands and "QuantizeLinear" in islands


def test_max_drop_and_fp16_flags_are_checked_before_any_build():
    from export.quantize.build import DerivedRequest, check_derived_request

    with pytest.raises(PrecisionUsageError, match="add --runtime ov"):
        check_derived_request(DerivedRequest("int8", "ort", max_drop=0.01))
    with pytest.raises(PrecisionUsageError, match="in \\[0, 1\\)"):
        check_derived_request(DerivedRequest("int8", "ov", max_drop=5))
    with pytest.raises(PrecisionUsageError, match="apply to --precision int8 only"):
        check_derived_request(DerivedRequest("fp16", calibration="somewhere"))


@pytest.mark.slow
def test_max_drop_quantizes_with_accuracy_control_and_records_it(tmp_path, calibration_npy):
    from export.quantize.build import DerivedRequest, derive

    result = derive(tiny_fp32_export(tmp_path), DerivedRequest("int8", "ov", str(calibration_npy), max_drop=0.01))
    described = load_manifest(result.manifest_path).reduced_precision
    assert described["method"] == "nncf.quantize_with_accuracy_control"
    control = described["accuracy_control"]
    assert control["max_drop"] == 0.01 and control["validation"]["images"] == MIN_IMAGES // 5
    assert isinstance(control["layers_kept_float"], list) and any("Accuracy drop" in m for m in control["log"])
    assert described["calibration"]["size"] == MIN_IMAGES  # the whole set identifies it; 4 in 5 calibrate


def test_every_record_of_a_model_calibrated_on_evaluation_images_says_so(tmp_path, caplog):
    from bench.cell import reduced_precision_summary

    make_tiny_onnx(tmp_path / "model.onnx")
    calibration = {"folder": "data/imagenet-val-44", "size": 44, "files_sha256": "f" * 64,
                   "overlaps_evaluation": {"count": 44, "names": [], "allowed": True}}
    manifest = load_manifest(write_manifest(
        tmp_path, precision="int8", source={"sha256": "a" * 64},
        reduced_precision={"method": "nncf.quantize", "parameters": {"recipe": "transformer"},
                           "calibration": calibration}))
    summary = reduced_precision_summary(manifest)
    assert summary["calibrated_on_evaluation_images"] == 44 and summary["recipe"] == "transformer"
    assert summary["calibration"] == {"folder": "data/imagenet-val-44", "size": 44, "files_sha256": "f" * 64}
    assert summary["source_sha256"] == "a" * 64
    assert "calibrated on 44 evaluation image(s)" in caplog.text


@pytest.mark.slow
def test_bench_runs_an_int8_model_made_with_its_own_calibration_recipe(tmp_path):
    """An int8 model exported with --calibration-size runs under bench given the same flags, and is not
    rebuilt with the default recipe; without them bench names the flags instead of replacing the model."""
    art, results = tmp_path / "art", tmp_path / "runs.jsonl"
    target = ["--model", "LeViT_128S", "--opset", "17"]
    proc = run_module("export", *target, "--out", str(art), "--precision", "int8", "--runtime", "ort",
                      "--calibration-size", str(MIN_IMAGES), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    model = art / "LeViT_128S" / "seeded" / "opset17-bdyn-int8-ort" / "model.onnx"
    made = model.stat().st_mtime_ns
    run = ["bench", "--runtime", "ort", *target, "--precision", "int8", "--artifacts", str(art), "--no-export",
           "--warmup", "1", "--iterations", "3", "--duration", "0.05", "--results", str(results)]
    proc = run_module(*run, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1 and "needs the same flags here" in proc.stderr, proc.stderr
    proc = run_module(*run, "--calibration-size", str(MIN_IMAGES), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["status"] == "ok" and record["model"]["reduced_precision"]["calibration"]["size"] == MIN_IMAGES
    assert model.stat().st_mtime_ns == made  # measured as made, not rebuilt


@pytest.mark.slow
def test_an_explain_fix_trial_with_nothing_kept_float_remakes_the_ov_candidate(tmp_path, calibration_npy):
    """explain's re-quantisation follows the recorded parameters (calibration batch, bias correction, fp32
    constants), so a trial differs from the int8 model it explains only in the layers it keeps in float, also
    when the trial is made at a static batch (before: statistics gathered in batches of 8, outputs off by 5e-3)."""
    import openvino as ov

    from bench.explain.fixes import nncf_int8
    from export.quantize.build import DerivedRequest, derive

    fp32_path = tiny_fp32_export(tmp_path)
    candidate = derive(fp32_path, DerivedRequest("int8", "ov", str(calibration_npy))).manifest_path
    parameters = load_manifest(candidate).reduced_precision["parameters"]
    trial = nncf_int8(fp32_path.parent / "model.onnx", np.load(calibration_npy), tmp_path / "trial" / "model.xml",
                      batch=8, parameters=parameters)
    x = np.random.default_rng(3).standard_normal((8, 3, 32, 32)).astype(np.float32)
    core = ov.Core()
    outputs = [core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
               for xml in (candidate.parent / "model.xml", trial)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
