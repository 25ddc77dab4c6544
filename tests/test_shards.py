"""The accuracy pass in shards, without a cluster: per-image drift rows that merge into the statistics of the
whole, shards cut at multiples of the batch, batches that do not shift after an unreadable image, and the
command's cluster flags refused or failing cleanly before anything runs (the slow tier runs the real cluster:
tests/test_cluster_accuracy.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, call_main
from test_accuracy import SMALL, labelled_tiny  # noqa: F401 - a fixture

from bench.accuracy.per_image import ImageResults, aligned_batches, merge
from bench.accuracy.statistics import drift_statistics
from bench.cli import main
from bench.cluster.shards import split
from core.datasets import ImageDataset, open_dataset
from core.metrics import DriftRows, compute_drift, drift_of_rows


def logits_pair(n: int = 40, classes: int = 12):
    rng = np.random.default_rng(3)
    reference = rng.standard_normal((n, classes)).astype(np.float32)
    candidate = reference + rng.standard_normal((n, classes)).astype(np.float32) * 0.3
    candidate[5, 2] = np.nan  # a row with no prediction
    reference[9, 0] = np.inf
    return reference, candidate, rng.integers(0, classes, n), [f"img{i:03d}" for i in range(n)]


def test_rows_of_parts_give_the_statistics_of_the_whole_to_the_last_digit():
    reference, candidate, labels, names = logits_pair()
    whole = compute_drift(reference, candidate, labels, names).to_dict()
    cuts = [0, 7, 8, 23, 40]  # uneven parts, one of a single image
    parts = [DriftRows.of(reference[a:b], candidate[a:b], labels[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert drift_of_rows(DriftRows.concatenate(parts), labels, names).to_dict() == whole
    shuffled = np.random.default_rng(0).permutation(len(names))
    back = DriftRows.of(reference[shuffled], candidate[shuffled], labels[shuffled]).take(np.argsort(shuffled))
    assert drift_of_rows(back, labels, names).to_dict() == whole
    assert whole["nonfinite_images"] == 1 and whole["reference_nonfinite_values"] == 1


def results_of(names: list[str], labels: np.ndarray, rows: DriftRows) -> ImageResults:
    top = np.stack([rows.pred_cand, *[np.full(len(names), -1)] * 4], axis=1).astype(np.int32)
    return ImageResults(list(names), labels, top, rows.ok_cand.copy(), drift=rows)


def test_shards_merge_by_image_name_into_the_listed_order():
    reference, candidate, labels, names = logits_pair()
    whole = results_of(names, labels, DriftRows.of(reference, candidate, labels))
    shards = [results_of(names[a:b], labels[a:b], DriftRows.of(reference[a:b], candidate[a:b], labels[a:b]))
              for a, b in ((20, 40), (0, 20))]  # in the order they came back, not the listed one
    shards[0].unreadable = [{"name": "img999", "path": "x", "reason": "broken"}]
    order = [*names, "img999"]
    merged = merge(shards, order=order)
    assert merged.names == names and merged.unreadable[0]["name"] == "img999"
    assert drift_statistics(merged, "ref") == drift_statistics(whole, "ref")
    assert (merged.top == whole.top).all() and (merged.labels == whole.labels).all()
    with pytest.raises(ValueError, match="does not list"):
        merge(shards, order=names)
    with pytest.raises(ValueError, match="measured twice"):
        merge([shards[1], shards[1]])
    plain = ImageResults(shards[1].names, shards[1].labels, shards[1].top, shards[1].finite)
    with pytest.raises(ValueError, match="some shards ran the reference"):
        merge([shards[0], plain])


@pytest.mark.parametrize(("count", "shards", "batch", "cuts"), [
    (12, 3, 2, [(0, 4), (4, 8), (8, 12)]),
    (12, 2, 2, [(0, 6), (6, 12)]),
    (11, 3, 4, [(0, 4), (4, 8), (8, 11)]),
    (10, 3, 2, [(0, 4), (4, 8), (8, 10)]),
    (5, 8, 2, [(0, 2), (2, 4), (4, 5)]),  # never an empty shard
    (7, 1, 8, [(0, 7)]),
])
def test_shards_are_cut_at_multiples_of_the_batch(count, shards, batch, cuts):
    assert [(r.start, r.stop) for r in split(count, shards, batch)] == cuts


def test_batches_do_not_shift_after_an_unreadable_image(labelled_tiny):  # noqa: F811 - the fixture imported above
    """A block of ``batch`` listed images is one batch whatever was unreadable before it, so a shard cut at a
    multiple of the batch builds the batches the whole set builds."""
    _, data = labelled_tiny
    listed = (data / "val_list.txt").read_text().splitlines()
    broken = data / listed[1].split()[0]
    broken.write_bytes(b"not a jpeg")
    whole = open_dataset(data, preprocess=SMALL, num_classes=10)
    whole.check()
    batches = [names for _, _, names in aligned_batches(whole, 2)]
    assert [len(b) for b in batches] == [1, 2, 2]  # not [2, 2, 1]: the block holding the bad image runs short
    shard = ImageDataset(whole.kind, whole.root, whole.samples[2:], SMALL)
    shard.check()
    assert [names for _, _, names in aligned_batches(shard, 2)] == batches[1:]


def test_cluster_flags_without_a_cluster_are_usage_errors(labelled_tiny, tmp_path, capsys):  # noqa: F811 - the fixture imported above
    manifest, data = labelled_tiny
    results = tmp_path / "acc.jsonl"
    base = ("accuracy", "--runtime", "ort", "--manifest", str(manifest), "--data", str(data), "--results", str(results))
    for extra, message in ((("--shards", "2"), "--shards splits the pass over the nodes of a cluster"),
                           (("--ship-images",), "--ship-images splits the pass"),
                           (("--cluster", "auto", "--shards", "0"), "--shards must be a positive integer"),
                           (("--cluster", "auto", "--target", "arm"), "unknown target 'arm'")):
        code, _, err = call_main(main, capsys, *base, *extra)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not results.exists()


def test_no_cluster_at_the_address_is_one_line_before_anything_runs(labelled_tiny, tmp_path, capsys):  # noqa: F811 - the fixture imported above
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifest, data = labelled_tiny
    results = tmp_path / "acc.jsonl"
    code, out, err = call_main(main, capsys, "accuracy", "--runtime", "ort", "--manifest", str(manifest), "--data",
                               str(data), "--results", str(results), "--cluster", f"127.0.0.1:{port}")
    assert code == 2 and err.startswith(f"error: no Ray cluster at 127.0.0.1:{port}: ") and err.count("\n") == 1
    assert not results.exists() and not (tmp_path / "artifacts").exists()


def test_drift_needs_the_paddle_model_beside_the_export(labelled_tiny, tmp_path, capsys):  # noqa: F811 - the fixture imported above
    manifest, data = labelled_tiny  # an ONNX model written by hand: no Paddle model beside it
    results = tmp_path / "acc.jsonl"
    code, _, err = call_main(main, capsys, "accuracy", "--runtime", "ort", "--manifest", str(manifest), "--data",
                             str(data), "--results", str(results), "--drift", "--quiet")
    assert code == 2 and "--drift compares with Paddle Inference" in err and "none is beside" in err, err
    assert not results.exists()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_shard_process_leaves_no_image_worker_behind(labelled_tiny, tmp_path, how):  # noqa: F811
    """A node's shard process gets SIGTERM when the node's worker dies (it stops, exit 143, no outcome), or SIGKILL
    from Ray: either way its image workers end too, not orphaned (they would wait on their queue forever)."""
    import pickle
    import signal
    import subprocess
    import sys
    import time

    from bench.labelled_pass import ShardJob
    from bench.request import BenchRequest, Target, validate
    from runtimes.base import RuntimeOptions

    manifest, data = labelled_tiny
    dataset = open_dataset(data, preprocess=SMALL, num_classes=10)
    dataset.samples = dataset.samples * 20  # long enough to be caught decoding
    request, _ = validate(BenchRequest(runtime_name="ort", target=Target(manifest=str(manifest)),
                                       runtime=RuntimeOptions(batch=2)))
    job = ShardJob(0, request, dataset.kind, str(dataset.root), dataset.samples, SMALL, drift=False, workers=2)
    (tmp_path / "job.pkl").write_bytes(pickle.dumps(job))
    child = subprocess.Popen([sys.executable, "-m", "bench.labelled_pass", str(tmp_path / "job.pkl"),
                              str(tmp_path / "out.pkl")], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not workers_of(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers_of(child.pid), "the shard process started no image workers"
        child.send_signal(getattr(signal, how))
        assert child.wait(timeout=60) == (128 + signal.SIGTERM if how == "SIGTERM" else -signal.SIGKILL)
        deadline = time.monotonic() + 30
        while in_session(child.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = in_session(child.pid)
    finally:
        for pid in [child.pid, *in_session(child.pid)]:  # by id, whatever the outcome
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not left, f"image workers left running: {left}"
    assert not (tmp_path / "out.pkl").exists()  # stopped: no outcome


def in_session(session: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def workers_of(pid: int) -> list[int]:
    return [p for p in in_session(pid) if p != pid and b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
