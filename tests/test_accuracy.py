"""``python -m bench accuracy``: per-image results, merged statistics, the command on real files, bad input."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_onnx, run_module, write_manifest

from bench.accuracy.per_image import ImageResults, merge, top_classes
from bench.accuracy.statistics import accuracy_statistics
from core.image_stream import CHUNK, preprocessed
from core.metrics import wilson_interval
from core.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT / "data" / "imagenet-val-44" / "images"
SMALL = Preprocess(resize_short=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _results(labels, top1, names=None) -> ImageResults:
    labels = np.asarray(labels, np.int64)
    top = np.stack([np.asarray(top1), *[np.full(len(labels), 900 + i) for i in range(4)]], axis=1).astype(np.int32)
    return ImageResults(names or [f"img{i}" for i in range(len(labels))], labels, top, np.ones(len(labels), bool))


def test_top_classes_are_ordered_and_nonfinite_rows_have_none():
    logits = np.array([[0.1, 3.0, 2.0, -1.0, 5.0, 0.0, 4.0], [np.nan, 1, 2, 3, 4, 5, 6]], np.float32)
    top, finite = top_classes(logits)
    assert top[0].tolist() == [4, 6, 1, 2, 0] and top[1].tolist() == [-1] * 5
    assert finite.tolist() == [True, False]


def test_statistics_with_intervals_and_the_published_figure():
    results = _results([1, 2, 3, 4, 5, 6, 7, 8, 9, 0], [1, 2, 3, 4, 5, 6, 7, 0, 0, 1])
    results.top[8, 3] = 9  # top-5 hit only
    stats = accuracy_statistics(results, {"top1": 0.76, "top5": 0.93})
    assert stats["n"] == 10 and stats["top1"] == 0.7 and stats["top5"] == 0.8
    assert stats["top1_ci"] == list(wilson_interval(7, 10)) and stats["interval"] == "wilson_score"
    assert stats["top1_minus_published"] == pytest.approx(-0.06) and stats["published_top1_in_ci"] is True
    assert accuracy_statistics(results)["published_top1"] is None


def test_shards_merge_into_the_statistics_of_the_whole():
    """The seam a cluster uses: per-image results of disjoint shards, merged, then one statistics call."""
    labels, top1 = np.arange(12) % 5, (np.arange(12) * 7) % 5
    whole = accuracy_statistics(_results(labels, top1))
    shards = [_results(labels[i::3], top1[i::3], [f"img{j}" for j in range(12)][i::3]) for i in range(3)]
    assert accuracy_statistics(merge(shards)) == whole
    with pytest.raises(ValueError, match="measured twice"):
        merge([shards[0], shards[0]])


def test_the_stream_keeps_a_bounded_number_of_images_in_flight():
    taken = []

    def paths():
        for i in range(40):
            taken.append(i)
            yield str(VAL / "ILSVRC2012_val_00000001.JPEG")

    stream = preprocessed(SMALL, paths(), workers=2, window=8)
    first = next(stream)
    # two tasks of CHUNK images in flight, and the next one asked for: not the whole set, memory stays flat
    assert first.array.shape == (3, 32, 32) and len(taken) <= 3 * CHUNK < 40
    assert sum(1 for _ in stream) == 39
    assert len(taken) == 40



def test_an_interrupt_while_the_pool_starts_leaves_the_stream_as_that_interrupt(monkeypatch):
    """SIGTERM or Ctrl-C can land while submit() waits for the pool's manager thread to start (seen once in CI):
    the interrupt must leave the stream, not "cannot join thread before it is started", and no worker lives on."""
    import threading
    from concurrent.futures import process

    class InterruptedStart(process._ExecutorManagerThread):
        def start(self):
            started = self._started
            set_started = started.set

            def late_set():  # the thread is seen to start only after the interrupt has unwound the stream
                threading.Timer(0.5, set_started).start()

            def interrupted_wait(timeout=None):
                del started.wait  # the real wait again, for whoever waits next
                raise KeyboardInterrupt

            started.set, started.wait = late_set, interrupted_wait
            super().start()

    monkeypatch.setattr(process, "_ExecutorManagerThread", InterruptedStart)
    paths = [str(VAL / "ILSVRC2012_val_00000001.JPEG")] * 8
    with pytest.raises(KeyboardInterrupt):
        list(preprocessed(SMALL, paths, workers=2))
    assert not multiprocessing.active_children()


# --- the command ------------------------------------------------------------------------------------------

@pytest.fixture
def labelled_tiny(tmp_path) -> tuple[Path, Path]:
    """(manifest of a 10-class ONNX model with preprocessing, a folder of 6 real images in list format)."""
    model = tmp_path / "model"
    model.mkdir()
    make_tiny_onnx(model / "model.onnx")
    manifest = write_manifest(model, preprocess=SMALL)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    lines = []
    for i, source in enumerate(sorted(VAL.glob("*.JPEG"))[:6]):
        shutil.copy(source, data / "images" / source.name)
        lines.append(f"images/{source.name} {i % 10}")
    (data / "val_list.txt").write_text("\n".join(lines) + "\n")
    return manifest, data


def accuracy(*args: str, cwd: Path):
    return run_module("bench", "accuracy", *args, cwd=cwd)


def test_accuracy_on_a_labelled_folder(labelled_tiny, tmp_path):
    manifest, data = labelled_tiny
    broken = sorted((data / "images").iterdir())[2]
    broken.write_bytes(broken.read_bytes()[:300])  # a truncated JPEG: named, counted, the pass goes on
    results = tmp_path / "acc.jsonl"
    proc = accuracy("--runtime", "ort", "--manifest", str(manifest), "--data", str(data), "--batch", "4",
                    "--workers", "2", "--results", str(results), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "top-1" in proc.stdout and "95% CI" in proc.stdout and f"left out: images/{broken.name}" in proc.stdout
    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    acc = record["accuracy"]
    assert record["kind"] == "accuracy" and acc["n"] == 5 and acc["unreadable_images"] == 1
    assert acc["unreadable"][0]["name"] == f"images/{broken.name}" and acc["published_top1"] is None
    assert 0 <= acc["top1"] <= acc["top5"] <= 1 and acc["top1_ci"][0] <= acc["top1"] <= acc["top1_ci"][1]
    assert record["preprocess"]["resize_short"] == 36 and record["data"]["count"] == 6
    assert record["runtime"]["name"] == "ort" and record["batch"] == 4


def test_the_synset_folder_layout_takes_imagenet_indices(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    make_tiny_onnx(model / "model.onnx", classes=1000)
    manifest = write_manifest(model, classes=1000, preprocess=SMALL)
    data = tmp_path / "val"
    for wnid, source in (("n01440764", "ILSVRC2012_val_00000001.JPEG"), ("n15075141", "ILSVRC2012_val_00000002.JPEG")):
        (data / wnid).mkdir(parents=True)
        shutil.copy(VAL / source, data / wnid / source)
    results = tmp_path / "acc.jsonl"
    proc = accuracy("--runtime", "ort", "--manifest", str(manifest), "--data", str(data), "--quiet",
                    "--results", str(results), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(results.read_text())
    assert record["data"]["label_source"] == "imagenet1k_synsets" and record["accuracy"]["n"] == 2


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: (d / "val_list.txt").write_text("images/ILSVRC2012_val_00000001.JPEG 12\n"),
     "val_list.txt:1: label 12 outside 0..9"),
    (lambda d: (d / "val_list.txt").write_text("images/missing.JPEG 1\n"),
     "listed image images/missing.JPEG not found"),
    (lambda d: [p.write_bytes(b"junk") for p in (d / "images").iterdir()], "none of the 6 images can be read"),
    (lambda d: (d / "val_list.txt").unlink(), "neither ImageNet synsets nor class indices"),
])
def test_bad_data_is_refused_before_anything_runs(labelled_tiny, tmp_path, edit, message):
    manifest, data = labelled_tiny
    edit(data)
    results = tmp_path / "acc.jsonl"
    proc = accuracy("--runtime", "ort", "--manifest", str(manifest), "--data", str(data), "--results", str(results),
                    cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and not results.exists()


def test_usage_errors_exit_2(labelled_tiny, tmp_path):
    manifest, data = labelled_tiny
    proc = accuracy("--runtime", "ort", "--manifest", str(manifest), "--data", str(data), "--workers", "0",
                    cwd=tmp_path)
    assert proc.returncode == 2 and "--workers must be a positive integer" in proc.stderr
    proc = accuracy("--runtime", "ort", "--model", "ResNet50", "--data", str(data), cwd=tmp_path)
    assert proc.returncode == 2 and "unknown model 'ResNet50'" in proc.stderr
