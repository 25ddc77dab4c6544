"""The model zoo: PaddleClas LeViT and MobileViT, written in this project.

Every model here is weight-compatible with the official PaddleClas checkpoints: its ``state_dict`` keys,
shapes and dtypes equal PaddleClas 2.6.0's (checked against ``tests/data/state_manifest.json``).
This module imports nothing heavy; the Paddle definitions load on demand in :func:`build_model`.
"""

from __future__ import annotations

import fnmatch
import importlib
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
        return f"https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/{self.name}_pretrained.pdparams"


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
