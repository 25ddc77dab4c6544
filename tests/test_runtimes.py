"""Runtime registry and adapter contract, on the real packages (no mocks) and the tiny exported conv net.

Every ORT and OpenVINO output is compared with Paddle Inference on the original Paddle model, the ground
truth the export must preserve. GPU-only paths are covered by tests/test_trt.py and by the CUDA-absent
errors checked here.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import runtimes
from core.artifact import Artifact
from core.cpu import cpu_flags, float_precision_run
from runtimes.base import (
    LifecycleError,
    OptionError,
    Runtime,
    RuntimeOptions,
    RuntimeUnavailable,
    SilentChangeError,
    parse_options,
)
from runtimes.deps import is_installed
from runtimes.host import default_threads
from runtimes.ort import PROVIDER_TABLE, PROVIDERS, provider_for
from runtimes.ort_placement import placement_verdict
from runtimes.trt import TRT_MISSING

CONTRACT = ["paddle", "ort", "ov", "null"]
FP32_ATOL = 1e-4
OV_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}  # OPTIMIZATION_CAPABILITIES names
CONTRACT_PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n == "paddle" else n for n in CONTRACT]


def make_feed(artifact: Artifact, batch: int) -> dict[str, np.ndarray]:
    data = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    return {artifact.input_name: data}


def infer(name: str, artifact: Artifact, batch: int = 1, **options) -> tuple[np.ndarray, Runtime]:
    """Run ``name`` once on the seeded batch; returns its output and the (closed) runtime for inspection."""
    rt = runtimes.get_runtime(name)(RuntimeOptions(batch=batch, **options))
    with rt:
        rt.load(artifact)
        rt.prepare(make_feed(artifact, batch))
        rt.run()
        out = rt.outputs()[artifact.output_name]
    return out, rt


@pytest.fixture(scope="module")
def artifact(onnx_artifact) -> Artifact:
    """Fast tier: an ONNX-only artifact (no paddle)."""
    return Artifact.from_manifest(onnx_artifact)


@pytest.fixture(scope="module")
def paddle_artifact(tiny_artifact) -> Artifact:
    """Full tier: a real Paddle model beside its paddle2onnx export."""
    return Artifact.from_manifest(tiny_artifact)


@pytest.fixture(scope="module")
def paddle_reference(paddle_artifact):
    """Paddle Inference's own outputs per batch size: what every ONNX runtime must reproduce."""
    return {batch: infer("paddle", paddle_artifact, batch)[0] for batch in (1, 3)}


# --- registry -------------------------------------------------------------------------------------------
def test_list_runtimes_hides_test_runtimes():
    assert runtimes.list_runtimes() == ["ort", "ov", "paddle", "trt"]
    assert "null" in runtimes.list_runtimes(include_test=True)


@pytest.mark.parametrize(("alias", "name"), [("onnxruntime", "ort"), ("openvino", "ov"), ("tensorrt", "trt"),
                                             ("ORT", "ort")])
def test_aliases_resolve(alias, name):
    assert runtimes.canonical_name(alias) == name
    assert runtimes.get_runtime(alias) is runtimes.get_runtime(name)


def test_unknown_runtime_error_lists_known_names():
    with pytest.raises(ValueError, match="unknown runtime 'nope'") as info:
        runtimes.get_runtime("nope")
    for name in ("paddle", "ort", "ov", "trt"):
        assert name in str(info.value)
    assert not runtimes.probe("nope").available


def test_probe_trt_says_why():
    if is_installed("tensorrt"):
        pytest.skip("tensorrt is installed here, so the missing-package reason cannot be observed")
    availability = runtimes.probe("trt")
    assert not availability.available
    assert availability.reason == TRT_MISSING
    assert "pip install -e .[trt]" in availability.reason


@pytest.mark.parametrize("name", [pytest.param("paddle", marks=pytest.mark.slow), "ort", "ov", "null"])
def test_probe_installed_runtimes_available(name):
    availability = runtimes.probe(name)
    assert availability.available, availability.reason  # these packages are part of the test environment
    assert availability.detail


@pytest.mark.slow  # probing paddle imports it
def test_probe_all_covers_every_listed_runtime():
    assert set(runtimes.probe_all()) == set(runtimes.list_runtimes())


