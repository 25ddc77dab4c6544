"""Every input checked before the timed loop, with one clear line; and the smaller points of issue 8
(manifests that are JSON but not manifests, bad images reported once, synset-named files, the note on
random weights, quiet Paddle, an export error that names bench's own flag)."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import ROOT, run_module
from PIL import Image
from test_drift_pass import PREPROCESS, image_folder, onnx_with_stored_reference  # noqa: F401 - fixtures
from test_report import record

from core.datasets import open_dataset
from core.listing import DataError, imagenet_synsets
from core.manifest import ManifestError, load_manifest
from core.preprocess import Preprocess

# A run that got as far as its timed loop would take 10 minutes: failing within the subprocess timeout
# proves the input was checked before it.
NEVER_ENDS = ["--warmup", "0", "--iterations", "1", "--duration", "600", "--max-duration", "600"]
SMALL = Preprocess.from_dict(PREPROCESS)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def jpeg(path, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


# --- drift inputs, before the timed loop ------------------------------------------------------------------

def test_a_malformed_labels_file_fails_before_timing(onnx_with_stored_reference, image_folder, tmp_path):  # noqa: F811
    labels = tmp_path / "labels.txt"
    labels.write_text("img0.jpg 0\nimg1.jpg one\n")
    results = tmp_path / "runs.jsonl"
    proc = run_module("bench", "--runtime", "null", "--manifest", str(onnx_with_stored_reference), *NEVER_ENDS,
                      "--data", str(image_folder), "--labels", str(labels), "--results", str(results),
                      cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc) == [f"error: drift data: {labels}:2: malformed line 'img1.jpg one'; "
                                 "expected '<relative/path> <label>'"]
    assert not results.exists()


def test_an_unwritable_reference_cache_fails_before_timing(onnx_artifact, tmp_path):
    """Images the export stored no logits for need Paddle's, cached under --artifacts: checked first."""
    folder = tmp_path / "model"
    shutil.copytree(onnx_artifact.parent, folder)
    manifest = json.loads((folder / "model.onnx.json").read_text())
    manifest["preprocess"] = PREPROCESS
    manifest["paddle_model"] = {"model_file": "inference.json", "params_file": "inference.pdiparams"}
    (folder / "model.onnx.json").write_text(json.dumps(manifest))
    images = tmp_path / "images"
    jpeg(images / "a.jpg")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the artifacts folder should be")
    results = tmp_path / "runs.jsonl"
    proc = run_module("bench", "--runtime", "null", "--manifest", str(folder), *NEVER_ENDS, "--data", str(images),
                      "--artifacts", str(blocker / "art"), "--results", str(results), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith(f"error: drift data: reference cache {blocker / 'art' / 'reference-cache'} is not "
                           "writable") and line.endswith("; pass --artifacts DIR")
    assert not results.exists()


def test_a_missing_sweep_drift_folder_stops_the_sweep_before_any_cell(onnx_artifact, tmp_path):
    from test_sweep import sweep, write_config

    config = write_config(tmp_path, [onnx_artifact], drift={"data": str(tmp_path / "nowhere")})
    proc = sweep(config)
    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: sweep.yaml: sweep.drift.data: {tmp_path / 'nowhere'} not found"]
    assert not (tmp_path / "runs.jsonl").exists()


def test_a_sweep_naming_a_missing_weights_file_or_a_non_manifest_stops_before_any_cell(onnx_artifact, tmp_path):
    import yaml
    from test_sweep import sweep, write_config

    listed = tmp_path / "list.json"
    listed.write_text("[]")
    config = write_config(tmp_path, [onnx_artifact, listed])
    proc = sweep(config)
    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: sweep.yaml: sweep.manifests[1]: {listed}: expected a JSON object, got list"]
    data = yaml.safe_load(config.read_text())
    data["sweep"]["models"] = ["MobileViT_XXS"]
    data["export"] = {"weights": str(tmp_path / "nope.pdparams")}
    config.write_text(yaml.safe_dump(data))
    proc = sweep(config)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith(f"error: sweep.yaml: export.weights: weights file {tmp_path / 'nope.pdparams'} does not "
                           "exist")
    assert not (tmp_path / "runs.jsonl").exists()


def test_checks_before_work_create_no_folders(tmp_path):
    """A folder is made by what writes into it: checking that it could be leaves nothing behind when the work
    then fails (an empty reference-cache/, results/ or artifacts/)."""
    from core.files import check_appendable, check_writable_dir, missing_folders

    check_writable_dir(tmp_path / "art" / "reference-cache")
    check_appendable(tmp_path / "results" / "runs.jsonl")
    assert list(tmp_path.iterdir()) == []
    assert missing_folders(tmp_path / "a" / "b") == [tmp_path / "a" / "b", tmp_path / "a"]
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    for check in (lambda: check_writable_dir(blocker / "art"), lambda: check_appendable(blocker / "r.jsonl")):
        with pytest.raises(NotADirectoryError):
            check()


def test_bench_export_errors_name_benchs_own_flag(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the artifacts folder should be")
    proc = run_module("bench", "--runtime", "null", "--model", "MobileViT_XXS", "--opset", "13",
                      "--artifacts", str(blocker / "art"), "--results", str(tmp_path / "r.jsonl"), cwd=tmp_path)
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert "is not writable" in line and line.endswith("pass --artifacts DIR") and "--out" not in line


# --- manifests and images --------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    (lambda m: [m], "expected a JSON object, got list"),
    (lambda m: {**m, "preprocess": "RGB"}, "preprocess must be a JSON object, got str"),
    (lambda m: {**m, "weights": [1]}, "weights must be a JSON object, got list"),
    (lambda m: {**m, "graph": {**m["graph"], "inputs": {"name": "x"}}}, "graph: inputs must be a JSON list"),
])
def test_a_manifest_of_the_wrong_shape_names_its_file(onnx_artifact, tmp_path, change, message):
    path = tmp_path / "model.onnx.json"
    path.write_text(json.dumps(change(json.loads(onnx_artifact.read_text()))))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_a_bad_image_is_reported_once_however_many_passes_read_it(tmp_path, caplog):
    jpeg(tmp_path / "good.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    dataset = open_dataset(tmp_path, preprocess=SMALL)
    with caplog.at_level(logging.WARNING, logger="core.datasets"):
        for _ in range(2):  # the runtime's pass and Paddle's reference pass
            assert [b.names for b in dataset.batches(4)] == [["good.jpg"]]
            assert [s["name"] for s in dataset.skipped] == ["bad.jpg"]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"skipping unreadable image {tmp_path / 'bad.jpg'}"]


