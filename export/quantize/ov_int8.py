"""OpenVINO int8: NNCF post-training quantization of the OpenVINO model read from the fp32 ONNX, saved as IR.

The method per family keeps accuracy (proto12 findings, all eight zoo models 44/44 on the seeded weights):

- LeViT (``ignore_batchnorm``): NNCF's default preset with every BatchNormInference kept float. LeViT keeps a
  BatchNorm after each Linear; the default preset quantizes their inputs and, at the head (ReduceMean ->
  BatchNorm -> MatMul), OpenVINO 2026.4's CPU plugin fuses the BatchNorm into an int8 ReduceMean wrongly: 0/44
  agreement (benchmarks/ov_reduce_bn_int8_repro.py). ``ModelType.TRANSFORMER`` also fixes it, but its IR of
  LeViT_128S/128/192 does not compile with a dynamic batch on that plugin.
- MobileViT (``transformer``): ``ModelType.TRANSFORMER`` leaves SiLU's Multiply, Add and BatchNorm unquantized,
  which keeps OpenVINO's fused eltwise kernels (the default preset's extra FakeQuantizes made int8 slower than
  fp32) and was the most accurate.
- Any other model: the default preset.
- Every model: the classifier head stays float (``graph.py``).
- Every model: constant subgraphs are folded before NNCF sees the model (``fold_constants``). OpenVINO's ONNX
  reader gives a grouped Conv's weights as a Reshape of the constant; NNCF 3.4 then takes its per-channel weight
  ranges over the constant's axes on the reshaped tensor (scales of shape ``[C,1,1,1,k]``, one per channel and
  kernel column), which the CPU plugin cannot run in int8: every depthwise convolution of MobileViT stayed f32,
  between extra Reorders, even on a CPU with VNNI. Folded, all of MobileViT_XXS's 35 convolutions run u8.

Statistics are collected at a static batch of 1 (every calibration image used, no dynamic-shape paths); the IR is
saved with the fp32 export's batch (dynamic or fixed) and without fp16 compression of constants, then compiled
at batches 1, 8 and dynamic: the manifest records which compile (OpenVINO adapters compile at a static batch).

Accuracy-aware (``max_drop``): ``nncf.quantize_with_accuracy_control`` with top-1 agreement with the fp32 model
as the metric, on a validation split held out of the calibration images (never the evaluation images). It first
quantizes as above; only when agreement drops by more than ``max_drop`` does it rank quantizer groups and revert
the costliest to float. Those layers are read back from NNCF's final report and recorded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.cores import default_threads
from export.quantize import QuantizeError
from export.quantize.census import ov_census, ov_runtime_precisions, quantized_layers
from export.quantize.graph import ov_head_ops

log = logging.getLogger(__name__)

RECIPES = ("default", "ignore_batchnorm", "transformer")
RECIPE_BY_FAMILY = {"LeViT": "ignore_batchnorm", "MobileViT": "transformer"}
CHECK_BATCHES = (1, 8, None)  # None: dynamic


def recipe_for(family: str | None, recipe: str | None = None) -> str:
    chosen = recipe or RECIPE_BY_FAMILY.get(family or "", "default")
    if chosen not in RECIPES:
        raise QuantizeError(f"unknown OpenVINO int8 recipe {chosen!r}; known: {', '.join(RECIPES)}")
    return chosen


def nncf_arguments(recipe: str, ignored_names: Sequence[str]) -> dict[str, Any]:
    """Keyword arguments of ``nncf.quantize`` for a recipe, plus ops kept in float by name."""
    import nncf

    kwargs: dict[str, Any] = {}
    types = ["BatchNormInference"] if recipe == "ignore_batchnorm" else []
    if types or ignored_names:
        # validate=False: a model without BatchNorm must not fail; the census shows what was ignored.
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(ignored_names), types=types, validate=False)
    if recipe == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    return kwargs


def describe_arguments(recipe: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the manifest records them (the shape ``bench/explain`` re-quantizes from)."""
    scope = kwargs.get("ignored_scope")
    return {"recipe": recipe, "model_type": "transformer" if "model_type" in kwargs else None,
            "preset": "mixed" if "model_type" in kwargs else "performance",
            "smooth_quant": "model_type" in kwargs,  # NNCF turns SmoothQuant on for TRANSFORMER only
            "ignored_scope": {"names": list(scope.names), "types": list(scope.types)} if scope else None}


