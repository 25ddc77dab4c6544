"""What a first run on an NVIDIA GPU must exercise: ORT's CUDA and TensorRT providers and the TensorRT adapter,
against ORT CPU's outputs. Every test is marked ``gpu`` and skips, with the probe's reason, where the
provider cannot run (here: no GPU). ``benchmarks/gpu_check.sh`` runs them (``pytest -m gpu``).

Models: the tiny conv net (``onnx_artifact``), its fp16 and int8 QDQ versions (tests/reduced_models.py), and
a 512x512 MatMul, on which TF32 (10-bit mantissa) is visible against fp32.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from reduced_models import fp16_model, int8_qdq_model, seeded_inputs

import runtimes
from bench.harness.measure import MeasureParams, measure
from core.artifact import Artifact
from runtimes.base import RuntimeOptions, SilentChangeError
from runtimes.ort import OrtRuntime
from runtimes.ort_gpu import provider_status
from runtimes.ort_placement import CUDA, TENSORRT

pytestmark = pytest.mark.gpu
FP32_ATOL = 1e-4


@functools.cache
def unusable(name: str, provider: str | None = None) -> str | None:
    """Why ``name`` (an ORT ``provider``) cannot run on cuda:0 here, or None; probed once per session."""
    if name == "ort":
        availability = OrtRuntime.probe(device="cuda", provider=provider)
        what = f"ORT {provider} provider"
    else:
        availability = runtimes.probe(name, device="cuda")
        what = "TensorRT"
    return None if availability.available else f"{what} unusable here: {availability.reason}"


def need_ort(provider: str = "cuda") -> None:
    if unusable("ort", provider):
        pytest.skip(unusable("ort", provider))


def need_trt() -> None:
    if unusable("trt"):
        pytest.skip(unusable("trt"))


def feed(artifact: Artifact, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    shape = (batch, *artifact.input_shape[1:])
    return {artifact.input_name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def run_once(name: str, artifact: Artifact, feeds: dict, **options):
    """(output, the closed runtime) of one run on ``feeds``."""
    rt = runtimes.get_runtime(name)(RuntimeOptions(batch=len(next(iter(feeds.values()))), **options))
    with rt:
        rt.load(artifact)
        rt.prepare(feeds)
        rt.run()
        out = rt.outputs()[artifact.output_name]
    return out, rt


def ort_cpu(artifact: Artifact, feeds: dict) -> np.ndarray:
    return run_once("ort", artifact, feeds, precision=artifact.precision)[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def artifact(onnx_artifact) -> Artifact:
    return Artifact.from_manifest(onnx_artifact)


@pytest.fixture(scope="module")
def reduced(onnx_artifact, tmp_path_factory) -> dict[str, Artifact]:
    if unusable("ort", "cuda") and unusable("trt"):
        pytest.skip(f"{unusable('ort', 'cuda')}; {unusable('trt')}")
    folder = tmp_path_factory.mktemp("reduced")
    return {"fp16": Artifact.from_manifest(fp16_model(onnx_artifact, folder)),
            "int8": Artifact.from_manifest(int8_qdq_model(onnx_artifact, folder)),
            "int8-float-bias": Artifact.from_manifest(int8_qdq_model(onnx_artifact, folder, quantize_bias=False))}


@pytest.fixture(scope="module")
def matmul(tmp_path_factory) -> Artifact:
    """y = x @ W with K = 512: fp32 error ~1e-5 relative, TF32 ~1e-3."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])],
                              [numpy_helper.from_array(weights, "W")])
    path = tmp_path_factory.mktemp("matmul") / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return Artifact.from_model_file(path, ["batch", 512], ["batch", 512], model="MatMul512")


