"""Reduced-precision models derived from an fp32 export: OpenVINO int8 (NNCF), ONNX Runtime int8 (static QDQ)
and fp16 ONNX, each an export artifact of its own (``build.derive``).

A derived model lives beside its fp32 export in a sibling folder ``opset<N>-b<batch>-<variant>``:

========== ========================== ======================================================================
variant    file                       made by
========== ========================== ======================================================================
int8-ov    model.xml + model.bin (IR) NNCF post-training quantization of the OpenVINO model read from the ONNX
int8-ort   model.onnx (QDQ)           ``quant_pre_process`` + ``quantize_static`` (per-channel weights)
int8-ort-  model.onnx (QDQ)           the same with float biases and 8-bit weights, for ONNX Runtime's CUDA
cuda                                  provider: it has no DequantizeLinear kernel for int32, so quantized
                                      biases would be dequantized on the CPU and copied over at every run
fp16       model.onnx                 onnxconverter-common, fp32 inputs/outputs, normalisations and softmax fp32
========== ========================== ======================================================================

Its manifest says what it is (``precision``, ``graph.format``), how it was made (``reduced_precision``: method
and parameters, calibration set with its file-list hash, census, versions, seconds, accuracy on the export's
evaluation images) and what from (``source``: the fp32 manifest and its model's sha256). Nothing here is
imported by the fp32 export; heavy packages (nncf, openvino, onnxruntime.quantization, onnxconverter_common) are
imported inside the builders.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from export.convert import ExportError

PRECISIONS = ("int8", "fp16")
INT8_RUNTIMES = ("ov", "ort")  # what --precision int8 builds when no --runtime is given
INT8_TARGETS = (*INT8_RUNTIMES, "ort-cuda")  # ort-cuda: QDQ with float biases for ORT's CUDA provider
MIN_IMAGES = 32  # calibration images at least: fewer give activation ranges too few to trust (and too small a split)
# (precision, runtime) -> variant folder suffix; fp16 ONNX serves ORT's GPU providers and TensorRT alike.
VARIANTS = {("int8", "ov"): "int8-ov", ("int8", "ort"): "int8-ort", ("int8", "ort-cuda"): "int8-ort-cuda",
            ("fp16", None): "fp16"}


@dataclass(frozen=True)
class Int8Recipe:
    """How the int8 models the benchmark stage asks for are made: ``python -m export``'s flags of the same names
    (None: the export stage's defaults, the bundled calibration images, all of them, no accuracy control)."""

    calibration: str | None = None  # folder, list file or .npy
    calibration_size: int | None = None
    max_drop: float | None = None  # OpenVINO: NNCF's accuracy control, top-1 agreement drop allowed

    def export_flags(self) -> list[str]:
        """``python -m export``'s flags for the settings asked (``--calibration-size N`` ...)."""
        return [part for flag, value in self.flags().items() for part in (flag, str(value))]

    def flags(self) -> dict[str, Any]:
        """The settings asked, by the command-line flag that sets each (bench's and export's alike)."""
        return {"--" + name.replace("_", "-"): value for name, value in self.asked().items()}

    def resolved(self) -> Int8Recipe:
        """The same recipe with the calibration path absolute (exports and cells run in child processes)."""
        return replace(self, calibration=str(Path(self.calibration).resolve())) if self.calibration else self

    def asked(self) -> dict[str, Any]:
        """The settings that differ from the defaults."""
        return {name: value for name, value in vars(self).items() if value is not None}


class QuantizeError(ExportError):
    """A reduced-precision build failed (the quantizer raised, or its result does not load); exit 1."""


class PrecisionUsageError(ValueError):
    """A reduced-precision request that cannot be built as asked (bad flags, bad calibration data); exit 2."""


def variant_of(precision: str, runtime: str | None) -> str:
    """The folder suffix of the derived model for ``precision`` (and, for int8, the ``runtime`` it is for)."""
    if precision == "fp16":
        if runtime not in (None, "ort"):
            raise PrecisionUsageError(f"fp16 ONNX is made for ONNX Runtime (GPU providers) and TensorRT; for "
                                      f"{runtime} fp16 is a runtime hint on the fp32 export (python -m bench "
                                      f"--runtime {runtime} --precision fp16, with its --model or --manifest)")
        return VARIANTS[("fp16", None)]
    if precision == "int8":
        if runtime not in INT8_TARGETS:
            raise PrecisionUsageError(f"int8 models are built for --runtime {' or '.join(INT8_TARGETS)}, "
                                      f"not {runtime!r}")
        return VARIANTS[("int8", runtime)]
    raise PrecisionUsageError(f"--precision must be fp32, {' or '.join(PRECISIONS)}, got {precision!r}")


def int8_target(runtime: str, device: str | None) -> str:
    """The int8 model a benchmark of ``runtime`` on ``device`` runs: QDQ with float biases for ORT on CUDA."""
    return "ort-cuda" if runtime == "ort" and device == "cuda" else runtime


def variant_for_run(runtime: str, precision: str) -> str | None:
    """The derived model a benchmark of ``runtime`` at ``precision`` runs, or None for the fp32 export.

    OpenVINO bf16/fp16 and every TensorRT precision are built from the fp32 export at load time (hints and
    builder flags; TensorRT int8 calibrates on the same bundled images); ``paddle`` runs fp32 only."""
    if precision == "int8" and runtime in INT8_RUNTIMES:
        return VARIANTS[("int8", runtime)]
    if precision == "fp16" and runtime == "ort":
        return VARIANTS[("fp16", None)]
    return None
