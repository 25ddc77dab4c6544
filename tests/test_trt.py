"""TensorRT adapter: the pure rules (run anywhere, no TensorRT) and the adapter without TensorRT.

The real build/run path (TensorRT 10 and an NVIDIA GPU) is tested in tests/test_gpu.py.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_44, write_manifest

import runtimes
import runtimes.trt_build
from core.artifact import Artifact
from core.preprocess import Preprocess
from runtimes.base import OptionError, Runtime, RuntimeOptions, RuntimeUnavailable, SilentChangeError
from runtimes.cuda import release
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
from runtimes.trt_build import (
    build_plan,
    check_tensorrt_version,
    layer_precisions,
    precision_ran,
    tensorrt_cuda_info,
    trt_logger,
)
from runtimes.trt_calibration import (
    BUNDLED,
    CalibrationDataError,
    calibration_batch,
    calibration_cache_key,
    load_calibration_data,
    validate_calibration_data,
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


# --- precision: what is built for what is asked, and what is recorded ---------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_validate_precision_accepts(precision):
    validate_precision(precision, TrtOptions())  # int8 calibrates on the export's images by default


def test_validate_precision_checks_calibration_paths(tmp_path):
    with pytest.raises(OptionError, match="does not exist"):
        validate_precision("int8", TrtOptions(calibration_data=str(tmp_path / "missing.npy")))
    validate_precision("int8", TrtOptions(calibration_data="export"))
    data = tmp_path / "calib.npy"
    np.save(data, np.zeros((2, 3, 8, 8), np.float32))
    validate_precision("int8", TrtOptions(calibration_data=str(data)))


def test_validate_precision_rejects_unknown():
    with pytest.raises(OptionError, match="choose one of fp32, fp16, int8"):
        validate_precision("bf16", TrtOptions())


@pytest.mark.parametrize(("asked", "model", "flags", "quantization"), [
    ("fp32", "fp32", (), None),
    ("fp16", "fp32", ("FP16",), None),
    ("int8", "fp32", ("INT8", "FP16"), "calibration"),  # never INT8 alone: the rest would stay fp32
    ("fp16", "fp16", ("FP16",), None),
    ("int8", "int8", ("INT8", "FP16"), "qdq"),  # the QDQ model's own scales
])
def test_build_plan(asked, model, flags, quantization):
    plan = build_plan(asked, model, None)
    assert (plan.builder_flags, plan.quantization) == (flags, quantization)


@pytest.mark.parametrize(("asked", "model"), [("fp32", "fp16"), ("fp32", "int8"), ("fp16", "int8"),
                                              ("int8", "fp16")])
def test_build_plan_refuses_to_change_a_reduced_model(asked, model):
    with pytest.raises(SilentChangeError, match=f"the model file is {model}"):
        build_plan(asked, model, None)


def test_a_qdq_model_takes_no_calibration_data():
    with pytest.raises(OptionError, match="carries its scales"):
        build_plan("int8", "int8", "calib.npy")


def inspector_json(*datatypes: str) -> str:
    """The TensorRT 10 engine inspector's JSON (DETAILED) for layers whose first output has these types."""
    layers = [{"Name": f"layer{i}", "LayerType": "CaskConvolution",
               "Inputs": [{"Name": "in", "Format/Datatype": "Row major linear FP32"}],
               "Outputs": [{"Name": f"out{i}", "Format/Datatype": t}]} for i, t in enumerate(datatypes)]
    return json.dumps({"Layers": layers, "Bindings": ["input", "output"]})


def test_layer_precisions_counts_what_was_built():
    text = inspector_json("Channel major INT8 format where channel % 32 == 0",
                          "Two wide channel vectorized row major FP16 format", "Row major linear FP32",
                          "Row major linear Int8 format")
    assert layer_precisions(text) == {"int8": 2, "fp16": 1, "fp32": 1}
    assert layer_precisions(json.dumps({"Layers": [{"Outputs": [{"DataType": "Half", "Format": "kLINEAR"}]}]})) \
        == {"fp16": 1}
    assert layer_precisions(json.dumps({"Layers": ["conv1", "relu1"]})) == {"unknown": 2}  # LAYER_NAMES_ONLY


@pytest.mark.parametrize(("asked", "layers", "tf32", "expected"), [
    ("int8", {"int8": 40, "fp16": 12}, False, ("int8", "int8 40, fp16 12")),
    ("int8", {"fp16": 52}, False, ("fp16", None)),  # int8 asked, no int8 layer: never recorded as int8
    ("fp16", {"fp16": 30, "fp32": 2, "int32": 3}, False, ("fp16", "fp16 30, fp32 2")),
    ("fp32", {"fp32": 30}, False, ("fp32", None)),
    ("fp32", {"fp32": 30}, True, ("tf32", None)),
    ("int8", {"unknown": 10}, False, ("int8", None)),
])
def test_precision_ran_is_what_the_layers_say(asked, layers, tf32, expected):
    assert precision_ran(asked, layers, tf32) == expected


