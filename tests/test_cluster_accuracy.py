"""The accuracy pass over shards on a real Ray cluster started on this machine (slow tier, no mocks).

A head (no bench_slot) and two worker nodes run ``python -m bench accuracy --cluster ADDRESS --drift`` on a real
Paddle model and its paddle2onnx export over 12 listed images (one corrupt): the sharded record must equal the
one-machine record to the last digit, statistics and data description alike, whether the images are shipped
or read at the driver's path. Every process the cluster started is checked gone at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_44, run_module
from test_cluster_sweep import ROOT, LocalCluster, _processes, below, wait_for

from core.manifest import load_manifest, save_manifest
from core.preprocess import Preprocess

pytestmark = pytest.mark.slow
pytest.importorskip("ray.cluster_utils", reason="ray is not installed: pip install -e '.[cluster]'")

SMALL = Preprocess(resize_short=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
SAME = ("accuracy", "drift", "data", "preprocess", "batch")  # what a sharded record shares with a local one


@pytest.fixture(scope="module")
def labelled(tiny_artifact, tmp_path_factory) -> tuple[Path, Path]:
    """(the tiny Paddle model's export with image preprocessing, 12 listed images: 11 real ones, the 4th corrupt)."""
    root = tmp_path_factory.mktemp("labelled")
    shutil.copytree(tiny_artifact.parent, root / "model")
    manifest = root / "model" / tiny_artifact.name
    save_manifest(manifest, dataclasses.replace(load_manifest(manifest), preprocess=SMALL))
    images = root / "data" / "images"
    images.mkdir(parents=True)
    lines = []
    for i, source in enumerate(sorted((DATA_44 / "images").glob("*.JPEG"))[:11]):
        shutil.copy(source, images / source.name)
        lines.append(f"images/{source.name} {i % 10}")
    (images / "corrupt.JPEG").write_bytes(b"not a jpeg")
    lines.insert(3, "images/corrupt.JPEG 3")
    (root / "data" / "val_list.txt").write_text("\n".join(lines) + "\n")
    return manifest, root / "data"


def arguments(manifest: Path, data: Path, results: Path, *extra: str) -> list[str]:
    return ["accuracy", "--runtime", "ort", "--manifest", str(manifest), "--data", str(data), "--batch", "2",
            "--workers", "1", "--drift", "--results", str(results), *extra]


def start_accuracy(manifest: Path, data: Path, results: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", *arguments(manifest, data, results, *extra)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def accuracy(labelled, results: Path, *extra: str) -> dict:
    proc = run_module("bench", *arguments(*labelled, results, *extra), cwd=results.parent)
    assert proc.returncode == 0, proc.stderr
    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    return {**record, "stdout": proc.stdout}


@pytest.fixture(scope="module")
def one_machine(labelled, tmp_path_factory) -> dict:
    return accuracy(labelled, tmp_path_factory.mktemp("local") / "acc.jsonl")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.nodes = [cluster.add(), cluster.add()]
        yield cluster
    finally:
        cluster.close()


def test_one_machine_pass_has_drift_against_paddle(one_machine):
    drift, acc = one_machine["drift"], one_machine["accuracy"]
    assert acc["n"] == drift["n"] == 11 and acc["unreadable"][0]["name"] == "images/corrupt.JPEG"
    assert drift["reference_source"] == "paddle inference fp32" and drift["agreement"] == 1.0
    assert 0 < drift["max_abs_diff"] < 1e-4 and drift["mcnemar_p"] == 1.0 and drift["flipped"] == 0
    assert drift["candidate_top1"] == acc["top1"] and "cluster" not in one_machine
    assert "against paddle inference fp32: top-1 agreement 100.00%" in one_machine["stdout"]


def test_three_shipped_shards_equal_the_one_machine_pass(two_nodes, labelled, one_machine, tmp_path):
    sharded = accuracy(labelled, tmp_path / "acc.jsonl", "--cluster", two_nodes.address, "--shards", "3",
                       "--ship-images")
    for key in SAME:
        assert sharded[key] == one_machine[key], key  # every figure, to the last digit
    where = sharded["cluster"]
    assert where["shards"] == 3 and where["images"].startswith("shipped") and not where["mixed_cpus"]
    shards = where["per_shard"]
    assert [s["images"] for s in shards] == [[0, 4], [4, 8], [8, 12]]  # cut at multiples of the batch
    assert [s["measured"] for s in shards] == [3, 4, 4] and [s["unreadable"] for s in shards] == [1, 0, 0]
    assert {s["node_id"] for s in shards} == {n.node_id for n in two_nodes.nodes}  # both nodes worked
    assert all(s["attempt"] == 1 and s["export_arrived_from"] in ("object store", "node cache") for s in shards)
    # the corrupt image is named by its path on the driver, not the node's copy
    assert sharded["accuracy"]["unreadable"][0]["path"] == str(labelled[1] / "images" / "corrupt.JPEG")
    assert "3 shard(s) on 2 node(s) of the cluster" in sharded["stdout"]


def test_shards_read_a_shared_path_one_per_node_by_default(two_nodes, labelled, one_machine, tmp_path):
    sharded = accuracy(labelled, tmp_path / "acc.jsonl", "--cluster", two_nodes.address)
    for key in SAME:
        assert sharded[key] == one_machine[key], key
    where = sharded["cluster"]
    assert where["shards"] == 2 and where["images"] == "read on each node at the driver's path"
    assert [s["images"] for s in where["per_shard"]] == [[0, 6], [6, 12]]


def decoding_shards(root: int) -> list[int]:
    """The shard processes (``python -m bench.labelled_pass``) below ``root`` whose image workers have started."""
    return [pid for pid in below(root, "bench.labelled_pass") if below(pid, "multiprocessing.spawn")]


def in_sessions(sessions: list[int]) -> list[int]:
    found = []
    for pid in _processes():
        try:
            if os.getsid(pid) in sessions:
                found.append(pid)
        except OSError:
            continue
    return found


def test_a_shard_whose_node_dies_runs_once_more_on_another(two_nodes, labelled, one_machine, tmp_path):
    """A third node joins; each of three shards starts on its own node; the third node is killed while its shard
    decodes images in worker processes."""
    doomed = two_nodes.add()
    results = tmp_path / "acc.jsonl"
    driver = start_accuracy(*labelled, results, "--cluster", two_nodes.address, "--shards", "3", "--workers", "2")
    shards = wait_for(lambda: decoding_shards(two_nodes.raylet(doomed)), 120, "a shard decoding on the doomed node")
    two_nodes.kill(doomed)
    out, err = driver.communicate(timeout=240)
    # The dead node's shard process and its image workers (its session) are gone, not orphaned.
    wait_for(lambda: not in_sessions(shards), 30, "the dead node's shard process and its workers to end")
    assert driver.returncode == 0, err
    assert "retry: shard " in err and "running it once more on another node" in err
    (sharded,) = [json.loads(line) for line in results.read_text().splitlines()]
    for key in SAME:
        assert sharded[key] == one_machine[key], key
    shards = sharded["cluster"]["per_shard"]
    retried = [s for s in shards if s["attempt"] == 2]
    assert len(retried) == 1 and retried[0]["retry_of"]["node_id"] == doomed.node_id
    assert {s["node_id"] for s in shards} <= {n.node_id for n in two_nodes.nodes}  # none recorded on the dead node


def test_a_shard_that_fails_on_its_node_stops_the_pass_naming_it(two_nodes, labelled, tmp_path):
    from runtimes import probe

    if probe("trt").available:
        pytest.skip("TensorRT is available here: a node lacking a runtime cannot be had on this machine")
    results = tmp_path / "acc.jsonl"
    argv = arguments(*labelled, results, "--cluster", two_nodes.address)
    proc = run_module("bench", *[("trt" if a == "ort" else a) for a in argv], cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert " failed on " in errors[0] and "runtime 'trt' is not available" in errors[0], errors[0]
    assert not results.exists()  # nothing of a partial set