@contextlib.contextmanager
def quiet_nncf() -> Iterator[list[str]]:
    """NNCF's log lines (kept, not printed) and progress bars (logged at debug) during a call."""
    from nncf.common.logging.logger import nncf_logger

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handlers, keep, progress = list(nncf_logger.handlers), Keep(logging.INFO), io.StringIO()
    level = nncf_logger.level  # another caller may have raised it (nncf.set_log_level): the INFO lines are needed
    for handler in handlers:
        nncf_logger.removeHandler(handler)
    nncf_logger.addHandler(keep)
    nncf_logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(progress):
            yield messages
    finally:
        nncf_logger.removeHandler(keep)
        nncf_logger.setLevel(level)
        for handler in handlers:
            nncf_logger.addHandler(handler)
        log.debug("nncf output: %s", progress.getvalue()[-2000:])


def _reshape(model, input_name: str, batch: int | None) -> None:
    """Set the model's batch (None: dynamic), keeping the other dimensions."""
    shape = list(model.input(input_name).get_partial_shape())
    model.reshape({input_name: [-1 if batch is None else batch] + [d.get_length() for d in shape[1:]]})


def fold_constants(model) -> int:
    """Fold ``model``'s constant subgraphs in place (OpenVINO's ConstantFolding pass); returns how many
    GroupConvolution weights were computed (a Reshape of a constant) before and are plain constants now."""
    from openvino import passes

    def computed_group_weights() -> int:
        return sum(1 for op in model.get_ops() if op.get_type_name() == "GroupConvolution"
                   and op.input_value(1).get_node().get_type_name() != "Constant")

    before = computed_group_weights()
    manager = passes.Manager()
    manager.register_pass(passes.ConstantFolding())
    manager.run_passes(model)
    return before - computed_group_weights()


def _compiled(core, model, threads: int):
    return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})


def compile_checks(core, xml: Path, input_name: str, batches: Sequence[int | None], threads: int) -> dict[str, str]:
    """Compile the saved IR at each batch; outcome per batch ("ok" or the error's last lines)."""
    outcomes: dict[str, str] = {}
    for batch in batches:
        model = core.read_model(str(xml))
        _reshape(model, input_name, batch)
        try:
            _compiled(core, model, threads)
            outcomes["dynamic" if batch is None else str(batch)] = "ok"
        except RuntimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            outcomes["dynamic" if batch is None else str(batch)] = "error: " + " | ".join(lines[-3:])
    return outcomes


def ov_int8(onnx_path: Path, images: np.ndarray, family: str | None, batch: str | int, out_xml: Path, *,
            recipe: str | None = None, keep_head_float: bool = True, max_drop: float | None = None,
            validation: np.ndarray | None = None, threads: int | None = None) -> dict[str, Any]:
    """Quantize ``onnx_path`` into ``out_xml`` (+ .bin); returns the ``reduced_precision`` description."""
    import openvino as ov

    threads = threads or default_threads()
    started = time.perf_counter()
    recipe = recipe_for(family, recipe)
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    input_name = model.inputs[0].get_any_name()
    # Folded while the batch is still the export's: at the static calibration batch the folding would also bake
    # batch-sized Reshape targets into constants, and the IR could not take its dynamic batch back.
    folded = fold_constants(model)
    _reshape(model, input_name, 1)
    head = ov_head_ops(model) if keep_head_float else []
    kwargs = nncf_arguments(recipe, head)
    samples = [np.ascontiguousarray(image[None]) for image in images]
    if max_drop is None:
        quantized, control = _quantize(model, samples, kwargs, recipe), None
    else:
        if validation is None or not len(validation):
            raise QuantizeError("accuracy-aware quantization needs a validation split")
        quantized, control = _quantize_with_control(core, model, samples, validation, kwargs, max_drop, threads)
    quantize_s = time.perf_counter() - started
    fixed = None if batch == "dynamic" else int(batch)
    _reshape(quantized, input_name, fixed)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16=False: scales, biases and the float head stay fp32 (seeded top-2 gaps are ~1e-3).
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    checks = compile_checks(core, out_xml, input_name, CHECK_BATCHES if fixed is None else (fixed,), threads)
    static = [b for b, outcome in checks.items() if b != "dynamic" and outcome == "ok"]
    if not static:
        raise QuantizeError(f"the int8 IR compiles at no static batch: {checks}")
    saved = core.read_model(str(out_xml))
    _reshape(saved, input_name, int(static[0]))
    parameters = {**describe_arguments(recipe, kwargs), "keep_head_float": keep_head_float, "head": head,
                  "target_device": "CPU", "subset_size": len(samples), "calibration_batch": 1,
                  "fast_bias_correction": True, "compress_to_fp16": False,
                  "constant_folding": {"before_nncf": True, "group_convolution_weights_folded": folded}}
    described = {
        "method": "nncf.quantize" if control is None else "nncf.quantize_with_accuracy_control",
        "parameters": parameters, "compile_checks": checks, "census": ov_census(quantized),
        "runtime_precisions": ov_runtime_precisions(_compiled(core, saved, threads)),
        "quantize_seconds": round(quantize_s, 2),
    }
    if control is not None:
        described["accuracy_control"] = control
    return described