def test_importing_runtimes_imports_no_engine():
    code = (
        "import sys, runtimes, runtimes.ort, runtimes.ov, runtimes.paddle, runtimes.trt, runtimes.null\n"
        "runtimes.list_runtimes(); runtimes.probe('trt')\n"
        "heavy = [m for m in ('paddle', 'onnxruntime', 'openvino', 'tensorrt') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A real installed-distribution layout on sys.path declaring one good and two broken runtime plugins."""
    (tmp_path / "fake_rt_plugin.py").write_text(textwrap.dedent("""
        from runtimes.null import NullRuntime

        class FakeRuntime(NullRuntime):
            name = "fake"
    """))
    dist = tmp_path / "fake_rt_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-rt-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{runtimes.ENTRY_POINT_GROUP}]\n"
        "fake = fake_rt_plugin:FakeRuntime\n"
        "broken = no_such_module_xyz:Runtime\n"
        "ort = fake_rt_plugin:FakeRuntime\n"  # collides with a built-in: ignored
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    runtimes.refresh_plugins()
    yield tmp_path
    monkeypatch.undo()
    runtimes.refresh_plugins()


def test_entry_point_plugins(plugin_dir, caplog):
    caplog.set_level(logging.WARNING, logger="runtimes")
    assert {"fake", "broken"} <= set(runtimes.list_runtimes())
    assert runtimes.get_runtime("fake").__name__ == "FakeRuntime"
    assert runtimes.get_runtime("ort").__name__ == "OrtRuntime"
    assert "a built-in runtime has that name" in caplog.text
    broken = runtimes.probe("broken")  # must not raise
    assert not broken.available and "no_such_module_xyz" in broken.reason
    with pytest.raises(RuntimeUnavailable, match="no_such_module_xyz"):
        runtimes.get_runtime("broken")
    assert "failed to load" in caplog.text


# --- the contract, for every CPU runtime ----------------------------------------------------------------
def contract_artifact(name: str, request) -> Artifact:
    """paddle runs the Paddle model beside an export (full tier); the others run ONNX alone."""
    return request.getfixturevalue("paddle_artifact" if name == "paddle" else "artifact")


@pytest.mark.parametrize("name", CONTRACT_PARAMS)
def test_lifecycle_order_errors(name, request):
    artifact = contract_artifact(name, request)
    rt = runtimes.get_runtime(name)(RuntimeOptions())
    with pytest.raises(LifecycleError):
        rt.run()
    with pytest.raises(LifecycleError):
        rt.prepare(make_feed(artifact, 1))
    rt.load(artifact)
    with pytest.raises(LifecycleError, match="prepare"):
        rt.run()
    with pytest.raises(LifecycleError):
        rt.outputs()
    with pytest.raises(LifecycleError):
        rt.load(artifact)
    rt.close()


@pytest.mark.parametrize("name", CONTRACT_PARAMS)
def test_close_is_idempotent(name, request):
    _, rt = infer(name, contract_artifact(name, request))
    rt.close()
    rt.close()
    with pytest.raises(LifecycleError):
        rt.run()
    runtimes.get_runtime(name)(RuntimeOptions()).close()  # closing a never-loaded runtime is fine too


@pytest.mark.parametrize("name", CONTRACT_PARAMS)
def test_effective_records_device_precision_and_batch(name, request):
    _, rt = infer(name, contract_artifact(name, request), 3)
    assert {"device", "precision", "batch"} <= set(rt.effective) and rt.effective["batch"] == 3


def test_ort_and_ov_agree_at_fp32(artifact):
    for batch in (1, 3):
        ort_out, _ = infer("ort", artifact, batch)
        ov_out, _ = infer("ov", artifact, batch)
        assert ort_out.shape == (batch, 10)
        assert float(np.max(np.abs(ort_out - ov_out))) <= FP32_ATOL


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", ["ort", "ov"])
def test_outputs_match_paddle(name, batch, paddle_artifact, paddle_reference):
    out, rt = infer(name, paddle_artifact, batch)
    expected = paddle_reference[batch]
    assert out.shape == expected.shape == (batch, 10)
    diff = float(np.max(np.abs(out - expected)))
    assert diff <= FP32_ATOL, f"{name} differs from Paddle by {diff:g} at fp32"
    assert rt.effective["batch"] == batch
    assert rt.effective["precision"] == "fp32"


@pytest.mark.slow
def test_paddle_records_its_settings(paddle_artifact, paddle_reference):
    out, rt = infer("paddle", paddle_artifact, 3, threads=1)
    np.testing.assert_array_equal(out, paddle_reference[3])  # deterministic across predictors
    assert rt.effective["onednn"] is True
    assert rt.effective["ir_optim"] is True
    assert rt.effective["threads"] == 1
    assert rt.versions()["paddlepaddle"]


def test_null_outputs_zeros_of_the_declared_shape(artifact):
    out, rt = infer("null", artifact, 3)
    assert out.shape == (3, 10) and not out.any()
    assert any("harness overhead" in note for note in rt.notes)


@pytest.mark.parametrize(("name", "precision", "allowed"), [
    ("ort", "bf16", "fp32, fp16, int8"),
    ("paddle", "bf16", "fp32"),
    ("ov", "fp64", "fp32, bf16, fp16, int8"),
])
def test_unknown_precision_names_allowed(name, precision, allowed):
    with pytest.raises(OptionError, match=f"choose one of {allowed}"):
        runtimes.get_runtime(name)(RuntimeOptions(precision=precision))


@pytest.mark.parametrize("name", ["paddle", "ov"])
def test_unsupported_device_names_allowed(name):
    with pytest.raises(ValueError, match="does not support device 'cuda'"):
        runtimes.get_runtime(name)(RuntimeOptions(device="cuda"))


# --- ONNX Runtime ---------------------------------------------------------------------------------------
def test_ort_cuda_unavailable_says_how_to_install(artifact):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDAExecutionProvider; the missing-provider error cannot occur")
    rt = runtimes.get_runtime("ort")(RuntimeOptions(device="cuda"))
    hint = r"CUDAExecutionProvider is not in this onnxruntime build.*pip install -e '\.\[gpu\]'"
    with pytest.raises(RuntimeUnavailable, match=hint):
        rt.load(artifact)
    availability = runtimes.probe("ort", device="cuda")
    assert not availability.available and "onnxruntime-gpu" in availability.reason
    listed = runtimes.probe("ort")  # what `bench list` shows: CPU works, the GPU line says why not
    assert listed.available and any("no GPU provider in this onnxruntime build" in n for n in listed.notes)


def test_ort_runs_the_model_files_precision(artifact):
    """ORT cannot lower a model: fp16 asked of an fp32 file is a silent change, refused before any run."""
    rt = runtimes.get_runtime("ort")(RuntimeOptions(precision="fp16"))
    with rt, pytest.raises(SilentChangeError, match="model.onnx of Tiny is fp32, not fp16"):
        rt.load(artifact)


def test_ort_runs_fp16_and_int8_model_files_as_they_are(onnx_artifact, tmp_path):
    from reduced_models import fp16_model, int8_qdq_model

    reference, _ = infer("ort", Artifact.from_manifest(onnx_artifact), 4)
    for make, precision, cosine in ((fp16_model, "fp16", 0.9999), (int8_qdq_model, "int8", 0.9)):
        reduced = Artifact.from_manifest(make(onnx_artifact, tmp_path))
        out, rt = infer("ort", reduced, 4, precision=precision)
        assert rt.effective["precision"] == rt.effective["model_precision"] == precision
        a, b = out.ravel(), reference.ravel()
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= cosine
        with pytest.raises(SilentChangeError, match=f"is {precision}, not fp32"):
            infer("ort", reduced, 1)  # fp32 asked of a reduced file


@pytest.mark.parametrize(("device", "choice", "expected"), [
    ("cpu", None, ("CPUExecutionProvider", 0)),
    ("cuda", None, ("CUDAExecutionProvider", 0)),
    ("cuda:1", None, ("CUDAExecutionProvider", 1)),
    ("cuda", "tensorrt", ("TensorrtExecutionProvider", 0)),
    ("cuda", "trt", ("TensorrtExecutionProvider", 0)),
    ("cuda", "TensorrtExecutionProvider", ("TensorrtExecutionProvider", 0)),
])
def test_ort_provider_selection(device, choice, expected):
    provider, index = provider_for(device, choice)
    assert (provider.ort_name, index) == expected


@pytest.mark.parametrize(("device", "choice", "message"), [
    ("cpu", "cuda", "does not run on device 'cpu'"),
    ("cuda", "rocm", "unknown ORT provider 'rocm'; choose one of cpu, cuda, tensorrt"),
    ("gpu", None, "does not support device 'gpu'"),
])
def test_ort_provider_selection_rejects_mismatches(device, choice, message):
    with pytest.raises(ValueError, match=message):
        provider_for(device, choice)


def test_ort_providers_are_one_table():
    assert [p.key for p in PROVIDER_TABLE] == list(PROVIDERS)
    tensorrt = next(p for p in PROVIDER_TABLE if p.key == "tensorrt")
    assert tensorrt.fallbacks == ("CUDAExecutionProvider",)  # CUDA takes the nodes TensorRT declines


# --- options ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "extra", "message"), [
    ("ov", {"hnt": "throughput"}, "unknown option 'hnt' for runtime 'ov'; allowed: hint, streams"),
    ("ov", {"streams": "two"}, "option streams='two' for runtime 'ov': expected int or null"),
    ("ort", {"strict": True}, "unknown option 'strict' for runtime 'ort'; allowed: provider, strict_placement"),
    ("ort", {"strict_placement": "yes"}, "expected bool"),
    ("paddle", {"threads": 2}, "unknown option 'threads' for runtime 'paddle'; allowed: none"),
    ("null", {"anything": 1}, "allowed: none"),
])
def test_unknown_or_mistyped_options_are_errors(name, extra, message):
    with pytest.raises(OptionError, match=message):
        runtimes.get_runtime(name)(RuntimeOptions(extra=extra))


