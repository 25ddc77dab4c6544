"""The ORT placement verdict (runtimes.ort_placement) on real ORT 1.31.1 profiling traces and GPU-like rewrites.

tests/data/ort_traces/<model>-b<N>-<level>-cpu.json.gz are real CPU-provider traces of two exported zoo models
(MobileViT_XXS, LeViT_128S; opset 17, seeded weights; ORT_ENABLE_ALL and ORT_ENABLE_EXTENDED), stripped to the
event fields the verdict reads. A CUDA session is emulated by rewriting each event's provider: the nodes ORT's
own rule (GetCpuPreferredNodes) keeps on CPU stay there (<model>-cuda-cpu-nodes.json.gz, computed on the
optimized graph independently of the verdict's code), the rest go to CUDAExecutionProvider. Pure: no GPU and
no onnxruntime needed.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

import pytest

from runtimes.ort_placement import (
    CPU,
    CUDA,
    SHAPE_OPS,
    TENSORRT,
    is_shape_arithmetic,
    kernel_nodes,
    placement_verdict,
)

TRACES = Path(__file__).parent / "data" / "ort_traces"
MODELS = ["LeViT_128S", "MobileViT_XXS"]


@functools.cache
def _read(name: str):
    return json.loads(gzip.decompress((TRACES / f"{name}.json.gz").read_bytes()))


def trace(model: str, batch: int = 1, level: str = "ext") -> list[dict]:
    """A fresh copy whose events and args a test may edit (the shape lists are shared, never edited)."""
    return [{**e, "args": dict(e.get("args") or {})} for e in _read(f"{model}-b{batch}-{level}-cpu")]


def cuda_cpu_nodes(model: str) -> set[str]:
    return set(_read(f"{model}-cuda-cpu-nodes")["nodes"])


def kernels(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def node_name(event: dict) -> str:
    return event["name"][: -len("_kernel_time")]


def as_cuda_session(model: str, batch: int = 1) -> list[dict]:
    """The real trace with providers as a CUDA session would record them."""
    events = trace(model, batch)
    on_cpu = cuda_cpu_nodes(model)
    for e in kernels(events):
        e["args"]["provider"] = CPU if node_name(e) in on_cpu else CUDA
    return events


def move_to_cpu(events: list[dict], op: str, *, activation: bool = True, count: int = 1) -> list[dict]:
    """Put ``count`` nodes of ``op`` (on activations, or on shape tensors) on CPU; they must exist."""
    moved = 0
    for e in kernels(events):
        if e["args"]["op_name"] != op or e["args"]["provider"] == CPU:
            continue
        node = kernel_nodes([e])[0]
        if activation == (node.largest() > 64):
            e["args"]["provider"] = CPU
            moved += 1
            if moved == count:
                return events
    raise AssertionError(f"no {op} node {'on activations' if activation else 'on shapes'} in the trace")


def synthetic(op: str, tensors: list[tuple[str, list[int]]], provider: str = CPU, name: str = "synthetic",
              dur: int = 5) -> dict:
    """A kernel event in ORT's format (inputs first; the last tensor is the output)."""
    *inputs, output = tensors
    return {"cat": "Node", "name": f"{name}_kernel_time", "ph": "X", "ts": 0, "dur": dur,
            "args": {"op_name": op, "provider": provider,
                     "input_type_shape": [{t: d} for t, d in inputs],
                     "output_type_shape": [{output[0]: output[1]}]}}


# --- the real traces --------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["all", "ext"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", MODELS)
def test_real_cpu_trace_parses(model, batch, level):
    events = trace(model, batch, level)
    nodes = kernel_nodes(events)
    assert len(nodes) == len(kernels(events)) > 300
    assert all(n.provider == CPU and n.tensors for n in nodes)  # ORT 1.31 records every tensor's type/shape
    verdict = placement_verdict(events, CPU)
    assert verdict.ok and verdict.placement.keys() == {CPU}


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", MODELS)
def test_cuda_session_with_ort_shape_nodes_on_cpu_passes(model, batch):
    verdict = placement_verdict(as_cuda_session(model, batch), CUDA)
    assert verdict.ok, verdict.problem
    assert {n.name for n in verdict.benign_cpu} == cuda_cpu_nodes(model)
    assert not verdict.offending
    assert any("shape-arithmetic node(s) ran on CPU by ORT's design" in note for note in verdict.notes)
    summary = verdict.summary()
    json.dumps(summary)  # recordable as is
    assert summary["problem"] is None and summary["cpu_compute_nodes"] == []
    assert summary["int8_kernels"] == {}  # an fp32 model


