"""How far a derived model drifts from Paddle fp32 on the export's own inputs, measured when it is built.

The fp32 export stored Paddle's logits for its evaluation images and seeded inputs (``reference.npz``,
``reference-seeded.npz``); the derived model is run on the same tensors, as its runtime would run it (OpenVINO
CPU with the f32 hint at a static batch for an IR, ONNX Runtime's CPU provider for ONNX), and compared with the
figures the drift pass uses. Recorded in ``reduced_precision.accuracy``; a benchmark's drift pass measures it
again on the runtime and batch it runs. Nothing here is calibrated on: these images only judge.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.cores import default_threads
from core.logits import Logits
from core.manifest import Manifest
from export.parity import compare, ort_logits

log = logging.getLogger(__name__)


def ov_logits(xml: Path, inputs: np.ndarray, batch: int, threads: int | None = None) -> np.ndarray:
    """The IR compiled at static ``batch`` (f32 hint) over ``inputs``; a short last chunk is padded."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    name = model.inputs[0].get_any_name()
    model.reshape({name: [batch, *inputs.shape[1:]]})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads or default_threads(),
                                                 "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    out = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start: start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        out.append(request.infer({0: np.ascontiguousarray(chunk)})[compiled.outputs[0]][:real].copy())
    return np.concatenate(out)


def derived_logits(model_path: Path, model_format: str, inputs: np.ndarray, batch: str | int) -> np.ndarray:
    fixed = None if batch == "dynamic" else int(batch)
    if model_format == "openvino-ir":
        return ov_logits(model_path, inputs, fixed or 1)
    return ort_logits(model_path, inputs, fixed)


def measure(model_path: Path, model_format: str, fp32: Manifest, fp32_dir: Path,
            inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Figures per input set (``images``, ``seeded``) whose reference logits the fp32 export stored."""
    figures: dict[str, Any] = {"runtime": "openvino CPU, f32 hint, static batch" if model_format == "openvino-ir"
                               else "onnxruntime CPUExecutionProvider",
                               "reference": "the fp32 export's Paddle fp32 logits"}
    for kind, data in inputs.items():
        entry = (fp32.reference or {}).get(kind) or {}
        path = fp32_dir / entry["file"] if entry.get("file") else None
        if path is None or not path.is_file() or data is None:
            continue
        reference, _ = Logits.load(path)
        if len(reference.values) != len(data):
            log.warning("%s: %d reference rows for %d inputs; not measured", kind, len(reference.values), len(data))
            continue
        figures[kind] = compare(reference.values, derived_logits(model_path, model_format, data, fp32.batch))
        figures[kind]["distinct_reference_top1"] = int(len(set(np.argmax(reference.values, axis=1).tolist())))
    return figures
