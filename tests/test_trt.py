"""TensorRT adapter: pure helpers (run anywhere) and the real build/run path (needs TensorRT and a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtimes
from core.artifact import Artifact
from runtimes.base import OptionError, RuntimeOptions, RuntimeUnavailable
from runtimes.deps import is_installed
from runtimes.engine_cache import EngineCache
from runtimes.trt import (
    TRT_MISSING,
    ProfileShapes,
    TrtOptions,
    TrtRuntime,
    engine_cache_key,
    profile_shapes,
    validate_precision,
)

SHAPE = ["batch", 3, 224, 224]


# --- profile shapes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("batch", "max_batch", "expected"), [
    (1, None, ((1, 3, 224, 224), (1, 3, 224, 224), (1, 3, 224, 224))),
    (8, None, ((1, 3, 224, 224), (8, 3, 224, 224), (8, 3, 224, 224))),
    (8, 32, ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))),
    (8, 4, ((1, 3, 224, 224), (8, 3, 224, 224), (8, 3, 224, 224))),  # max never below the opt batch
])
def test_profile_shapes_dynamic_batch(batch, max_batch, expected):
    assert profile_shapes(SHAPE, batch, max_batch) == ProfileShapes(*expected)


def test_profile_shapes_fixed_batch_pins_all_three():
    fixed = (8, 3, 224, 224)
    assert profile_shapes([8, 3, 224, 224], 8, 64) == ProfileShapes(fixed, fixed, fixed)


@pytest.mark.parametrize(("shape", "batch", "max_batch", "match"), [
    ([8, 3, 224, 224], 4, None, "fixed batch of 8"),
    (["batch", 3, "h", "w"], 1, None, "only the batch dimension"),
    (SHAPE, 0, None, ">= 1"),
    (SHAPE, 1, 0, ">= 1"),
])
def test_profile_shapes_rejects(shape, batch, max_batch, match):
    with pytest.raises(ValueError, match=match):
        profile_shapes(shape, batch, max_batch)


# --- precision ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_validate_precision_accepts(precision):
    validate_precision(precision, TrtOptions())


def test_validate_precision_int8_needs_calibration(tmp_path):
    with pytest.raises(ValueError, match="calibration_data"):
        validate_precision("int8", TrtOptions())
    with pytest.raises(ValueError, match="does not exist"):
        validate_precision("int8", TrtOptions(calibration_data=str(tmp_path / "missing.npy")))
    data = tmp_path / "calib.npy"
    np.save(data, np.zeros((2, 3, 8, 8), np.float32))
    validate_precision("int8", TrtOptions(calibration_data=str(data)))


def test_validate_precision_rejects_unknown():
    with pytest.raises(ValueError, match="choose one of fp32, fp16, int8"):
        validate_precision("bf16", TrtOptions())


# --- engine cache key -----------------------------------------------------------------------------------
KEY_ARGS = {
    "onnx_sha256": "a" * 64,
    "trt_version": "10.9.0",
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0",
    "precision": "fp16",
    "profile": profile_shapes(SHAPE, 8, 32),
    "flags": {"tf32": False, "workspace_mb": None},
}


def test_cache_key_is_stable_sha256():
    import re

    key = engine_cache_key(**KEY_ARGS)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert engine_cache_key(**dict(KEY_ARGS)) == key  # the same inputs give the same key again
    reordered = {**KEY_ARGS, "flags": {"workspace_mb": None, "tf32": False}}
    assert engine_cache_key(**reordered) == key


@pytest.mark.parametrize(("field", "value"), [
    ("onnx_sha256", "b" * 64),
    ("trt_version", "10.10.0"),
    ("gpu_name", "NVIDIA L4"),
    ("compute_capability", "8.9"),
    ("precision", "fp32"),
    ("profile", profile_shapes(SHAPE, 8, 64)),
    ("flags", {"tf32": True, "workspace_mb": None}),
])
def test_cache_key_changes_with_every_input(field, value):
    assert engine_cache_key(**{**KEY_ARGS, field: value}) != engine_cache_key(**KEY_ARGS)


def test_engine_cache_folder_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PADDLE_ONNX_BENCH_CACHE", str(tmp_path))
    assert EngineCache("trt").folder == tmp_path / "trt-engines"
    monkeypatch.delenv("PADDLE_ONNX_BENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert EngineCache("trt").folder == tmp_path / "xdg" / "paddle-onnx-bench" / "trt-engines"
    assert EngineCache("trt", tmp_path / "mine").folder == tmp_path / "mine"


def test_engine_cache_round_trip_is_atomic_and_described(tmp_path):
    cache = EngineCache("ov", tmp_path)
    path = cache.path("Model x/int8", "ab" * 32, ".blob")
    assert path.parent == tmp_path and path.name == f"Model_x_int8-{'ab' * 8}.blob"
    assert cache.get(path) is None
    cache.put(path, b"engine-bytes", {"key": "ab" * 32})
    assert cache.get(path) == b"engine-bytes"
    assert path.with_suffix(".json").read_text().count("abab") and not list(tmp_path.glob(".*"))


# --- the adapter without TensorRT -----------------------------------------------------------------------
def test_module_imports_without_tensorrt():
    code = "import sys, runtimes.trt; assert 'tensorrt' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_constructor_checks_options_without_tensorrt():
    TrtRuntime(RuntimeOptions(device="cuda:0"))  # cheap: no import, no device work
    with pytest.raises(ValueError, match="does not support device 'cpu'"):
        TrtRuntime(RuntimeOptions(device="cpu"))
    with pytest.raises(OptionError, match="calibration_data"):
        TrtRuntime(RuntimeOptions(device="cuda", precision="int8"))
    with pytest.raises(OptionError, match="choose one of fp32, fp16, int8"):
        TrtRuntime(RuntimeOptions(device="cuda", precision="bf16"))
    with pytest.raises(OptionError, match="unknown option 'workspace' for runtime 'trt'"):
        TrtRuntime(RuntimeOptions(device="cuda", extra={"workspace": 1024}))


def test_missing_tensorrt_is_reported(onnx_artifact):
    if is_installed("tensorrt"):
        pytest.skip("tensorrt is installed here, so the missing-package path cannot be observed")
    assert TrtRuntime.probe() == runtimes.probe("trt")
    assert TrtRuntime.probe().reason == TRT_MISSING
    rt = TrtRuntime(RuntimeOptions(device="cuda"))
    with pytest.raises(RuntimeUnavailable, match=r"pip install -e \.\[trt\]"):
        rt.load(Artifact.from_manifest(onnx_artifact))
    rt.close()


# --- the real build/run path (NVIDIA GPU + TensorRT) ----------------------------------------------------
@pytest.fixture
def trt_ready():
    pytest.importorskip("tensorrt", reason="TensorRT not installed: the TensorRT path needs an NVIDIA GPU")
    availability = TrtRuntime.probe()
    if not availability.available:
        pytest.skip(f"TensorRT cannot run here: {availability.reason}")


def _run_trt(artifact: Artifact, cache: Path, batch: int = 2, **options):
    """Build (or load) and run once; returns (output, the closed runtime, the feed)."""
    extra = {"engine_cache_dir": str(cache), **options.pop("extra", {})}
    rt = TrtRuntime(RuntimeOptions(device="cuda", batch=batch, extra=extra, **options))
    feed = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    with rt:
        rt.load(artifact)
        rt.prepare({artifact.input_name: feed})
        rt.run()
        assert rt.device_time_ms() > 0
        out = rt.outputs()[artifact.output_name]
    return out, rt, feed


def _ort_cpu(artifact: Artifact, feed: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact.onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {artifact.input_name: feed})[0]


@pytest.mark.gpu
def test_trt_fp32_matches_ort_and_caches(trt_ready, onnx_artifact, tmp_path):
    artifact = Artifact.from_manifest(onnx_artifact)
    out, rt, feed = _run_trt(artifact, tmp_path, max_batch=4)
    assert rt.effective["engine_cache_hit"] is False and rt.effective["tf32"] is False
    assert rt.effective["profile"] == {"min": [1, 3, 32, 32], "opt": [2, 3, 32, 32], "max": [4, 3, 32, 32]}
    np.testing.assert_allclose(out, _ort_cpu(artifact, feed), atol=1e-4)
    again, rt2, _ = _run_trt(artifact, tmp_path, max_batch=4)
    assert rt2.effective["engine_cache_hit"] is True
    np.testing.assert_array_equal(again, out)
    assert rt2.versions()["tensorrt"]


@pytest.mark.gpu
def test_trt_fp16_is_close(trt_ready, onnx_artifact, tmp_path):
    artifact = Artifact.from_manifest(onnx_artifact)
    out, rt, feed = _run_trt(artifact, tmp_path, precision="fp16")
    assert rt.effective["precision"] == "fp16"
    np.testing.assert_allclose(out, _ort_cpu(artifact, feed), atol=5e-2)


@pytest.mark.gpu
def test_trt_rejects_a_batch_outside_the_profile(trt_ready, onnx_artifact, tmp_path):
    artifact = Artifact.from_manifest(onnx_artifact)
    rt = TrtRuntime(RuntimeOptions(device="cuda", batch=2, extra={"engine_cache_dir": str(tmp_path)}))
    with rt:
        rt.load(artifact)
        with pytest.raises(ValueError, match="outside the engine profile"):
            rt.prepare({artifact.input_name: np.zeros((3, 3, 32, 32), np.float32)})
