"""The export pipeline end to end on real Paddle, paddle2onnx, onnx and ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_module
from onnx import TensorProto, helper

from export import convert
from export.convert import ExportError, constant_only_nodes
from export.pipeline import artifact_dir, ensure_export

ROOT = Path(__file__).resolve().parents[1]


def run_export_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_module("export", *args, cwd=cwd)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def mobilevit_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    started = time.perf_counter()
    manifest_path = ensure_export("MobileViT_XXS", 13, root=root)
    return root, manifest_path, time.perf_counter() - started


def test_export_writes_validated_manifest_with_parity(mobilevit_export):
    root, manifest_path, _ = mobilevit_export
    assert manifest_path.parent == artifact_dir("MobileViT_XXS", 13, root=root)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["opset"] == {"requested": 13, "written": 13}
    model = onnx.load(str(manifest_path.parent / "model.onnx"))
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [13]
    onnx_info = manifest["onnx"]
    assert onnx_info["inputs"][0]["shape"] == ["batch", 3, 256, 256]
    assert onnx_info["outputs"][0]["shape"] == ["batch", 1000]
    assert onnx_info["node_count"] == len(model.graph.node) < onnx_info["node_count_before_folding"]
    assert sum(onnx_info["op_census"].values()) == onnx_info["node_count"]
    assert "LayerNormalization" not in onnx_info["op_census"]  # only from opset 17
    for name in ("seeded", "images"):
        figures = manifest["parity"][name]
        assert figures["passed"] and figures["max_abs_diff"] <= 1e-4 and figures["top1_agreement"] == 1.0
    assert manifest["parity"]["images"]["n"] == 44
    assert manifest["weights"] == {
        "kind": "seeded",
        "location": "seeded-crc32-v1",
        "sha256": None,
        "trained": False,
    }
    assert manifest["versions"]["paddle2onnx"] == "2.1.0"
    reference = np.load(manifest_path.parent / "reference.npz")
    assert reference["images"].shape == (44, 1000) and reference["seeded_inputs"].shape == (4, 1000)
    assert (manifest_path.parent / manifest["paddle_model"]["model_file"]).is_file()
    assert not [p for p in manifest_path.parent.parent.iterdir() if p.name.startswith(".")]


def test_same_request_is_a_cache_hit_and_force_rebuilds(mobilevit_export):
    root, manifest_path, first_seconds = mobilevit_export
    before = json.loads(manifest_path.read_text())["created_utc"]
    started = time.perf_counter()
    assert ensure_export("MobileViT_XXS", 13, root=root) == manifest_path
    assert time.perf_counter() - started < first_seconds / 3
    assert json.loads(manifest_path.read_text())["created_utc"] == before
    # A damaged artifact is not a hit: the sha256 in the manifest no longer matches.
    onnx_path = manifest_path.parent / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    ensure_export("MobileViT_XXS", 13, root=root)
    manifest = json.loads(manifest_path.read_text())
    assert convert_sha(onnx_path) == manifest["onnx"]["sha256"]


def convert_sha(path: Path) -> str:
    from export.weights import sha256_of

    return sha256_of(path)


def test_levit_opset17_has_hardswish_and_no_bias_gathers(tmp_path):
    manifest = json.loads(ensure_export("LeViT_128S", 17, batch=2, root=tmp_path, images=None).read_text())
    census = manifest["onnx"]["op_census"]
    assert census["HardSwish"] == 25
    assert "Gather" not in census  # the attention bias is one folded constant per block
    assert manifest["onnx"]["inputs"][0]["shape"] == [2, 3, 224, 224]
    assert manifest["parity"]["seeded"]["passed"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", "ResNet50", "--opset", "13"], ["unknown model 'ResNet50'", "MobileViT_XXS"]),
        (["--model", "MobileViT_XXS", "--opset", "6"], ["opset 6", "7..21"]),
        (["--model", "MobileViT_XXS", "--opset", "22"], ["opset 22", "7..21"]),
        (["--model", "MobileViT_XXS", "--opset", "13", "--batch", "0"], ["--batch"]),
        (["--model", "MobileViT_XXS", "--opset", "13", "--weights", "missing.pdparams"], ["does not exist"]),
    ],
)
def test_bad_requests_fail_fast_with_one_line(tmp_path, args, fragments):
    proc = run_export_cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_opset_too_low_for_an_op_names_the_op(tmp_path):
    proc = run_export_cli(
        "--model", "LeViT_128S", "--opset", "9", "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    assert_one_line_error(proc, "pd_op.mean needs opset 11", "--opset 11")
    assert not any((tmp_path / "out").iterdir())


def test_corrupt_and_mismatched_weights_are_refused(tmp_path):
    import paddle

    corrupt = tmp_path / "corrupt.pdparams"
    corrupt.write_bytes(b"not a pickle at all")
    wrong = tmp_path / "wrong.pdparams"
    paddle.save({"fc.weight": paddle.zeros([2, 2])}, str(wrong))
    for path, fragment in ((corrupt, "cannot read weights file"), (wrong, "do not match the model")):
        proc = run_export_cli(
            "--model",
            "MobileViT_XXS",
            "--opset",
            "13",
            "--weights",
            str(path),
            "--out",
            str(tmp_path / "out"),
            cwd=tmp_path,
        )
        assert_one_line_error(proc, fragment)
        assert not any((tmp_path / "out").iterdir())


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    proc = run_export_cli(
        "--model", "MobileViT_XXS", "--opset", "13", "--out", str(blocker / "sub"), cwd=tmp_path
    )
    assert_one_line_error(proc, "not writable", "--out")


def test_official_weights_offline_error_names_url_and_flag(tmp_path):
    from export.weights import WeightsError, resolve

    with pytest.raises(
        WeightsError, match=r"cannot download http://127\.0\.0\.1:9/x\.pdparams.*--weights PATH"
    ):
        resolve("http://127.0.0.1:9/x.pdparams", "unused", cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.pdparams*"))


def test_constant_only_nodes_finds_unfolded_work():
    const = helper.make_tensor("c", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["c", "c"], ["cc"]), helper.make_node("Add", ["x", "cc"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[const],
    )
    model = helper.make_model(graph)
    assert constant_only_nodes(model) == ["Mul"]
    assert constant_only_nodes(convert.fold_constants(model)) == []


def test_folding_that_cannot_run_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "polygraphy.backend.onnx", None)  # what a failed import looks like
    graph = helper.make_graph([], "g", [], [])
    with pytest.raises(ExportError, match="constant folding unavailable"):
        convert.fold_constants(helper.make_model(graph))


def test_a_brought_inference_model_exports_with_parity(tmp_path):
    from conftest import _tiny_paddle_model

    model_file, _ = _tiny_paddle_model(tmp_path, size=32, classes=10)
    proc = run_export_cli(
        "--paddle-model",
        str(model_file),
        "--model",
        "Tiny",
        "--input-shape",
        "3,32,32",
        "--opset",
        "17",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest_path = next((tmp_path / "out").rglob("model.onnx.json"))
    manifest = json.loads(manifest_path.read_text())
    assert manifest["model"] == "Tiny" and manifest["opset"]["written"] == 17
    assert manifest["weights"]["kind"] == "inference-model"
    assert manifest["parity"]["seeded"]["passed"] and "images" not in manifest["parity"]
    assert manifest["onnx"]["outputs"][0]["shape"] == ["batch", 10]
    bad = run_export_cli(
        "--paddle-model",
        str(model_file),
        "--model",
        "Tiny",
        "--input-shape",
        "3,32",
        "--opset",
        "17",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert_one_line_error(bad, "--input-shape")


@pytest.mark.parametrize("moment", [".opset13-bdyn.tmp-*", ".opset13-bdyn.tmp-*/paddle/inference.json"])
def test_an_interrupted_export_leaves_nothing_behind(tmp_path, moment):
    """SIGTERM as the export starts, and once paddle (which installs its own signal handlers) is working."""
    import signal

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "export", "--model", "MobileViT_XXS", "--opset", "13", "--out", str(out)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    deadline = time.monotonic() + 120
    while not list(out.rglob(moment)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert list(out.rglob(moment)), "the export never got there"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert "error: terminated by signal 15" in proc.stderr.read().decode()


def test_cache_identity_follows_the_weights_not_their_spelling(tmp_path):
    from conftest import _tiny_paddle_model

    from export.pipeline import ExportRequest, _cache_key

    assert _cache_key(ExportRequest("LeViT_128S", 17, weights=None), "LeViT") == _cache_key(
        ExportRequest("LeViT_128S", 17, weights="seeded"), "LeViT"
    )
    model_file, params_file = _tiny_paddle_model(tmp_path, size=32, classes=10)
    request = ExportRequest("Tiny", 17, paddle_model=model_file, input_shape=(3, 32, 32))
    before = (_cache_key(request, None), artifact_dir("Tiny", 17, paddle_model=model_file))
    params_file.write_bytes(params_file.read_bytes() + b"retrained")  # same program, new weights
    after = (_cache_key(request, None), artifact_dir("Tiny", 17, paddle_model=model_file))
    assert before[0] != after[0] and before[1] != after[1]


def test_parity_check_fails_on_drift_flips_and_non_finite_logits():
    from export.parity import check

    reference = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    figures = check("same", reference, reference + 1e-6)
    assert figures["passed"] and figures["top1_flips"] == 0 and figures["max_abs_diff"] < 2e-6
    with pytest.raises(ExportError, match=r"max abs diff 0\.001 \(limit 0\.0001\)"):
        check("drifted", reference, reference + 1e-3)
    flipped = reference.copy()
    flipped[0] = -flipped[0]
    with pytest.raises(ExportError, match=r"top-1 agreement 75\.0%"):
        check("flipped", reference, flipped)
    with pytest.raises(ExportError, match="finite=False"):
        check("nan", reference, np.full_like(reference, np.nan))
