"""The export pipeline end to end on real Paddle, paddle2onnx, onnx and ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_module
from onnx import TensorProto, helper

from core.logits import Logits
from core.manifest import load_manifest
from export import convert
from export.convert import ExportError, constant_only_nodes
from export.pipeline import run_export
from export.request import ExportRequest, artifact_dir


def ensure_export(model: str, opset: int, batch="dynamic", root: Path = Path("artifacts"), **kw) -> Path:
    return run_export(ExportRequest(model, opset, batch, root=root, **kw)).manifest_path

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


@pytest.mark.slow
def test_export_writes_validated_manifest_with_parity(mobilevit_export):
    root, manifest_path, _ = mobilevit_export
    assert manifest_path.parent == artifact_dir("MobileViT_XXS", 13, root=root)
    assert load_manifest(manifest_path).graph.format == "onnx"  # the schema check passes
    manifest = json.loads(manifest_path.read_text())
    assert (manifest["opset_requested"], manifest["opset_written"]) == (13, 13)
    model = onnx.load(str(manifest_path.parent / "model.onnx"))
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [13]
    onnx_info = manifest["graph"]
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
    images, meta = Logits.load(manifest_path.parent / manifest["reference"]["images"]["file"])
    seeded, _ = Logits.load(manifest_path.parent / manifest["reference"]["seeded"]["file"])
    assert images.values.shape == (44, 1000) and seeded.values.shape == (4, 1000)
    assert images.names[0] == "images/ILSVRC2012_val_00000001.JPEG" and len(images.labels) == 44
    assert meta["producer"].startswith("paddle dygraph")
    assert (manifest_path.parent / manifest["paddle_model"]["model_file"]).is_file()
    assert not [p for p in manifest_path.parent.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
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
    assert convert_sha(onnx_path) == manifest["graph"]["sha256"]
    rebuilt = json.loads(manifest_path.read_text())["created_utc"]
    run_export(ExportRequest("MobileViT_XXS", 13, root=root, force=True))
    assert json.loads(manifest_path.read_text())["created_utc"] >= rebuilt
    assert load_manifest(manifest_path).cache_key == manifest["cache_key"]


@pytest.mark.slow
def test_a_cached_export_is_usable_from_a_read_only_folder(mobilevit_export):
    root, manifest_path, _ = mobilevit_export
    folders = [root, *[p for p in root.rglob("*") if p.is_dir()]]
    try:
        for folder in folders:
            folder.chmod(0o555)
        proc = run_export_cli("--model", "MobileViT_XXS", "--opset", "13", "--out", str(root), cwd=root.parent)
        assert proc.returncode == 0, proc.stderr
        assert " hit " in proc.stdout
    finally:
        for folder in folders:
            folder.chmod(0o755)


def convert_sha(path: Path) -> str:
    from core.files import sha256_of

    return sha256_of(path)


@pytest.mark.slow
def test_levit_opset17_has_hardswish_and_no_bias_gathers(tmp_path):
    manifest = json.loads(ensure_export("LeViT_128S", 17, batch=2, root=tmp_path, images=None).read_text())
    census = manifest["graph"]["op_census"]
    assert census["HardSwish"] == 25
    assert "Gather" not in census  # the attention bias is one folded constant per block
    assert manifest["graph"]["inputs"][0]["shape"] == [2, 3, 224, 224]
    assert manifest["parity"]["seeded"]["passed"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", "ResNet50", "--opset", "13"], ["unknown model 'ResNet50'", "MobileViT_XXS"]),
        (["--model", "MobileViT_XXS", "--opset", "6"], ["opset 6", "7..21"]),
        (["--model", "MobileViT_XXS", "--opset", "22"], ["opset 22", "7..21"]),
        (["--model", "MobileViT_XXS", "--opset", "13", "--batch", "0"], ["--batch"]),
        pytest.param(["--model", "MobileViT_XXS", "--opset", "13", "--weights", "missing.pdparams"],
                     ["does not exist"], marks=pytest.mark.slow),
    ],
)
def test_bad_requests_fail_fast_with_one_line(tmp_path, args, fragments):
    proc = run_export_cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_opset_too_low_for_an_op_names_the_op(tmp_path):
    proc = run_export_cli(
        "--model", "LeViT_128S", "--opset", "9", "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    assert_one_line_error(proc, "pd_op.mean needs opset 11", "--opset 11")
    assert not (tmp_path / "out").exists()  # a failed first export leaves not even its folder


@pytest.mark.slow
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
        assert not (tmp_path / "out").exists()  # a failed first export leaves not even its folder


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


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--precision", "int8", "--model", "LeViT_128S", "--opset", "17"], "drop --model, --opset"),
    (["--precision", "int8", "--out", "elsewhere"], "as it is, beside it; drop --out"),
    ([], "--manifest derives reduced-precision models: add --precision int8 or fp16"),
])
def test_deriving_from_a_manifest_takes_no_export_flags(tmp_path, flags, fragment):
    proc = run_export_cli("--manifest", str(tmp_path / "model.onnx.json"), *flags, cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert proc.returncode == 2 and not (tmp_path / "artifacts").exists()


@pytest.mark.slow
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
    assert manifest["model"] == "Tiny" and manifest["opset_written"] == 17
    assert manifest["weights"]["kind"] == "inference-model"
    assert manifest["parity"]["seeded"]["passed"] and "images" not in manifest["parity"]
    assert manifest["graph"]["outputs"][0]["shape"] == ["batch", 10]
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


@pytest.mark.slow
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
    returncode, stderr = proc.wait(timeout=60), proc.stderr.read().decode()
    assert returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert "error: terminated by signal 15" in stderr


@pytest.mark.slow
def test_cache_identity_follows_the_weights_not_their_spelling(tmp_path):
    from conftest import _tiny_paddle_model

    from export.pipeline import cache_key

    assert cache_key(ExportRequest("LeViT_128S", 17, weights=None)) == cache_key(
        ExportRequest("LeViT_128S", 17, weights="seeded"))
    model_file, params_file = _tiny_paddle_model(tmp_path, size=32, classes=10)
    request = ExportRequest("Tiny", 17, paddle_model=model_file, input_shape=(3, 32, 32))
    before = (cache_key(request), request.out_dir)
    params_file.write_bytes(params_file.read_bytes() + b"retrained")  # same program, new weights
    after = (cache_key(request), request.out_dir)
    assert before[0] != after[0] and before[1] != after[1]


def test_the_cache_key_covers_every_file_the_export_executes(tmp_path, monkeypatch):
    """Editing any module of export/ or core/ (the data loader, the metrics) must rebuild the exports."""
    import shutil

    import export.pipeline as pipeline

    for package in ("export", "core"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    request = ExportRequest("LeViT_128S", 17)
    key = cache_key_here = pipeline.cache_key(request)
    for module in ("core/datasets.py", "core/metrics.py", "export/models/mobilevit.py", "export/cli.py"):
        (tmp_path / module).write_text((tmp_path / module).read_text() + "\n# edited\n")
        assert pipeline.cache_key(request) != key, module
        key = pipeline.cache_key(request)
    assert key != cache_key_here
    imported = {m.__file__ for m in sys.modules.values()
                if getattr(m, "__file__", None) and m.__name__.split(".")[0] in ("export", "core")}
    hashed = {str(p) for package in ("export", "core") for p in (ROOT / package).rglob("*.py")}
    assert imported <= hashed  # nothing the export imports from this checkout is left out of the key


def test_stale_temporary_folders_of_dead_exports_are_removed(tmp_path):
    from export.layout import make_work_dir

    final = tmp_path / "Tiny" / "seeded" / "opset17-bdyn"
    final.parent.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = final.parent / f".opset17-bdyn.tmp-{dead.pid}-abc"
    alive = final.parent / f".opset13-bdyn.tmp-{os.getpid()}-def"
    for folder in (stale, alive):
        (folder / "paddle").mkdir(parents=True)
        (folder / "paddle" / "inference.json").write_text("{}")
    work = make_work_dir(final)
    assert not stale.exists() and alive.exists()  # another live export's folder is left alone
    assert work.name.startswith(f".opset17-bdyn.tmp-{os.getpid()}-")


def test_parity_check_fails_on_drift_flips_and_non_finite_logits():
    from export.parity import check

    reference = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    figures = check("same", reference, reference + 1e-6)
    assert figures["passed"] and figures["top1_flips"] == 0 and figures["max_abs_diff"] < 2e-6
    limit = 1e-4 * float(np.abs(reference).max())  # the limit follows the logits' scale above 1
    assert figures["tolerance"] == pytest.approx(limit)
    with pytest.raises(ExportError, match=rf"max abs diff 0\.001 \(limit {limit:g}\)"):
        check("drifted", reference, reference + 1e-3)
    small = reference / 10 / np.abs(reference).max()  # logits within [-1, 1]: held to 1e-4 itself
    assert check("small", small, small + 9e-5)["tolerance"] == 1e-4
    with pytest.raises(ExportError, match=r"\(limit 0\.0001\)"):
        check("small drifted", small, small + 2e-4)
    flipped = reference.copy()
    flipped[0] = -flipped[0]
    with pytest.raises(ExportError, match=r"top-1 agreement 75\.0%"):
        check("flipped", reference, flipped)
    with pytest.raises(ExportError, match="finite=False"):
        check("nan", reference, np.full_like(reference, np.nan))
