"""fp16 ONNX with onnxconverter-common: weights and arithmetic in fp16, inputs and outputs kept fp32.

Kept in fp32 besides the converter's own block list: normalisations and softmax (LayerNormalization,
BatchNormalization, Softmax, and at opsets below 17 LayerNorm's decomposition ReduceMean/Pow/Sqrt/Div, plus
Erf/Exp): their sums lose most in fp16 (onnxruntime #16219, optimum #151). paddle2onnx's own
``export_fp16_model`` converts nothing (2.1.0), hence this pass.

This file is for ONNX Runtime's CUDA/TensorRT providers and for TensorRT. ONNX Runtime's CPU provider has almost
no fp16 kernels: it runs the model by inserting Casts around them, which the census counts
(``ort_cpu_cast_nodes``) and the manifest says; on a CPU it is slower than fp32.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from core.cores import default_threads
from export.quantize import QuantizeError
from export.quantize.census import fp16_census, ort_cpu_graph
from export.quantize.ort_int8 import RUN_CHECK_BATCHES, run_checks

KEEP_FP32 = ("LayerNormalization", "Softmax", "BatchNormalization", "ReduceMean", "Pow", "Sqrt", "Div", "Erf", "Exp")
CPU_NOTE = ("fp16 ONNX on ONNX Runtime's CPU provider: it has few fp16 kernels and inserts Casts around the rest, "
            "so this model is meant for CUDA/TensorRT; on a CPU it runs slower than fp32")


def fp16_onnx(onnx_path: Path, out_path: Path, sample: np.ndarray, threads: int | None = None) -> dict[str, Any]:
    """Convert ``onnx_path`` into ``out_path``; returns the ``reduced_precision`` description."""
    import onnx
    from onnxconverter_common import float16

    threads = threads or default_threads()
    started = time.perf_counter()
    model = onnx.load(str(onnx_path))
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(KEEP_FP32))
    try:
        converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    except Exception as exc:
        raise QuantizeError(f"convert_float_to_float16 failed: {type(exc).__name__}: {exc}") from exc
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(converted, str(out_path))
    convert_s = time.perf_counter() - started
    checks = run_checks(out_path, model.graph.input[0].name, sample, RUN_CHECK_BATCHES, threads)
    if any(outcome != "ok" for outcome in checks.values()):
        raise QuantizeError(f"the fp16 model does not run on ONNX Runtime's CPU provider: {checks}")
    ort_graph = ort_cpu_graph(out_path, threads)
    return {
        "method": "onnxconverter_common.float16.convert_float_to_float16",
        "parameters": {"keep_io_types": True, "op_block_list": block, "kept_fp32_besides_default": list(KEEP_FP32)},
        "run_checks": checks,
        "census": {**fp16_census(converted), "ort_cpu_cast_nodes": ort_graph.get("Cast", 0)},
        "cpu_note": CPU_NOTE, "quantize_seconds": round(convert_s, 2),
    }
