"""The drift pass of ``python -m bench``: real runtimes, real Paddle reference, records and gates."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module
from PIL import Image

from bench.records import read_records

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--warmup", "1", "--iterations", "5", "--duration", "0"]
PREPROCESS = {"resize_short": 36, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
              "scale": 1 / 255, "channel_order": "RGB", "interpolation": "bilinear"}


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_module("bench", *args, cwd=cwd)


@pytest.fixture
def tiny_with_preprocess(tiny_artifact, tmp_path) -> Path:
    """The tiny model's export, copied, with preprocessing settings so it can read images."""
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_artifact.parent, folder)
    manifest = json.loads((folder / "model.onnx.json").read_text())
    manifest["preprocess"] = PREPROCESS
    (folder / "model.onnx.json").write_text(json.dumps(manifest))
    return folder / "model.onnx.json"


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Six labelled 48x40 JPEGs in PaddleClas list format, one of them corrupt."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    lines = []
    for i in range(6):
        name = f"img{i}.jpg"
        if i == 3:
            (folder / name).write_bytes(b"this is not a jpeg")
        else:
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / name)
        lines.append(f"{name} {i % 10}")
    (folder / "val_list.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def onnx_with_stored_reference(onnx_artifact, image_folder, tmp_path) -> Path:
    """Fast tier: the ONNX-only artifact with preprocessing and stored reference logits for image_folder
    (computed here with ORT, standing in for the export's Paddle logits), as an export would store them."""
    import onnxruntime as ort

    from core.datasets import open_dataset
    from core.logits import Logits
    from core.preprocess import Preprocess

    folder = tmp_path / "onnx"
    shutil.copytree(onnx_artifact.parent, folder)
    listed = (image_folder / "val_list.txt").read_text().splitlines()
    (image_folder / "val_list.txt").write_text("\n".join(line for line in listed if "img3" not in line) + "\n")
    dataset = open_dataset(image_folder, preprocess=Preprocess.from_dict(PREPROCESS))
    images, labels, names = next(iter(dataset.batches(len(dataset))))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    Logits(session.run(None, {"x": images})[0], list(names), labels).save(folder / "reference.npz")
    manifest = json.loads((folder / "model.onnx.json").read_text())
    manifest["preprocess"] = PREPROCESS
    manifest["reference"] = {"images": {"file": "reference.npz", "folder": str(image_folder), "count": 5}}
    (folder / "model.onnx.json").write_text(json.dumps(manifest))
    return folder / "model.onnx.json"


def test_drift_against_the_stored_reference_needs_no_paddle(onnx_with_stored_reference, tmp_path):
    results = tmp_path / "runs.jsonl"
    proc = bench("--runtime", "ov", "--manifest", str(onnx_with_stored_reference), "--batch", "2", *FAST,
                 "--drift", "--results", str(results), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "top-1 agreement 100.00%" in proc.stdout and "(export reference" in proc.stdout
    (loaded,) = read_records(results).records
    drift = loaded.record.drift
    assert drift["n"] == 5 and drift["max_abs_diff"] < 1e-4 and drift["reference_source"].startswith("export")
    assert drift["data"]["skipped"] == []


def test_unreadable_images_are_named_counted_and_gated(onnx_with_stored_reference, image_folder, tmp_path):
    (image_folder / "img1.jpg").write_bytes((image_folder / "img1.jpg").read_bytes()[:200])  # truncated
    results = tmp_path / "runs.jsonl"
    proc = bench("--runtime", "ort", "--manifest", str(onnx_with_stored_reference), "--batch", "2", *FAST,
                 "--drift", "--results", str(results), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # the pass goes on
    assert "skipped 1 unreadable image(s): img1.jpg" in proc.stdout
    (loaded,) = read_records(results).records
    drift, gates = loaded.record.drift, loaded.record.gates
    assert drift["unreadable_images"] == 1 and drift["data"]["unreadable_images"] == 1 and drift["n"] == 4
    assert [s["name"] for s in drift["data"]["skipped"]] == ["img1.jpg"]
    assert "imdecode failed" in drift["data"]["skipped"][0]["reason"]
    (unreadable,) = [c for c in gates["checks"] if c["metric"] == "unreadable_images"]
    assert unreadable == {"metric": "unreadable_images", "threshold": 0, "value": 1, "passed": False}


def test_a_set_with_no_readable_image_is_refused_before_timing(onnx_with_stored_reference, image_folder,
                                                                tmp_path):
    for image in image_folder.glob("*.jpg"):
        image.write_bytes(b"not an image")
    results = tmp_path / "runs.jsonl"
    proc = bench("--runtime", "ort", "--manifest", str(onnx_with_stored_reference), *FAST, "--drift",
                 "--results", str(results), cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "none of the 5 images can be read" in errors[0], proc.stderr
    assert not results.exists()  # refused before the runtime loaded


def test_a_missing_data_folder_fails_before_timing(onnx_with_stored_reference, tmp_path):
    results = tmp_path / "runs.jsonl"
    proc = bench("--runtime", "ort", "--manifest", str(onnx_with_stored_reference), *FAST,
                 "--data", str(tmp_path / "nowhere"), "--results", str(results), cwd=tmp_path)
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: drift data: {tmp_path / 'nowhere'}: data folder not found"]
    assert not results.exists()


@pytest.mark.slow
def test_drift_on_images_against_a_paddle_reference(tiny_with_preprocess, image_folder, tmp_path):
    results = tmp_path / "runs.jsonl"
    proc = bench(
        "--runtime",
        "ort",
        "--manifest",
        str(tiny_with_preprocess),
        "--batch",
        "4",
        *FAST,
        "--data",
        str(image_folder),
        "--results",
        str(results),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "top-1 agreement 100.00%" in proc.stdout and "skipped 1 unreadable image(s): img3.jpg" in proc.stdout
    (loaded,) = read_records(results).records
    record = loaded.record
    drift = record.drift
    assert drift["n"] == 5 and drift["agreement"] == 1.0 and drift["flipped"] == 0
    assert drift["max_abs_diff"] < 1e-5 and drift["finite"]
    assert drift["labelled"] and drift["reference_source"] == "paddle inference fp32"  # computed, not cached
    assert [s["name"] for s in drift["data"]["skipped"]] == ["img3.jpg"]
    failed = [c["metric"] for c in record.gates["checks"] if c["passed"] is False]
    assert failed == ["unreadable_images"] and record.gates["precision"] == "fp32"
    assert record.explain is None  # nothing in the logits to trace
    assert record.timing.latency_ms["count"] >= 5  # timing ran first, in its own pass
    proc = bench("--runtime", "ort", "--manifest", str(tiny_with_preprocess), *FAST, "--data", str(image_folder),
                 "--results", str(results), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_records(results).records[1].record.drift["reference_source"] == "paddle inference fp32 (cached)"


@pytest.mark.slow
def test_enforced_gates_fail_with_exit_1(tiny_artifact, tmp_path):
    (tmp_path / "bench.yaml").write_text("gates:\n  fp32: {agreement: 1.0, max_abs_diff: 0.0}\n")
    results = tmp_path / "runs.jsonl"
    proc = bench(
        "--runtime",
        "ov",
        "--manifest",
        str(tiny_artifact),
        "--batch",
        "2",
        *FAST,
        "--drift",
        "--data",
        "synthetic",
        "--enforce-gates",
        "--results",
        str(results),
        cwd=tmp_path,
    )
    (loaded,) = read_records(results).records
    record = loaded.record
    assert record.drift["max_abs_diff"] > 0  # OpenVINO and Paddle round differently
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: drift gates failed for fp32: max_abs_diff")
    assert record.gates["passed"] is False and record.status == "ok"


def test_images_without_preprocessing_settings_are_refused(onnx_artifact, image_folder, tmp_path):
    results = tmp_path / "runs.jsonl"
    proc = bench(
        "--runtime",
        "ort",
        "--manifest",
        str(onnx_artifact),
        *FAST,
        "--data",
        str(image_folder),
        "--results",
        str(results),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        "error: drift data: Tiny: its manifest records no image preprocessing: pass --preprocess CONFIG.yaml (its "
        "PaddleClas config), or use --data synthetic"
    ]
    assert not results.exists()  # refused before the runtime loaded: nothing was measured


@pytest.mark.slow
def test_a_drift_pass_that_fails_leaves_no_empty_cache_folder(tiny_with_preprocess, image_folder, tmp_path):
    """The reference cache folder is made when a reference is written, not when it is checked for: a pass whose
    Paddle reference cannot be computed (a broken params file) leaves no empty artifacts/reference-cache/."""
    (tiny_with_preprocess.parent / "inference.pdiparams").write_bytes(b"not paddle parameters")
    art = tmp_path / "art"
    proc = bench("--runtime", "ort", "--manifest", str(tiny_with_preprocess), *FAST, "--data", str(image_folder),
                 "--artifacts", str(art), "--results", str(tmp_path / "runs.jsonl"), cwd=tmp_path)
    assert proc.returncode == 1 and "Paddle cannot load" in proc.stderr, proc.stderr
    assert not art.exists()


@pytest.mark.slow
def test_gates_judge_the_precision_that_ran(tiny_artifact, tmp_path):
    results = tmp_path / "runs.jsonl"
    proc = bench(
        "--runtime",
        "ov",
        "--manifest",
        str(tiny_artifact),
        "--precision",
        "bf16",
        *FAST,
        "--drift",
        "--data",
        "synthetic",
        "--results",
        str(results),
        "--artifacts",
        str(tmp_path / "art"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (loaded,) = read_records(results).records
    record = loaded.record
    ran = record.runtime.effective["precision"]  # fp32 on a CPU without bf16, bf16 on one with it
    assert record.gates["precision"] == ran
    assert list((tmp_path / "art" / "reference-cache").glob("*.npz"))  # the cache lives under --artifacts


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--drift", "--labels", "list.txt"], "--labels needs --data FOLDER"),
        (["--device", "gpu:x"], "device index must be an integer"),
        (["--preprocess", "infer", "--data", "."], "--preprocess infer names a built-in PaddleClas pipeline of "
                                                   "LeViT or MobileViT, and its manifest records no preprocessing"),
        (["--preprocess", "train"], "PaddleClas config"),  # neither a pipeline nor a config file: "... not found"
    ],
)
def test_bad_drift_and_device_flags_are_usage_errors(onnx_artifact, tmp_path, args, fragment):
    proc = bench(
        "--runtime",
        "ov",
        "--manifest",
        str(onnx_artifact),
        *args,
        "--results",
        str(tmp_path / "runs.jsonl"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
