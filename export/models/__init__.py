"""The model zoo: PaddleClas LeViT and MobileViT, written in this project.

Every model here is weight-compatible with the official PaddleClas checkpoints: its ``state_dict`` keys,
shapes and dtypes equal PaddleClas 2.6.0's (checked against ``tests/data/state_manifest.json``).
This module imports nothing heavy; the Paddle definitions load on demand in :func:`build_model`.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from dataclasses import dataclass

from core.preprocess import DEFAULT_PIPELINE, Preprocess, for_family


@dataclass(frozen=True)
class ModelSpec:
    """What the harness needs to know about one zoo model."""

    name: str
    family: str  # "LeViT" | "MobileViT"
    input_size: int
    num_classes: int = 1000

    @property
    def preprocess(self) -> Preprocess:
        """PaddleClas's eval pipeline: what the export's reference images and calibration use."""
        return for_family(self.family, DEFAULT_PIPELINE)

    @property
    def weights_url(self) -> str:
        """PaddleClas's ``<Name>_pretrained.pdparams``, or the same file name under $WEIGHTS_MIRROR_ENV."""
        base = os.environ.get(WEIGHTS_MIRROR_ENV) or OFFICIAL_WEIGHTS_BASE
        return f"{base.rstrip('/')}/{self.name}_pretrained.pdparams"

    @property
    def published(self) -> dict[str, float]:
        """PaddleClas's published ImageNet-1k val top-1 and top-5 of the official weights (its eval config)."""
        return dict(PUBLISHED[self.name])

    @property
    def weights_sha256(self) -> str | None:
        """The pinned sha256 of the official file, or None where none is known."""
        return OFFICIAL_SHA256.get(self.name)


OFFICIAL_WEIGHTS_BASE = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph"
WEIGHTS_MIRROR_ENV = "PADDLE_ONNX_BENCH_WEIGHTS_MIRROR"  # a base URL serving the same file names
# sha256 of each official file. PaddleClas publishes none (its model tables give download links only) and its host
# cannot be reached from where this project is built: no hash is pinned yet, so `--weights official` records its
# weights as unverified, trusted on first use (export.weights.UNPINNED). Pin one by measuring the downloaded file.
OFFICIAL_SHA256: dict[str, str | None] = {
    "LeViT_128S": None, "LeViT_128": None, "LeViT_192": None, "LeViT_256": None, "LeViT_384": None,
    "MobileViT_XXS": None, "MobileViT_XS": None, "MobileViT_S": None,
}

# PaddleClas's model tables (docs/en/models/ImageNet1k/{LeViT,MobileViT}.md): ImageNet-1k val, eval config.
PUBLISHED: dict[str, dict[str, float]] = {
    "LeViT_128S": {"top1": 0.7598, "top5": 0.9269}, "LeViT_128": {"top1": 0.7810, "top5": 0.9372},
    "LeViT_192": {"top1": 0.7934, "top5": 0.9446}, "LeViT_256": {"top1": 0.8085, "top5": 0.9497},
    "LeViT_384": {"top1": 0.8191, "top5": 0.9551}, "MobileViT_XXS": {"top1": 0.6867, "top5": 0.8878},
    "MobileViT_XS": {"top1": 0.7454, "top5": 0.9227}, "MobileViT_S": {"top1": 0.7814, "top5": 0.9413},
}

_LEVIT = ("LeViT_128S", "LeViT_128", "LeViT_192", "LeViT_256", "LeViT_384")
_MOBILEVIT = ("MobileViT_XXS", "MobileViT_XS", "MobileViT_S")

MODELS: dict[str, ModelSpec] = {
    **{n: ModelSpec(n, "LeViT", 224) for n in _LEVIT},
    **{n: ModelSpec(n, "MobileViT", 256) for n in _MOBILEVIT},
}
_MODULE_BY_FAMILY = {"LeViT": "export.models.levit", "MobileViT": "export.models.mobilevit"}


class UnknownModelError(ValueError):
    pass


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def expand_models(patterns: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Model names, allowing fnmatch patterns (``MobileViT*``); ``UnknownModelError`` names the bad one."""
    names: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise UnknownModelError(f"expected a model name, got {pattern!r}")
        matched = [m for m in MODELS if fnmatch.fnmatchcase(m, pattern)]
        if not matched:
            raise UnknownModelError(f"unknown model {pattern!r}; known models: {', '.join(MODELS)}")
        names += [m for m in matched if m not in names]
    return tuple(names)


def build_model(name: str, num_classes: int = 1000):
    """Construct the Paddle ``nn.Layer`` for ``name`` (random init; load weights separately)."""
    spec = get_spec(name)
    module = importlib.import_module(_MODULE_BY_FAMILY[spec.family])
    return getattr(module, name)(class_num=num_classes)
