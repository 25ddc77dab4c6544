"""Where the Paddle model of an export comes from: the zoo (layer + weights) or a user's inference model.

Both give the pipeline the same three things: a Paddle inference model on disk, a function that computes
Paddle's own FP32 logits (the parity reference), and a description for the manifest.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.files import sha256_of
from core.preprocess import Preprocess
from export.convert import ExportError, import_paddle, inference_model_from_layer
from export.weights import WeightsSource

CHUNK = 16  # images per Paddle forward when computing reference logits


@dataclass
class PaddleSource:
    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    family: str | None
    preprocess: Preprocess | None
    weights: dict
    save: Callable[[Path, int | None], tuple[Path, Path]]  # (out_dir, fixed batch) -> model, params files
    forward: Callable[[np.ndarray], np.ndarray]  # one chunk of inputs -> logits
    info: dict = field(default_factory=dict)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        return np.concatenate([self.forward(inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)])


def zoo_source(name: str, weights: str | None) -> PaddleSource:
    """A zoo model with its weights loaded (seeded recipe by default), in eval mode."""
    paddle = import_paddle()

    from export.calibrated_weights import CALIBRATED
    from export.models import build_model, get_spec
    from export.weights import load_weights

    spec = get_spec(name)
    layer = build_model(name)
    if weights == CALIBRATED:
        source = load_calibrated(layer, spec.preprocess)
    else:
        source = load_weights(layer, weights, spec.weights_url, pinned_sha256=spec.weights_sha256)

    def forward(x: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return layer(paddle.to_tensor(x)).numpy()

    return PaddleSource(
        name=name,
        input_shape=(3, spec.input_size, spec.input_size),
        family=spec.family,
        preprocess=spec.preprocess,
        weights=source.to_dict(),
        save=lambda out_dir, batch: inference_model_from_layer(layer, spec.input_size, batch, out_dir),
        forward=forward,
        info={"reference": "paddle dygraph, eval mode, fp32, CPU"},
    )


def load_calibrated(layer, preprocess: Preprocess) -> WeightsSource:
    """``seeded-calibrated``: the parity recipe made input-sensitive (see ``export.calibrated_weights``)."""
    from export.calibrated_weights import CALIBRATED, calibrated_state_dict, location, reestimate_batchnorm

    layer.set_state_dict(calibrated_state_dict(layer))
    reestimate_batchnorm(layer, preprocess)
    return WeightsSource(CALIBRATED, location())


def inference_model_digest(model_file: Path) -> str:
    """Identity of a Paddle inference model: its program and its parameters, so new weights are new."""
    model_file = Path(model_file)
    parts = (sha256_of(model_file), sha256_of(model_file.with_suffix(".pdiparams")))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def inference_model_source(
    model_file: Path, name: str, input_shape: tuple[int, int, int], preprocess: Preprocess | None = None
) -> PaddleSource:
    """A Paddle inference model brought by the user (``.json`` PIR program + ``.pdiparams``)."""
    paddle_infer = import_paddle().inference

    model_file = Path(model_file)
    params_file = model_file.with_suffix(".pdiparams")
    if model_file.suffix != ".json" or not model_file.is_file() or not params_file.is_file():
        raise ExportError(
            f"{model_file}: expected a Paddle inference model NAME.json with NAME.pdiparams beside "
            "it (paddle.jit.save output)"
        )
    config = paddle_infer.Config(str(model_file), str(params_file))
    config.disable_mkldnn()  # the reference is plain FP32 CPU kernels, not a fused oneDNN graph
    config.switch_ir_optim(False)
    config.disable_glog_info()
    try:
        predictor = paddle_infer.create_predictor(config)
    except Exception as exc:
        raise ExportError(f"Paddle cannot load {model_file}: {str(exc).splitlines()[0]}") from None
    input_handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output_handle = predictor.get_output_handle(predictor.get_output_names()[0])

    def forward(x: np.ndarray) -> np.ndarray:
        input_handle.reshape(list(x.shape))
        input_handle.copy_from_cpu(np.ascontiguousarray(x))
        predictor.run()
        return output_handle.copy_to_cpu()

    def save(out_dir: Path, batch: int | None) -> tuple[Path, Path]:
        if batch is not None:
            raise ExportError(
                "a brought inference model keeps the batch it was saved with; use --batch dynamic"
            )
        shutil.copyfile(model_file, out_dir / "inference.json")
        shutil.copyfile(params_file, out_dir / "inference.pdiparams")
        return out_dir / "inference.json", out_dir / "inference.pdiparams"

    digest = inference_model_digest(model_file)
    return PaddleSource(
        name=name,
        input_shape=input_shape,
        family=None,
        preprocess=preprocess,
        weights={
            "kind": "inference-model",
            "location": str(model_file.resolve()),
            "sha256": digest,
            "trained": None,
        },
        save=save,
        forward=forward,
        info={"reference": "paddle inference, no IR optimisation, fp32, CPU"},
    )
