"""ONNX Runtime int8: ``quant_pre_process`` then ``quantize_static`` to QDQ, run by the ort adapter as is.

Settings (proto12 findings; all eight zoo models 44/44 on the seeded weights):

- every op of ORT's QDQ and QLinear registries (what ``op_types_to_quantize=None`` means) but LayerNormalization:
  fewer Quantize/DequantizeLinear conversions are left between quantized ops than with Conv/MatMul/Gemm only,
  which was slower. LayerNormalization has no int8 kernel on ORT's CPU provider, so quantizing it only rounded its
  weights to int8 and added a DequantizeLinear per weight at every run (MobileViT_XXS: 42); it stays float;
- per-channel int8 weights, uint8 activations (ORT's CPU recommendation), MinMax calibration one image at a time
  (Entropy and Percentile held every activation of every image in memory, 5-14 GB, at 4-6x the time, and
  Percentile failed on a near-constant tensor; both fail on batches of unequal size);
- ``reduce_range`` (7-bit weights) on CPUs without VNNI/AMX, as ORT advises: there u8 x s8 products use
  ``vpmaddubsw``, whose int16 pair sums saturate. The model is then specific to that kind of CPU: the choice and
  the flags are recorded and are part of the cache key;
- the classifier head in float (``graph.py``): quantize_static would otherwise quantize the logits themselves
  (LeViT_128: scale 0.0032 against a 0.0018 top-2 gap: every image a tie);
- Softmax reads the float tensor: ORT's fused QLinearSoftmax was 4x slower than float Softmax (AVX2), and
  slower again on an AVX512-VNNI CPU (MobileViT_XXS batch 8: 1.20x fp32 against 0.84x);
- the graph is first put in the form the int8 kernels want (``INT8_FORM``, exact passes checked as the export's
  are): each attention's scale folded into its query projection (one quantized Mul per block fewer) and every
  MatMul + bias as a 2-D Gemm, which ORT runs as one QGemm with its bias in int32 instead of QLinearMatMul +
  QLinearAdd (MobileViT_XXS: 54 QLinearAdd fewer). QOperator format instead of QDQ, and SiLU/residual Adds kept
  float, were slower on that CPU (1.14x and 1.12x fp32 at batch 8).

Node names for ``nodes_to_exclude`` are taken from the pre-processed graph: ORT's optimizer renames what it fuses
(``MatMul.86`` + ``Add.108`` -> ``MatMul.86/MatMulAddFusion``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.cores import default_threads
from core.cpu import cpu_flags, native
from export.quantize import QuantizeError
from export.quantize.census import float_ops, int8_kernels, onnx_qdq_census, ort_cpu_graph
from export.quantize.graph import float_inputs_for, onnx_head_nodes

log = logging.getLogger(__name__)

CALIBRATION_METHOD = "MinMax"
FLOAT_INPUT_OPS = ("Softmax",)
INT8_FORM = ("fold_attention_scale", "matmul_bias_to_gemm")  # export.optimize.driver passes, before quantizing
KEPT_FLOAT_OPS = ("LayerNormalization",)  # no int8 kernel on ORT's CPU provider: left out of op_types_to_quantize
RUN_CHECK_BATCHES = (1, 8)


def op_types_to_quantize() -> list[str]:
    """ORT's default (every op of its QDQ and QLinear registries) less ``KEPT_FLOAT_OPS``."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - set(KEPT_FLOAT_OPS))


def reduce_range_here() -> tuple[bool, dict[str, bool]]:
    """(reduce_range, the CPU flags it was decided from): True on a CPU without an int8 dot product."""
    flags = cpu_flags()
    return not native("int8", flags), flags


@contextlib.contextmanager
def rank1_weight_warnings() -> Iterator[list[str]]:
    """quantize_static logs one root WARNING per 1-D weight it cannot quantize per channel (LeViT: every
    BatchNorm, 46-105 lines); kept out of the terminal, counted, and their weights named in the manifest."""
    kept: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "is out-of-range for weight" in message:
            kept.append(message.split("'")[1] if message.count("'") >= 2 else message)
            return False
        return True

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield kept
    finally:
        root.removeFilter(keep)


def merge_every(count: int, most: int = 16) -> int:
    """How many images MinMax collects before merging their ranges: at most ``most``, and not a divisor of
    ``count``: onnxruntime 1.31 raises "No data is collected" when the last merge leaves nothing behind."""
    return next((m for m in range(most, 1, -1) if count % m), most)


def _sympy() -> bool:
    try:
        import sympy  # noqa: F401
    except ImportError:
        return False
    return True