def test_the_emulated_cpu_nodes_are_exactly_what_the_rule_calls_benign():
    """On these graphs no GPU node would be misread as shape arithmetic, and no ORT shape node as work."""
    for model in MODELS:
        for n in kernel_nodes(trace(model)):
            assert is_shape_arithmetic(n) == (n.name in cuda_cpu_nodes(model)), (model, n)


# --- compute on CPU must fail, whatever its op -----------------------------------------------------------
@pytest.mark.parametrize(("model", "op"), [
    ("MobileViT_XXS", "Add"), ("LeViT_128S", "Mul"), ("LeViT_128S", "Transpose"), ("MobileViT_XXS", "Concat"),
    ("LeViT_128S", "ReduceMean"), ("MobileViT_XXS", "Reshape"), ("MobileViT_XXS", "Squeeze"),
    ("MobileViT_XXS", "Conv"), ("LeViT_128S", "MatMul"), ("LeViT_128S", "Gemm"), ("MobileViT_XXS", "Softmax"),
    ("MobileViT_XXS", "QuickGelu"), ("LeViT_128S", "HardSigmoid"), ("MobileViT_XXS", "LayerNormalization"),
    ("LeViT_128S", "BatchNormalization"), ("MobileViT_XXS", "GlobalAveragePool"), ("LeViT_128S", "Split"),
    ("MobileViT_XXS", "FusedMatMul"),
])
def test_a_real_compute_node_on_cpu_fails(model, op):
    verdict = placement_verdict(move_to_cpu(as_cuda_session(model), op), CUDA)
    assert not verdict.ok
    assert verdict.problem.startswith(f"{CUDA} left work on CPU: ") and op in verdict.problem
    assert [n.op for n in verdict.offending] == [op]


@pytest.mark.parametrize("op", ["Clip", "Resize", "FusedGemm", "Gelu", "FastGelu", "BiasGelu", "FusedConv",
                                "Transpose", "ReduceMean", "Softmax", "Sigmoid", "Erf"])
@pytest.mark.parametrize("tiny", [False, True])
def test_ops_outside_the_shape_list_fail_even_on_tiny_tensors(op, tiny):
    dims = [1] if tiny else [8, 64, 56, 56]
    events = as_cuda_session("MobileViT_XXS") + [synthetic(op, [("float", dims), ("float", dims)])]
    verdict = placement_verdict(events, CUDA)
    assert not verdict.ok and op in verdict.problem


@pytest.mark.parametrize("op", ["Add", "Mul", "Concat", "Gather", "Reshape", "Cast", "Slice", "Unsqueeze"])
def test_shape_ops_on_activations_fail(op):
    big = ("float", [8, 197, 192])
    events = as_cuda_session("LeViT_128S") + [synthetic(op, [big, ("int64", [1]), big])]
    verdict = placement_verdict(events, CUDA)
    assert not verdict.ok and op in verdict.problem


def test_a_gather_reading_an_embedding_table_fails():
    """Gather is on the shape list; a table lookup (large float output) is still work."""
    table = synthetic("Gather", [("float", [30522, 768]), ("int64", [8, 128]), ("float", [8, 128, 768])])
    verdict = placement_verdict(as_cuda_session("LeViT_128S") + [table], CUDA)
    assert not verdict.ok and "Gather" in verdict.problem


@pytest.mark.parametrize("tensors", [
    [("int64", []), ("int64", []), ("int64", [])],  # Mul of two shape scalars (e.g. H * W)
    [("int64", [1]), ("int64", [1]), ("int64", [1])],
    [("float", []), ("float", []), ("float", [])],  # 1/sqrt(head_dim) style scalar arithmetic
    [("int64", [4]), ("int64", [4]), ("int64", [4])],
])
@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub"])
def test_scalar_shape_arithmetic_is_benign(op, tensors):
    verdict = placement_verdict(as_cuda_session("LeViT_128S") + [synthetic(op, tensors)], CUDA)
    assert verdict.ok, verdict.problem
    assert op in {n.op for n in verdict.benign_cpu}


def test_small_float_logits_on_cpu_are_not_shape_arithmetic():
    """Batch-1 logits [1, 10] are small, but float and not scalars: a bias Add there is real work."""
    add = synthetic("Add", [("float", [1, 10]), ("float", [10]), ("float", [1, 10])])
    verdict = placement_verdict(as_cuda_session("LeViT_128S") + [add], CUDA)
    assert not verdict.ok and "Add" in verdict.problem


def test_a_cpu_node_without_recorded_shapes_fails_closed():
    event = synthetic("Concat", [("int64", [1]), ("int64", [1]), ("int64", [2])])
    del event["args"]["input_type_shape"]
    verdict = placement_verdict(as_cuda_session("LeViT_128S") + [event], CUDA)
    assert not verdict.ok and "Concat" in verdict.problem


