"""``python -m bench explain --against paddle``: the runtime's tensors against Paddle's own intermediate values of
the same model, matched by paddle2onnx's tensor names, on a real zoo export and on one altered after export."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_module

from bench.explain.paddle import paddle_op_of

pytestmark = pytest.mark.slow  # exports LeViT_128S and runs Paddle


def test_paddle_op_names():
    assert paddle_op_of("p2o.pd_op.conv2d.12.0") == "pd_op.conv2d #12"
    assert paddle_op_of("p2o.pd_op.batch_norm_.3.0") == "pd_op.batch_norm_ #3"
    assert paddle_op_of("Add.25") is None and paddle_op_of("p2o.pd_op.matmul.4.0_folded__opt1") is None


@pytest.fixture(scope="module")
def levit_export(tmp_path_factory) -> Path:
    """LeViT_128S exported at the default level (BatchNorms folded into Convs and MatMuls)."""
    from export.pipeline import run_export
    from export.request import ExportRequest

    root = tmp_path_factory.mktemp("levit")
    return run_export(ExportRequest("LeViT_128S", 17, root=root)).manifest_path


def altered_copy(manifest: Path, folder: Path, conv_index: int, factor: float) -> tuple[Path, str]:
    """The export with one Conv's weights scaled after export and the manifest's hash updated."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(manifest.parent, folder)
    model = onnx.load(str(folder / "model.onnx"))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][conv_index]
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * factor, weight.name))
    onnx.save(model, str(folder / "model.onnx"))
    described = json.loads((folder / "model.onnx.json").read_text())
    data = (folder / "model.onnx").read_bytes()
    described["graph"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / "model.onnx.json").write_text(json.dumps(described))
    return folder / "model.onnx.json", conv.name


def explain(manifest: Path, out: Path, *extra: str):
    return run_module("bench", "explain", "--runtime", "ort", "--manifest", str(manifest), "--images", "2",
                      "--out", str(out), *extra, cwd=out.parent)


def test_an_untouched_export_agrees_with_paddle_layer_by_layer(levit_export, tmp_path):
    proc = explain(levit_export, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "vs Paddle fp32 (paddle/inference.json)" in proc.stdout  # fp32 export: Paddle is the default reference
    assert "no tensor crosses the threshold" in proc.stdout, proc.stdout
    section = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert section["against"] == "paddle" and section["first_divergence"] is None
    assert section["compared"]["tensors"] >= 80  # Convs (holding their folded BatchNorm's name), MatMuls, Softmax...


def test_a_conv_altered_after_export_is_named(levit_export, tmp_path):
    manifest, conv = altered_copy(levit_export, tmp_path / "altered", conv_index=2, factor=1.5)
    proc = explain(manifest, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    first = json.loads((tmp_path / "out" / "explain.json").read_text())["first_divergence"]
    assert first["node"] == conv and first["op_type"] == "Conv", first
    line = next(line for line in proc.stdout.splitlines() if line.startswith("first divergence"))
    assert f"Conv {conv}" in line and "= Paddle op pd_op.batch_norm_ #2" in line, line
    # against ORT fp32 on the same altered file, the model is compared with itself and nothing shows
    proc = explain(manifest, tmp_path / "self", "--against", "onnx")
    assert proc.returncode == 0 and "no tensor crosses the threshold" in proc.stdout


def test_a_parity_failure_keeps_the_export_and_points_to_explain(tmp_path, monkeypatch):
    """The export stage's parity failure leaves its files beside the cache (never a cache hit) and names the
    explain command that locates the layer; that command runs on them."""
    from conftest import _tiny_paddle_model

    from export import parity
    from export.convert import ExportError
    from export.pipeline import PARITY_FAILED, run_export
    from export.request import ExportRequest

    model_file, _ = _tiny_paddle_model(tmp_path, size=32, classes=10)
    monkeypatch.setattr(parity, "tolerance_for", lambda reference: 0.0)  # any float32 difference now fails
    request = ExportRequest("Tiny", 17, paddle_model=model_file, input_shape=(3, 32, 32), root=tmp_path / "art")
    with pytest.raises(ExportError, match="parity failed on seeded inputs") as info:
        run_export(request)
    kept = request.out_dir.with_name(request.out_dir.name + PARITY_FAILED)
    assert f"--manifest {kept / 'model.onnx.json'} --against paddle" in str(info.value)
    assert not request.out_dir.exists()  # nothing published where the cache looks
    described = json.loads((kept / "model.onnx.json").read_text())
    assert described["parity"]["passed"] is False and described["cache_key"] is None
    proc = explain(kept / "model.onnx.json", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "vs Paddle fp32" in proc.stdout and "reference tensors compared" in proc.stdout
