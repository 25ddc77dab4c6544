"""What one export is asked to make, and where it lands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.preprocess import Preprocess
from export.layout import DEFAULT_ROOT, export_dir, weights_tag
from export.optimize.levels import DEFAULT_LEVEL, folder_variant
from export.source import inference_model_digest

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / "data" / "imagenet-val-44"


@dataclass(frozen=True)
class ExportRequest:
    model: str
    opset: int
    batch: str | int = "dynamic"
    weights: str | None = None  # None/"seeded", "official", a .pdparams path or URL
    root: Path = DEFAULT_ROOT
    images: Path | None = DEFAULT_IMAGES
    force: bool = False
    paddle_model: Path | None = None  # a brought Paddle inference model (.json) instead of a zoo model
    input_shape: tuple[int, int, int] | None = None  # C, H, W of a brought model
    optimize: str = DEFAULT_LEVEL  # graph optimisation level (export.optimize.levels); not the default: own folder
    preprocess: Preprocess | None = None  # a brought model's image preprocessing (its PaddleClas config)

    @property
    def fixed_batch(self) -> int | None:
        return None if self.batch == "dynamic" else int(self.batch)

    @property
    def out_dir(self) -> Path:
        if self.paddle_model is not None:
            folder = f"model-{inference_model_digest(self.paddle_model)[:12]}"
        else:
            folder = weights_tag(self.weights)
        return export_dir(self.model, self.opset, self.batch, folder, self.root, folder_variant(self.optimize))


def artifact_dir(model: str, opset: int, batch: str | int = "dynamic", weights: str | None = None,
                 root: Path = DEFAULT_ROOT, optimize: str = DEFAULT_LEVEL) -> Path:
    """Where a zoo model's export lives; computing it imports nothing heavy."""
    return ExportRequest(model, opset, batch, weights, Path(root), optimize=optimize).out_dir