def test_files_named_after_their_synset_are_labelled_with_imagenet_indices(tmp_path, caplog):
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and synsets["n01440764"] == 0 and synsets["n15075141"] == 999
    sample = tmp_path / "sample"
    for i, name in enumerate(["n01440764_tench.JPEG", "n15075141_toilet_tissue.JPEG", "n01443537_10007.JPEG"]):
        jpeg(sample / name, seed=i)
    dataset = open_dataset(sample, preprocess=SMALL)
    assert dataset.has_labels and dataset.describe()["label_source"] == "synset_file_names"
    assert {s.name: s.label for s in dataset.samples} == {
        "n01440764_tench.JPEG": 0, "n01443537_10007.JPEG": 1, "n15075141_toilet_tissue.JPEG": 999}

    jpeg(sample / "holiday.jpg")  # one file that is not named after a synset: no labels from names at all
    with caplog.at_level(logging.WARNING, logger="core.listing"):
        assert not open_dataset(sample, preprocess=SMALL).has_labels
    assert "3 of 4 images are named <wnid>_..., but not holiday.jpg" in caplog.text

    (sample / "holiday.jpg").unlink()
    jpeg(sample / "n99999999_unknown.JPEG")
    with pytest.raises(DataError, match="n99999999 is not one of the 1000 ImageNet-1k synsets"):
        open_dataset(sample, preprocess=SMALL)


def test_synset_folders_take_the_imagenet_index_whatever_folders_are_present(tmp_path):
    for i, synset in enumerate(["n15075141", "n01443537"]):
        jpeg(tmp_path / synset / f"{i}.JPEG", seed=i)
    dataset = open_dataset(tmp_path, preprocess=SMALL)
    assert dataset.describe()["label_source"] == "imagenet1k_synsets"
    assert sorted(s.label for s in dataset.samples) == [1, 999]  # not ranks 0 and 1 of this folder


# --- what is printed ---------------------------------------------------------------------------------------

def test_top1_of_random_weights_comes_with_a_note():
    from bench.table import format_drift

    def drift_of(trained, kind=None):
        r = record(agreement=1.0, top1=0.0, ref=0.0)
        r.drift.update(reference_source="export reference", data={"skipped": []}, mcnemar_p=1.0)
        r.model.weights["trained"] = trained
        if kind:
            r.model.weights["kind"] = kind
        return format_drift(r)

    assert "top-1 0.00% vs Paddle 0.00%" in drift_of(False)
    assert "(seeded weights, the default: an untrained network, so top-1 accuracy near 0 % is expected" \
        in drift_of(False)
    assert "(seeded-calibrated weights: an untrained network" in drift_of(False, "seeded-calibrated")
    assert "--weights official" in drift_of(False)
    assert "untrained" not in drift_of(True) and "untrained" not in drift_of(None)


@pytest.mark.slow
def test_paddle_runs_quietly_and_stops_cleanly_on_sigterm(tiny_artifact, tmp_path):
    quiet = run_module("bench", "--runtime", "paddle", "--manifest", str(tiny_artifact), "--duration", "0",
                       "--results", str(tmp_path / "r.jsonl"), cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "PIR pass" not in quiet.stderr + quiet.stdout and "ccache" not in quiet.stderr
    # Paddle installs a C++ SIGTERM handler that kills the process with a stack dump; ours must stay.
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--runtime", "paddle", "--manifest", str(tiny_artifact),
                             *NEVER_ENDS, "-v", "--results", str(tmp_path / "stopped.jsonl")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    # Wait for the adapter's "loading" log line: the probe before it has imported paddle (and its handlers).
    lines: list[str] = []
    loading = threading.Event()

    def read_stderr() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "paddle: loading" in line:
                loading.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert loading.wait(timeout=180), "".join(lines)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 128 + signal.SIGTERM and error_lines(subprocess.CompletedProcess(
        [], 0, "", err)) == ["error: terminated by SIGTERM"], err
    assert "FatalError" not in err and not (tmp_path / "stopped.jsonl").exists()

