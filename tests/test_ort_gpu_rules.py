"""The rules of runtimes.ort_gpu that need no GPU: which onnxruntime packages overwrite each other, the
providers and options a GPU session is created with, and what TF32 setting is recorded."""

from __future__ import annotations

import os

import pytest

from runtimes.base import RuntimeOptions
from runtimes.cuda import mapped_libraries
from runtimes.ort import OrtRuntime
from runtimes.ort_gpu import (
    clash_reason,
    ort_distributions,
    provider_list,
    tensorrt_options,
    tf32_effective,
)
from runtimes.ort_placement import CPU, CUDA, TENSORRT


def site(folder, *distributions: str, package: bool = True):
    """A site-packages folder where each ``name==version`` installed ``onnxruntime/__init__.py``."""
    if package:
        (folder / "onnxruntime").mkdir(parents=True, exist_ok=True)
        (folder / "onnxruntime" / "__init__.py").write_text("")
    for dist in distributions:
        name, version = dist.split("==")
        info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "RECORD").write_text("onnxruntime/__init__.py,,\n")
    return str(folder)


def test_two_onnxruntime_packages_in_one_folder_are_a_clash(tmp_path):
    both = site(tmp_path / "both", "onnxruntime==1.31.1", "onnxruntime-gpu==1.31.1")
    found = ort_distributions([both])
    assert found == ["onnxruntime-gpu==1.31.1", "onnxruntime==1.31.1"]
    reason = clash_reason(found)
    assert "overwrite each other's files" in reason and "pip uninstall -y onnxruntime-gpu onnxruntime" in reason


def test_a_shadowed_package_elsewhere_is_no_clash(tmp_path):
    """A `pip --target` folder ahead of site-packages shadows the other install; it overwrites nothing."""
    target = site(tmp_path / "target", "onnxruntime-gpu==1.31.1")
    below = site(tmp_path / "site", "onnxruntime==1.31.1")
    assert ort_distributions([target, below]) == ["onnxruntime-gpu==1.31.1"]
    assert ort_distributions([str(tmp_path / "nothing")]) == []


def test_cuda_is_always_told_whether_tf32_may_run():
    assert provider_list(CUDA, 1, tf32=False, strict=False) == [
        (CUDA, {"device_id": "1", "use_tf32": "0"}), CPU]
    assert provider_list(TENSORRT, 0, tf32=True, strict=True, trt_options={"trt_fp16_enable": "0"}) == [
        (TENSORRT, {"device_id": "0", "trt_fp16_enable": "0"}), (CUDA, {"device_id": "0", "use_tf32": "1"})]


@pytest.mark.parametrize(("precision", "fp16", "int8"), [("fp32", "0", "0"), ("fp16", "1", "0"), ("int8", "1", "1")])
def test_tensorrt_provider_builds_the_model_files_precision(precision, fp16, int8):
    options = tensorrt_options(precision, None)
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (fp16, int8)
    assert tensorrt_options("fp32", "/cache")["trt_engine_cache_path"] == "/cache"


class ReadBack:
    """What InferenceSession.get_provider_options() returns (strings, as ORT reports them)."""

    def __init__(self, options):
        self.options = options

    def get_provider_options(self):
        return self.options


@pytest.mark.parametrize(("reported", "precision", "expected"), [
    ({CUDA: {"use_tf32": "0"}}, "fp32", (False, "fp32")),
    ({CUDA: {"use_tf32": "1"}}, "fp32", (True, "tf32")),
    ({CUDA: {}}, "fp32", (None, "tf32")),  # not reported: ORT's default (TF32) is assumed, never fp32
    ({CUDA: {"use_tf32": "1"}}, "fp16", (True, "fp16")),  # an fp16 model runs fp16 whatever TF32 says
])
def test_the_recorded_precision_is_what_was_read_back(monkeypatch, reported, precision, expected):
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    fields, ran = tf32_effective(ReadBack({**reported, CPU: {}}), CUDA, precision)
    assert (fields["tf32"], ran) == expected and CPU not in fields["provider_options"]


def test_tensorrt_provider_fp32_is_tf32_unless_overridden(monkeypatch):
    session = ReadBack({TENSORRT: {}, CUDA: {"use_tf32": "0"}})
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "1")
    assert tf32_effective(session, TENSORRT, "fp32")[1] == "tf32"
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    fields, ran = tf32_effective(session, TENSORRT, "fp32")
    assert ran == "fp32" and fields["tensorrt_tf32"] is False


def test_tensorrt_provider_fp32_asks_for_ieee_fp32_before_anything_loads(monkeypatch):
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "unset-by-the-test")
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE")  # restored to its original state after the test
    OrtRuntime(RuntimeOptions(device="cuda", extra={"provider": "tensorrt", "tf32": True}))
    OrtRuntime(RuntimeOptions(device="cuda", precision="fp16", extra={"provider": "tensorrt"}))
    OrtRuntime(RuntimeOptions(device="cuda"))  # the CUDA provider has use_tf32 instead
    assert "NVIDIA_TF32_OVERRIDE" not in os.environ
    loaded = mapped_libraries(r"^lib(nvinfer|cublas)")  # by an earlier test, in an onnxruntime-gpu environment
    rt = OrtRuntime(RuntimeOptions(device="cuda", extra={"provider": "tensorrt"}))
    if loaded:  # too late to be sure the libraries read it: said, and recorded as tf32 by tf32_effective
        assert "NVIDIA_TF32_OVERRIDE" not in os.environ and "already loaded" in rt._tf32_note
    else:
        assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0" and rt._tf32_note is None
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "1")  # the user's choice is kept, and said
    rt = OrtRuntime(RuntimeOptions(device="cuda", extra={"provider": "tensorrt"}))
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "1" and "NVIDIA_TF32_OVERRIDE=1" in rt._tf32_note