def test_parse_options_accepts_ints_for_floats_but_not_bools_for_ints():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Knobs:
        ratio: float = 1.0
        count: int = 1

    assert parse_options("x", Knobs, {"ratio": 2, "count": 3}) == Knobs(2, 3)
    with pytest.raises(OptionError, match="expected int"):
        parse_options("x", Knobs, {"count": True})


def test_ort_records_session_settings(artifact):
    _, rt = infer("ort", artifact)
    eff = rt.effective
    assert eff["provider"] == PROVIDERS["cpu"] and eff["providers_active"] == [PROVIDERS["cpu"]]
    assert eff["intra_op_threads"] == default_threads() and eff["inter_op_threads"] == 1
    assert eff["graph_optimization"] == "ORT_ENABLE_ALL" and eff["execution_mode"] == "sequential"
    assert rt.versions()["onnxruntime"]


def test_ort_placement_verdict_on_a_real_profile(artifact, tmp_path):
    """The verdict that guards GPU sessions, fed a real ORT profiling trace of a CPU session."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "p")
    session = ort.InferenceSession(str(artifact.onnx_path), so, providers=["CPUExecutionProvider"])
    session.run(None, make_feed(artifact, 1))
    events = json.loads(Path(session.end_profiling()).read_text())
    verdict = placement_verdict(events, "CPUExecutionProvider")
    assert verdict.ok and set(verdict.placement) == {"CPUExecutionProvider"}
    assert sum(verdict.placement["CPUExecutionProvider"].values()) >= 3  # conv, pooling, gemm at least
    # What a CUDA session that silently came up on CPU records: refused, naming the work that left the GPU.
    silent = placement_verdict(events, "CUDAExecutionProvider")
    assert not silent.ok and "CUDAExecutionProvider left work on CPU: " in silent.problem and "Conv" in silent.problem


# --- OpenVINO -------------------------------------------------------------------------------------------
def _ov_capabilities() -> list[str]:
    import openvino as ov

    return ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_ov_fp32_really_runs_f32(artifact):
    _, rt = infer("ov", artifact, 3)
    eff = rt.effective
    assert eff["precision"] == "fp32"
    assert eff["inference_precision_hint"] == "f32"
    assert set(eff["op_precisions"]) == {"f32"}, eff["op_precisions"]
    assert eff["execution_devices"] == ["CPU"]
    assert eff["performance_hint"] == "LATENCY"
    assert eff["inference_num_threads"] == default_threads()
    assert eff["static_batch"] == 3
    assert rt.versions()["openvino"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_ov_lower_precision_is_reported_honestly(precision, artifact):
    """What runs is what this CPU kind computes (core.cpu.float_precision_run: fp16 itself with AVX512-FP16/AMX,
    bf16 on a CPU with bf16 but no fp16, fp32 on one with neither), and the record says so."""
    expected = float_precision_run(precision, cpu_flags())
    assert OV_CAPABILITY[expected] in _ov_capabilities()  # OpenVINO reads this CPU as the flags do
    fp32, _ = infer("ov", artifact, 3)
    out, rt = infer("ov", artifact, 3, precision=precision)
    assert rt.effective["precision"] == expected
    if expected == precision:
        assert not any("no native" in note for note in rt.notes), rt.notes
    else:  # this CPU lacks the format: OpenVINO runs its stand-in, and the runtime must say so
        (note,) = [n for n in rt.notes if f"no native {precision}" in n]
        assert note.endswith(f"it ran {expected}" + (f"; --precision {expected} asks for it by name"
                                                       if expected != "fp32" else "")), note
        assert not any("not expected to run faster" in n for n in rt.notes), rt.notes
    if expected == "fp32":
        assert rt.effective["inference_precision_hint"] == "f32"
        np.testing.assert_allclose(out, fp32, atol=FP32_ATOL)
    else:
        diff = float(np.max(np.abs(out - fp32)))
        assert 0 < diff <= 0.1 * float(np.max(np.abs(fp32))), diff  # really lower precision, still close


def test_ov_throughput_hint_and_threads_are_read_back(artifact):
    _, rt = infer("ov", artifact, 1, threads=1, extra={"hint": "throughput", "streams": 1})
    assert rt.effective["performance_hint"] == "THROUGHPUT"
    assert rt.effective["num_streams"] == 1
    assert rt.effective["inference_num_threads"] == 1


def test_ov_rejects_a_feed_of_another_batch(artifact):
    rt = runtimes.get_runtime("ov")(RuntimeOptions(batch=1))
    with rt:
        rt.load(artifact)
        with pytest.raises(ValueError, match="options.batch=3"):
            rt.prepare(make_feed(artifact, 3))


def test_ov_rejects_unknown_hint():
    with pytest.raises(OptionError, match="'latency', 'throughput'"):
        runtimes.get_runtime("ov")(RuntimeOptions(extra={"hint": "fastest"}))