def relative_error(out: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(out - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return str(tmp_path_factory.mktemp("trt-engines"))


# --- ORT: CUDA provider ----------------------------------------------------------------------------------
def test_ort_cuda_runs_fp32_on_the_gpu(artifact):
    need_ort()
    feeds = feed(artifact, 4)
    out, rt = run_once("ort", artifact, feeds, device="cuda")
    eff = rt.effective
    assert eff["provider"] == CUDA and eff["providers_active"][0] == CUDA and eff["inputs_on_device"]
    assert eff["tf32"] is False and eff["provider_options"][CUDA]["use_tf32"] == "0"  # read back
    assert eff["precision"] == "fp32" and eff["node_placement"]["problem"] is None
    np.testing.assert_allclose(out, ort_cpu(artifact, feeds), atol=FP32_ATOL)


def test_ort_cuda_fp32_is_not_tf32(matmul):
    need_ort()
    feeds = feed(matmul, 8)
    reference = ort_cpu(matmul, feeds)
    fp32, rt = run_once("ort", matmul, feeds, device="cuda")
    tf32, rt_tf32 = run_once("ort", matmul, feeds, device="cuda", extra={"tf32": True})
    assert rt_tf32.effective["precision"] == "tf32" and rt_tf32.effective["provider_options"][CUDA]["use_tf32"] == "1"
    assert relative_error(fp32, reference) < 1e-5
    compute = provider_status(CUDA).detail.get("compute_capability", "0.0")
    if float(compute) >= 8.0:  # TF32 exists from Ampere on
        assert relative_error(tf32, reference) > 10 * relative_error(fp32, reference)


def test_ort_cuda_io_binding_matches_a_plain_run(artifact):
    need_ort()
    import onnxruntime as ort

    feeds = feed(artifact, 2)
    out, _ = run_once("ort", artifact, feeds, device="cuda")
    session = ort.InferenceSession(str(artifact.onnx_path), providers=[(CUDA, {"use_tf32": "0"})])
    np.testing.assert_allclose(out, session.run(None, feeds)[0], atol=1e-6)


def test_ort_cuda_reduced_model_files(artifact, reduced):
    need_ort()
    feeds = feed(artifact, 4)
    reference = ort_cpu(artifact, feeds)
    out16, rt16 = run_once("ort", reduced["fp16"], feeds, device="cuda", precision="fp16")
    assert rt16.effective["precision"] == "fp16" and cosine(out16, reference) >= 0.999
    # int32 biases: ORT's CUDA provider has no int32 DequantizeLinear, the biases are dequantized on the CPU
    # (seen on an H200, onnxruntime-gpu 1.31.1): refused, saying why and what to do.
    with pytest.raises(SilentChangeError, match="DequantizeLinear.*int32"):
        run_once("ort", reduced["int8"], feeds, device="cuda", precision="int8")
    out8, rt8 = run_once("ort", reduced["int8-float-bias"], feeds, device="cuda", precision="int8")
    assert rt8.effective["precision"] == "int8" and "int8_kernels" in rt8.effective["node_placement"]
    assert cosine(out8, ort_cpu(reduced["int8-float-bias"], feeds)) >= 0.95  # the same QDQ model on CPU
    if not rt8.effective["node_placement"]["int8_kernels"].get(CUDA):
        assert any("ran no int8 kernel" in note for note in rt8.notes)


def test_ort_cuda_strict_placement_is_refused_or_clean(artifact):
    need_ort()
    try:
        _, rt = run_once("ort", artifact, feed(artifact, 1), device="cuda", extra={"strict_placement": True})
    except SilentChangeError as exc:  # ORT keeps shape arithmetic on CPU, which strict mode refuses
        assert "strict placement" in str(exc)
    else:
        assert rt.effective["strict_placement"] is True and not rt.effective["node_placement"]["cpu_shape_nodes"]


# --- ORT: TensorRT provider -------------------------------------------------------------------------------
def test_ort_tensorrt_provider_takes_the_graph(artifact, engines):
    need_ort("tensorrt")
    feeds = feed(artifact, 2)
    out, rt = run_once("ort", artifact, feeds, device="cuda", extra={"provider": "tensorrt",
                                                                     "trt_engine_cache_dir": engines})
    placement = rt.effective["node_placement"]
    assert placement["problem"] is None and TENSORRT in placement["nodes"]  # not "TensorRT took no subgraph"
    assert rt.effective["precision"] in ("fp32", "tf32")
    atol = FP32_ATOL if rt.effective["precision"] == "fp32" else 1e-2
    np.testing.assert_allclose(out, ort_cpu(artifact, feeds), atol=atol)


# --- measure() in both scopes -------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["compute", "end2end"])
@pytest.mark.parametrize(("name", "extra"), [("ort", {}), ("ort", {"provider": "tensorrt"}), ("trt", {})])
def test_measure_on_gpu(artifact, engines, name, extra, scope):
    if name == "trt":
        need_trt()
        extra = {"engine_cache_dir": engines}
    else:
        need_ort(extra.get("provider", "cuda"))
    rt = runtimes.get_runtime(name)(RuntimeOptions(device="cuda", batch=2, extra=extra))
    params = MeasureParams(warmup=3, iterations=20, min_duration_s=0.2, max_duration_s=5, scope=scope)
    with rt:
        result = measure(rt, artifact, 2, params)
    assert result.latency.count >= 20 and result.latency.min > 0 and result.throughput_ips > 0
    if name == "trt":
        assert result.device_latency is not None and result.device_latency.min > 0


# --- TensorRT adapter -------------------------------------------------------------------------------------
def trt_runtime(engines: str, batch: int = 2, **options):
    extra = {"engine_cache_dir": engines, **options.pop("extra", {})}
    return runtimes.get_runtime("trt")(RuntimeOptions(device="cuda", batch=batch, extra=extra, **options))


def test_trt_fp32_matches_ort_and_caches(artifact, engines):
    need_trt()
    feeds = feed(artifact, 2)
    out, rt = run_once("trt", artifact, feeds, device="cuda", max_batch=4, extra={"engine_cache_dir": engines,
                                                                                  "rebuild": True})
    assert rt.effective["engine_cache_hit"] is False and rt.effective["precision"] == "fp32"
    assert rt.effective["profile"] == {"min": [1, 3, 32, 32], "opt": [2, 3, 32, 32], "max": [4, 3, 32, 32]}
    assert set(rt.effective["layer_precisions"]) - {"int32", "int64", "bool", "other"} == {"fp32"}
    np.testing.assert_allclose(out, ort_cpu(artifact, feeds), atol=FP32_ATOL)
    again, rt2 = run_once("trt", artifact, feeds, device="cuda", max_batch=4, extra={"engine_cache_dir": engines})
    assert rt2.effective["engine_cache_hit"] is True
    np.testing.assert_array_equal(again, out)
    versions = rt2.versions()
    assert versions["tensorrt"].startswith("10.") and "cuda_runtime" not in versions


def test_trt_fp32_is_not_tf32(matmul, engines):
    need_trt()
    feeds = feed(matmul, 8)
    out, rt = run_once("trt", matmul, feeds, device="cuda", extra={"engine_cache_dir": engines})
    assert rt.effective["tf32"] is False and rt.effective["precision"] == "fp32"
    assert relative_error(out, ort_cpu(matmul, feeds)) < 1e-5
    _, rt_tf32 = run_once("trt", matmul, feeds, device="cuda", extra={"engine_cache_dir": engines, "tf32": True})
    assert rt_tf32.effective["precision"] == "tf32"


def test_trt_prepare_twice_and_with_other_batches(artifact, engines):
    need_trt()
    rt = trt_runtime(engines, batch=2, max_batch=8)
    with rt:
        rt.load(artifact)
        for batch, seed in ((2, 0), (2, 1), (8, 2), (1, 3)):  # same shape (buffer reuse), larger, smaller
            feeds = feed(artifact, batch, seed)
            rt.prepare(feeds)
            rt.run()
            out = rt.outputs()[artifact.output_name]
            assert out.shape[0] == batch and rt.effective["batch"] == batch and rt.device_time_ms() > 0
            np.testing.assert_allclose(out, ort_cpu(artifact, feeds), atol=FP32_ATOL)
        with pytest.raises(ValueError, match="outside the engine profile"):
            rt.prepare(feed(artifact, 9))


@pytest.mark.parametrize(("precision", "minimum"), [("fp16", 0.999), ("int8", 0.9)])
def test_trt_reduced_precision_builds_and_drifts_little(artifact, engines, tmp_path, precision, minimum):
    need_trt()
    extra = {}
    if precision == "int8":  # calibration on seeded inputs of the model's shape, as a .npy
        extra["calibration_data"] = str(tmp_path / "calibration.npy")
        np.save(extra["calibration_data"], seeded_inputs(tuple(artifact.input_shape[1:]), 44))
    feeds = feed(artifact, 4)
    out, rt = run_once("trt", artifact, feeds, device="cuda", precision=precision,
                       extra={"engine_cache_dir": engines, **extra})
    assert cosine(out, ort_cpu(artifact, feeds)) >= minimum
    layers = rt.effective["layer_precisions"]
    assert rt.effective["precision"] in layers  # the recorded precision is one a layer ran in
    if precision == "int8":
        assert rt.effective["builder_flags"] == ["INT8", "FP16"] and rt.effective["calibration"]["images"] == 44


def test_trt_runs_the_qdq_model_like_ort(reduced, engines):
    """The int8 paths are comparable: TensorRT builds the QDQ model from its own scales, as ORT runs it."""
    need_trt()
    qdq = reduced["int8"]
    feeds = feed(qdq, 4)
    out, rt = run_once("trt", qdq, feeds, device="cuda", precision="int8", extra={"engine_cache_dir": engines})
    assert rt.effective["quantization"] == "qdq" and "calibration" not in rt.effective
    assert cosine(out, ort_cpu(qdq, feeds)) >= 0.95


def test_trt_load_close_does_not_leak(artifact, engines):
    need_trt()
    from runtimes.cuda import cuda_call, cudart

    run_once("trt", artifact, feed(artifact, 2), device="cuda", extra={"engine_cache_dir": engines})  # cached
    free_before = cuda_call(cudart().cudaMemGetInfo())[0]
    for _ in range(5):
        run_once("trt", artifact, feed(artifact, 2), device="cuda", extra={"engine_cache_dir": engines})
    assert free_before - cuda_call(cudart().cudaMemGetInfo())[0] < 64 << 20  # allocator noise, not 5 engines


def test_trt_cuda_graph_replays_the_same_inference(artifact, engines):
    need_trt()
    feeds = feed(artifact, 1)
    plain, _ = run_once("trt", artifact, feeds, device="cuda", extra={"engine_cache_dir": engines})
    graph, rt = run_once("trt", artifact, feeds, device="cuda", extra={"engine_cache_dir": engines,
                                                                       "cuda_graph": True})
    assert rt.effective["device_time"] == "cuda graph replay"
    np.testing.assert_array_equal(graph, plain)