def _quantize(model, samples: list[np.ndarray], kwargs: dict[str, Any], recipe: str):
    import nncf

    try:
        with quiet_nncf():
            return nncf.quantize(model, nncf.Dataset(samples), target_device=nncf.TargetDevice.CPU,
                                 subset_size=len(samples), fast_bias_correction=True, **kwargs)
    except Exception as exc:  # NNCF raises many types; the build fails with one line
        raise QuantizeError(f"nncf.quantize ({recipe}) failed: {type(exc).__name__}: {exc}") from exc


def fp32_top1(core, model, samples: Sequence[np.ndarray], threads: int) -> list[int]:
    """The fp32 model's own top-1 per sample: the targets of top-1 agreement (no labels needed)."""
    compiled = _compiled(core, model.clone(), threads)
    return [int(np.argmax(compiled(sample)[compiled.outputs[0]])) for sample in samples]


def agreement(compiled_model, validation: Sequence[tuple[np.ndarray, int]]) -> float:
    """NNCF's validation function: the share of samples whose top-1 is the fp32 model's."""
    output = compiled_model.outputs[0]
    return float(np.mean([int(np.argmax(compiled_model(x)[output])) == target for x, target in validation]))


def _quantize_with_control(core, model, samples: list[np.ndarray], validation: np.ndarray,
                           kwargs: dict[str, Any], max_drop: float, threads: int):
    import nncf

    held = [np.ascontiguousarray(image[None]) for image in validation]
    targets = fp32_top1(core, model, held, threads)
    with tempfile.TemporaryDirectory(prefix="nncf-accuracy-") as tmp, quiet_nncf() as messages:
        restorer = nncf.AdvancedAccuracyRestorerParameters(intermediate_model_dir=tmp)
        try:
            quantized = nncf.quantize_with_accuracy_control(
                model, nncf.Dataset(samples), nncf.Dataset(list(zip(held, targets, strict=True))), agreement,
                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, target_device=nncf.TargetDevice.CPU,
                subset_size=len(samples), advanced_accuracy_restorer_parameters=restorer, **kwargs)
        except Exception as exc:
            raise QuantizeError(f"nncf.quantize_with_accuracy_control failed: {type(exc).__name__}: {exc}") from exc
        full = Path(tmp) / "intermediate_model.xml"
        fully = {op.get_friendly_name() for op in quantized_layers(core.read_model(str(full)))} \
            if full.is_file() else set()
    still = {op.get_friendly_name() for op in quantized_layers(quantized)}
    return quantized, {
        "max_drop": max_drop, "drop_type": "absolute", "metric": "top-1 agreement with the fp32 model",
        "validation": {"images": len(held), "split": "every 5th calibration image, held out of calibration",
                       "distinct_fp32_top1": len(set(targets))},
        "layers_kept_float": reverted_layers(messages),
        "layers_losing_input_quantizers": sorted(fully - still),
        "log": [m for m in messages if m.startswith(("Accuracy drop", "Metric of", "Total number", "The algorithm",
                                                     "All layers")) or "were reverted back" in m],
    }


def reverted_layers(messages: Sequence[str]) -> list[str]:
    """NNCF's final "N out of M were reverted back to the floating-point precision:" list (empty if none).

    The authoritative list: the per-step "Reverted ..." lines include groups that were put back later."""
    for message in reversed(messages):
        if "were reverted back to the floating-point precision" in message:
            return [line.strip() for line in message.splitlines()[1:] if line.strip()]
    return []