@pytest.mark.parametrize(("version", "ok"), [("10.16.1.11", True), ("10.13.2.6", True), ("11.4.0.106", False),
                                             ("8.6.1", False)])
def test_only_tensorrt_10_is_supported(version, ok):
    problem = check_tensorrt_version(version)
    assert (problem is None) == ok
    if not ok:
        assert "supports TensorRT 10.x only" in problem and "<11" in problem


def test_cuda_info_is_not_cuda_pythons():
    info = tensorrt_cuda_info()  # cuda-python's cudaRuntimeGetVersion is its own static build, never used
    assert "cuda_runtime" not in info
    assert info.get("cudart_loaded", "").startswith("none shared") or any(k.startswith("cudart_loaded:")
                                                                           for k in info)


# --- calibration data ---------------------------------------------------------------------------------------
def images(n, c=3, h=224, w=224, dtype=np.float32):
    return np.random.default_rng(0).standard_normal((n, c, h, w)).astype(dtype)


@pytest.mark.parametrize(("data", "match"), [
    (images(8, h=256, w=256), r"\(N, 3, 256, 256\) but the model input is \(N, 3, 224, 224\)"),
    (images(8, c=1), "but the model input"),
    (images(8)[:, 0], r"expected \(N, 3, 224, 224\)"),
    (np.zeros((3, 224, 224, 3), np.float32), "but the model input"),  # NHWC
    (images(4).astype(np.complex64), "dtype complex64"),
])
def test_calibration_shape_and_type_are_checked(data, match):
    with pytest.raises(CalibrationDataError, match=match):
        validate_calibration_data(data, SHAPE, batch=1)


def test_calibration_needs_one_full_batch_and_finite_values():
    with pytest.raises(CalibrationDataError, match=r"has 4 image\(s\); one calibration batch needs 8"):
        validate_calibration_data(images(4), SHAPE, batch=8)
    data = images(4)
    data[2, 0, 0, 0] = np.nan
    with pytest.raises(CalibrationDataError, match="NaN"):
        validate_calibration_data(data, SHAPE, batch=1)


def test_calibration_drops_the_partial_batch_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="runtimes.trt"):
        out = validate_calibration_data(images(44).astype(np.float64), [8, 3, 224, 224], batch=8)
    assert out.shape == (40, 3, 224, 224) and out.dtype == np.float32 and out.flags.c_contiguous
    assert "last 4 calibration image(s)" in caplog.text


@pytest.mark.parametrize(("shape", "expected"), [(SHAPE, 1), ([8, 3, 224, 224], 8), ([-1, 3, 32, 32], 1)])
def test_calibration_batch_does_not_follow_the_timing_batch(shape, expected):
    assert calibration_batch(shape) == expected


