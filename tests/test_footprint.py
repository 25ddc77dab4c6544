"""The memory a batch needs, estimated before anything is allocated; refused when it cannot fit."""

from __future__ import annotations

import logging

import pytest
from conftest import run_module

from bench.harness.footprint import (
    ACTIVATION_OVERHEAD,
    BatchTooLarge,
    activation_peak_per_image,
    check_fits,
    estimate,
    liveness_peak,
)
from core.artifact import Artifact

GIB = 2**30


def test_liveness_peak_of_a_hand_made_graph():
    import onnx
    from onnx import TensorProto, helper

    def info(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])  # 16 bytes

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [info("x")], [info("y")])
    inferred = onnx.shape_inference.infer_shapes(helper.make_model(graph))
    # a and b are both alive when c is made (48 bytes); then a and b are freed, c and y live (32).
    assert liveness_peak(inferred.graph) == 48


def test_the_estimate_adds_input_output_model_and_activations(onnx_artifact):
    artifact = Artifact.from_manifest(onnx_artifact)
    per_image = activation_peak_per_image(artifact)
    assert per_image and per_image > 0
    footprint = estimate(artifact, 64)  # no memory figure given: the graph is read
    assert footprint.activation_source == "onnx graph"
    assert footprint.input_bytes == 3 * 32 * 32 * 4 and footprint.output_bytes == 10 * 4
    assert footprint.total(0) == (2 * artifact.manifest.graph.bytes
                                  + 64 * (2 * 3 * 32 * 32 * 4 + 2 * 40 + per_image * ACTIVATION_OVERHEAD[0]))
    assert footprint.total(0) < footprint.total(1)
    # With plenty of memory, a small batch is judged on the generous bound without reading the graph.
    assert estimate(artifact, 1, available=64 * GIB).activation_source == "input size"


def test_a_batch_that_cannot_fit_is_refused_with_the_largest_that_can(onnx_artifact):
    artifact = Artifact.from_manifest(onnx_artifact)
    with pytest.raises(BatchTooLarge, match=r"batch 100000000 of Tiny needs .* more than the 1.0 GiB of memory "
                                            r"available; pass --batch (\d+) or less") as caught:
        check_fits(artifact, 100_000_000, GIB)
    largest = int(caught.value.args[0].rsplit("--batch ", 1)[1].split()[0])
    assert check_fits(artifact, largest, GIB) is not None  # the batch it suggests does fit
    with pytest.raises(BatchTooLarge):
        check_fits(artifact, largest + 1, GIB)
    assert check_fits(artifact, 8, None) is None  # nothing to compare with (not Linux): no check


def test_a_large_batch_is_warned_about(onnx_artifact, caplog):
    artifact = Artifact.from_manifest(onnx_artifact)
    footprint = estimate(artifact, 1000)
    with caplog.at_level(logging.WARNING):
        check_fits(artifact, 1000, int(footprint.total(1) * 1.5))
    assert "batch 1000 of Tiny may need up to" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_fits(artifact, 1000, footprint.total(1) * 10)
    assert caplog.text == ""


def test_the_cli_refuses_before_allocating_and_writes_no_record(onnx_artifact, tmp_path):
    results = tmp_path / "r.jsonl"
    run = run_module("bench", "--runtime", "null", "--manifest", str(onnx_artifact), "--batch", "100000000",
                     "--results", str(results), cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: batch 100000000 of Tiny needs ") and "of memory available; pass --batch" in line
    assert "MemoryError" not in run.stderr and not results.exists()