def test_several_offenders_are_counted():
    events = move_to_cpu(as_cuda_session("MobileViT_XXS"), "Add", count=3)
    verdict = placement_verdict(events, CUDA)
    assert "Add x3" in verdict.problem


def test_cpu_only_trace_for_a_cuda_request_fails():
    verdict = placement_verdict(trace("LeViT_128S"), CUDA)  # what a silently CPU-only session records
    assert not verdict.ok and "left work on CPU" in verdict.problem


def test_no_kernel_events_is_a_problem():
    assert not placement_verdict([], CUDA).ok
    session_only = [{"cat": "Session", "name": "model_run", "dur": 10, "args": {}}]
    assert "no kernel events" in placement_verdict(session_only, CUDA).problem


def test_large_memcpy_is_noted():
    copy_event = synthetic("MemcpyToHost", [("float", [8, 192, 14, 14]), ("float", [8, 192, 14, 14])],
                           provider=CUDA)
    verdict = placement_verdict(as_cuda_session("LeViT_128S") + [copy_event], CUDA)
    assert verdict.ok and verdict.transfers and any("host<->device" in n for n in verdict.notes)


# --- TensorRT provider ------------------------------------------------------------------------------------
def trt_event(name: str = "TensorrtExecutionProvider_TRTKernel_graph_main_graph_1_0_0", dur: int = 900) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ph": "X", "ts": 0, "dur": dur,
            "args": {"op_name": "TRTKernel_graph_main_graph_1_0", "provider": TENSORRT,
                     "input_type_shape": [{"float": [1, 3, 224, 224]}],
                     "output_type_shape": [{"float": [1, 1000]}]}}


def test_tensorrt_that_took_no_subgraph_is_not_a_tensorrt_run():
    verdict = placement_verdict(as_cuda_session("MobileViT_XXS"), TENSORRT)
    assert not verdict.ok
    assert verdict.problem.startswith("TensorRT took no subgraph")
    assert CUDA in verdict.problem


def test_tensorrt_with_the_whole_graph_passes():
    verdict = placement_verdict([trt_event()], TENSORRT)
    assert verdict.ok and not verdict.gpu_fallback and verdict.placement == {TENSORRT: {
        "TRTKernel_graph_main_graph_1_0": 1}}


def test_tensorrt_partial_coverage_is_recorded():
    events = as_cuda_session("LeViT_128S")
    declined = [e for e in kernels(events) if e["args"]["op_name"] in ("Softmax", "Gemm")]
    keep = {id(e) for e in declined} | {id(e) for e in kernels(events) if e["args"]["provider"] == CPU}
    events = [trt_event()] + [e for e in events if id(e) in keep]
    verdict = placement_verdict(events, TENSORRT)
    assert verdict.ok
    assert {n.op for n in verdict.gpu_fallback} == {"Softmax", "Gemm"}
    assert any("CUDA ran" in n and "TensorRT declined: Gemm, Softmax" in n for n in verdict.notes)


def test_tensorrt_with_compute_on_cpu_fails():
    events = [trt_event(), synthetic("Resize", [("float", [1, 64, 56, 56]), ("float", [1, 64, 112, 112])])]
    verdict = placement_verdict(events, TENSORRT)
    assert not verdict.ok and "Resize" in verdict.problem


def test_the_shape_list_is_closed():
    """Ops the issue names as compute must never join the benign list."""
    assert not SHAPE_OPS & {"Clip", "Transpose", "Resize", "ReduceMean", "FusedGemm", "Gelu", "Conv", "MatMul",
                            "Gemm", "Softmax", "LayerNormalization", "QuickGelu", "HardSigmoid", "Split"}


def test_int8_kernels_are_counted_per_provider():
    qlinear = synthetic("QLinearConv", [("uint8", [1, 16, 56, 56]), ("uint8", [1, 32, 56, 56])], provider=CUDA)
    verdict = placement_verdict(as_cuda_session("MobileViT_XXS") + [qlinear], CUDA)
    assert verdict.ok and verdict.int8_kernels == {CUDA: 1}


def test_int32_bias_dequantize_on_cpu_names_the_cause():
    """What an H200 with onnxruntime-gpu 1.31.1 recorded for our QDQ models: the int32 biases' DequantizeLinear
    ran on the CPU (the CUDA provider has no int32 DequantizeLinear)."""
    dq = synthetic("DequantizeLinear", [("int32", [512]), ("float", [512]), ("int32", [512]), ("float", [512])])
    verdict = placement_verdict(as_cuda_session("LeViT_128S") + [dq, dq], CUDA)
    assert not verdict.ok and "DequantizeLinear x2" in verdict.problem
    assert "int32" in verdict.problem and "--runtime ort-cuda" in verdict.problem