@pytest.fixture
def calibration_artifact(tmp_path, onnx_artifact) -> Artifact:
    """The tiny model with a manifest naming 3 of the bundled images as its evaluation images (32x32 crop)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for image in sorted((DATA_44 / "images").iterdir())[:3]:
        shutil.copy(image, folder / image.name)
    shutil.copy(onnx_artifact.parent / "model.onnx", tmp_path / "model.onnx")
    preprocess = Preprocess(resize_short=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return Artifact.from_manifest(write_manifest(tmp_path, preprocess=preprocess,
                                                 reference={"images": {"file": None, "folder": str(folder)}}))


def test_int8_calibrates_on_the_exports_images_when_asked(calibration_artifact):
    data, described = load_calibration_data("export", calibration_artifact)
    assert data.shape == (3, 3, 32, 32) and data.dtype == np.float32
    assert described["source"] == "export images" and described["images"] == 3 and described["batch"] == 1
    again, same = load_calibration_data(described["folder"], calibration_artifact)  # the folder, named
    np.testing.assert_array_equal(again, data)
    key = calibration_cache_key("a" * 64, described, "10.16.1.11")
    assert key == calibration_cache_key("a" * 64, same, "10.16.1.11")  # one cache for every timing batch


def test_calibration_from_a_npy_and_its_errors(tmp_path, onnx_artifact):
    artifact = Artifact.from_manifest(onnx_artifact)  # no preprocessing, no evaluation images
    with pytest.raises(CalibrationDataError, match="evaluation images .* are not here; pass calibration_data"):
        load_calibration_data("export", artifact)
    path = tmp_path / "calib.npy"
    np.save(path, images(5, h=32, w=32))
    data, described = load_calibration_data(str(path), artifact)
    assert data.shape == (5, 3, 32, 32) and described["sha256"] and described["source"] == str(path)
    np.save(path, images(5))
    with pytest.raises(CalibrationDataError, match=r"but the model input is \(N, 3, 32, 32\)"):
        load_calibration_data(str(path), artifact)


# --- the logger, teardown ------------------------------------------------------------------------------------
def stand_in_trt():
    """The two TensorRT names the logger uses (TensorRT itself cannot be installed without a GPU index)."""

    class ILogger:
        created = 0
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            ILogger.created += 1

    return types.SimpleNamespace(ILogger=ILogger)


def test_one_logger_per_process(monkeypatch, caplog):
    monkeypatch.setattr(runtimes.trt_build, "_LOGGER", None)
    trt = stand_in_trt()
    first = trt_logger(trt)
    del first
    gc.collect()
    second = trt_logger(trt)  # a second runtime gets the same, still alive object: TensorRT kept its pointer
    assert second is trt_logger(trt) and trt.ILogger.created == 1
    with caplog.at_level(logging.WARNING, logger="runtimes.trt"):
        second.log(trt.ILogger.Severity.WARNING, "weights are fp32")
    assert "tensorrt: weights are fp32" in caplog.text


def test_release_runs_every_step_and_reports_failures():
    freed = []

    def free(name):
        if name == "input":
            raise RuntimeError("CUDA error: cudaErrorIllegalAddress")
        freed.append(name)

    errors = release([(name, lambda n=name: free(n)) for name in ("sync", "input", "output", "event", "stream")])
    assert freed == ["sync", "output", "event", "stream"]  # nothing leaked after the failure
    assert errors == ["input: RuntimeError: CUDA error: cudaErrorIllegalAddress"]


class FailingClose(Runtime):
    """A runtime whose teardown fails, to check what the base class does with that error."""

    name = "failing-close"
    closes = 0

    @classmethod
    def probe(cls, device=None):
        raise NotImplementedError

    def _load(self, artifact): ...
    def _prepare(self, feeds): ...
    def _run(self): ...
    def _outputs(self): ...

    def _close(self):
        FailingClose.closes += 1
        raise RuntimeError("trt: close() could not release everything: cudaFree(input): ...")


def test_a_close_error_never_replaces_the_error_in_flight(caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="batch 3 is outside"):
        with FailingClose(RuntimeOptions()):
            raise ValueError("trt: batch 3 is outside the engine profile")
    assert "close() failed while ValueError propagates" in caplog.text
    rt = FailingClose(RuntimeOptions())
    with pytest.raises(RuntimeError, match="could not release everything"), rt:
        pass  # nothing in flight: the close error is the error
    before = FailingClose.closes
    rt.close()  # not retried: a second release would free twice
    assert FailingClose.closes == before


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
    code = "import sys, runtimes.trt; assert 'tensorrt' not in sys.modules and 'cuda' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_constructor_checks_options_without_tensorrt(tmp_path):
    TrtRuntime(RuntimeOptions(device="cuda:0"))  # cheap: no import, no device work
    TrtRuntime(RuntimeOptions(device="cuda", precision="int8"))  # calibrates on the export's images
    with pytest.raises(ValueError, match="does not support device 'cpu'"):
        TrtRuntime(RuntimeOptions(device="cpu"))
    with pytest.raises(OptionError, match="calibration data .* does not exist"):
        TrtRuntime(RuntimeOptions(device="cuda", precision="int8",
                                  extra={"calibration_data": str(tmp_path / "none.npy")}))
    with pytest.raises(OptionError, match="choose one of fp32, fp16, int8"):
        TrtRuntime(RuntimeOptions(device="cuda", precision="bf16"))
    with pytest.raises(OptionError, match="unknown option 'workspace' for runtime 'trt'"):
        TrtRuntime(RuntimeOptions(device="cuda", extra={"workspace": 1024}))
    TrtRuntime(RuntimeOptions(device="cuda")).close()  # closing what never loaded frees nothing, raises nothing


def test_missing_tensorrt_is_reported(onnx_artifact):
    if is_installed("tensorrt"):
        pytest.skip("tensorrt is installed here, so the missing-package path cannot be observed")
    assert TrtRuntime.probe() == runtimes.probe("trt")
    assert TrtRuntime.probe().reason == TRT_MISSING
    assert "TensorRT 10.x: tensorrt-cu13>=10.13.2,<11" in TRT_MISSING  # `bench list` says what is supported
    rt = TrtRuntime(RuntimeOptions(device="cuda"))
    with pytest.raises(RuntimeUnavailable, match=r"pip install -e \.\[trt\]"):
        rt.load(Artifact.from_manifest(onnx_artifact))
    rt.close()


@pytest.mark.slow
def test_int8_calibrates_on_the_bundled_images_by_default(calibration_artifact):
    """The default is the bundled calibration set the ov/ort int8 exports use, apart from the evaluation images;
    the evaluation images only when asked ("export"), and then the description says so."""
    data, described = load_calibration_data(BUNDLED, calibration_artifact)
    assert data.shape == (125, 3, 32, 32) and described["source"] == "bundled calibration images"
    assert "calibrated_on_evaluation_images" not in described
    _, asked = load_calibration_data("export", calibration_artifact)
    assert asked["calibrated_on_evaluation_images"] is True