def _reader(input_name: str, images: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class OneImageAtATime(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(range(len(images)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            index = next(self.items, None)
            return None if index is None else {input_name: np.ascontiguousarray(images[index: index + 1])}

    return OneImageAtATime()


def ort_int8(onnx_path: Path, images: np.ndarray, out_path: Path, *, keep_head_float: bool = True,
             nodes_to_exclude: Sequence[str] = (), threads: int | None = None,
             for_cuda: bool = False) -> dict[str, Any]:
    """Quantize ``onnx_path`` (put in ``INT8_FORM`` first) to QDQ ``out_path``; returns the ``reduced_precision``
    description. ``for_cuda``: the graph as exported, biases stay float (ORT's CUDA provider has no int32
    DequantizeLinear: quantized biases are dequantized on the CPU and copied at every run, seen on an H200) and
    weights use 8 bits (``reduce_range`` is a CPU rule)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    threads = threads or default_threads()
    started = time.perf_counter()
    reduce_range, flags = reduce_range_here()
    reduce_range = reduce_range and not for_cuda
    symbolic = _sympy()  # quant_pre_process's symbolic shape inference needs sympy (export-tools extra)
    input_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
    quantized_ops = op_types_to_quantize()
    extra = {"CalibMaxIntermediateOutputs": merge_every(len(images)),  # MinMax merges ranges: bounded memory
             **({"QuantizeBias": False} if for_cuda else {})}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ort-quantize-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        # the CUDA model keeps the export's graph: the form is for ORT's CPU int8 kernels (QGemm)
        formed, form = (onnx_path, None) if for_cuda else int8_form(onnx_path, Path(tmp) / "formed.onnx", images[:2])
        try:
            quant_pre_process(str(formed), str(pre), skip_symbolic_shape=not symbolic)
            head = onnx_head_nodes(onnx.load(str(pre))) if keep_head_float else []
            excluded = [*nodes_to_exclude, *head]
            with rank1_weight_warnings() as per_tensor:
                quantize_static(str(pre), str(out_path), _reader(input_name, images),
                                quant_format=QuantFormat.QDQ, op_types_to_quantize=quantized_ops, per_channel=True,
                                reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=excluded or None,
                                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHOD),
                                extra_options=extra)
        except Exception as exc:  # the quantizer raises many types; the build fails with one line
            with contextlib.suppress(OSError):
                out_path.unlink()
            raise QuantizeError(f"onnxruntime quantize_static failed: {type(exc).__name__}: {exc}") from exc
    quantized = onnx.load(str(out_path))
    rewired = float_inputs_for(quantized, FLOAT_INPUT_OPS)
    onnx.save(quantized, str(out_path))
    quantize_s = time.perf_counter() - started
    checks = runs_everywhere(out_path, input_name, images[:1], threads)
    ort_graph = ort_cpu_graph(out_path, threads)
    parameters = {
        "quant_format": "QDQ", "op_types_to_quantize": quantized_ops, "op_types_kept_float": list(KEPT_FLOAT_OPS),
        "per_channel": True, "reduce_range": reduce_range,
        "reduce_range_rule": "7-bit weights on a CPU without VNNI/AMX (onnxruntime's advice for x86); "
                             "never for the CUDA model", "for_cuda": for_cuda, "quantize_bias": not for_cuda,
        "cpu_flags": flags, "activation_type": "QUInt8", "weight_type": "QInt8",
        "calibrate_method": CALIBRATION_METHOD, "calibration_batch": 1, "extra_options": extra,
        "nodes_to_exclude": excluded, "keep_head_float": keep_head_float, "head": head,
        "float_input_ops": list(FLOAT_INPUT_OPS), "float_inputs_rewired": rewired, "graph_form": form,
        "quant_pre_process": {"symbolic_shape_inference": symbolic},
        "per_tensor_weights": per_tensor,  # 1-D weights (BatchNorm scales): no channel axis to quantize along
    }
    return {"method": "onnxruntime.quantization.quantize_static (QDQ)", "parameters": parameters,
            "run_checks": checks, "census": census_of(quantized, ort_graph), "quantize_seconds": round(quantize_s, 2)}


def census_of(quantized, ort_graph: dict[str, int]) -> dict[str, Any]:
    """The QDQ model's census, and what ORT's CPU provider runs of it: its int8 kernels and its float ops
    (Quantize/DequantizeLinear, the kept-float head, ops without an int8 kernel)."""
    return {**onnx_qdq_census(quantized), "ort_cpu_int8_kernels": int8_kernels(ort_graph),
            "ort_cpu_float_ops": float_ops(ort_graph), "ort_cpu_graph": ort_graph}


def int8_form(onnx_path: Path, out_path: Path, check_inputs: np.ndarray) -> tuple[Path, dict[str, Any]]:
    """``onnx_path`` through the ``INT8_FORM`` passes, each checked on ``check_inputs`` as the export checks its
    own (an OptimizeError is a QuantizeError here); the model written to ``out_path`` and what each pass did."""
    import onnx

    from export.optimize.driver import OptimizeError, run_passes

    try:
        model, reports = run_passes(onnx.load(str(onnx_path)), INT8_FORM, np.ascontiguousarray(check_inputs))
    except OptimizeError as exc:
        raise QuantizeError(f"the int8 graph form failed: {exc}") from exc
    except Exception as exc:  # the reference run on ORT (a model it cannot load or run): one line
        raise QuantizeError(f"the int8 graph form failed: {type(exc).__name__}: {exc}") from exc
    onnx.save(model, str(out_path))
    return out_path, {"passes": list(INT8_FORM), "reports": [
        {k: v for k, v in r.to_dict().items() if k != "census_after"} for r in reports]}


def runs_everywhere(path: Path, input_name: str, sample: np.ndarray, threads: int) -> dict[str, str]:
    """``run_checks`` at ``RUN_CHECK_BATCHES``, or a QuantizeError when the QDQ model fails at one."""
    checks = run_checks(path, input_name, sample, RUN_CHECK_BATCHES, threads)
    if any(outcome != "ok" for outcome in checks.values()):
        raise QuantizeError(f"the QDQ model does not run on ONNX Runtime's CPU provider: {checks}")
    return checks


def run_checks(path: Path, input_name: str, sample: np.ndarray, batches: Sequence[int],
               threads: int) -> dict[str, str]:
    """Load ``path`` on ORT's CPU provider and run it once per batch; outcome per batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return {"load": f"error: {type(exc).__name__}: {exc}"}
    outcomes = {"load": "ok"}
    for batch in batches:
        try:
            session.run(None, {input_name: np.repeat(sample, batch, axis=0)})
            outcomes[str(batch)] = "ok"
        except Exception as exc:
            outcomes[str(batch)] = f"error: {type(exc).__name__}: {exc}"
    return outcomes
