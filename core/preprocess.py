"""Image preprocessing per model family: PaddleClas 2.6.0's eval and infer configs, step by step.

The steps are PaddleClas's transform classes (``ppcls/data/preprocess/ops/operators.py``), with the same
libraries: ``DecodeImage`` (``cv2.imdecode(..., IMREAD_COLOR)``: 3 channels in BGR order, grayscale
replicated, alpha dropped, EXIF orientation applied), ``to_rgb``, ``ResizeImage(resize_short=...)`` (OpenCV
``INTER_LINEAR`` unless the config says ``backend: pil``; sides ``int(round(side * resize_short / short))``),
``CropImage`` (centre, start ``(side - crop) // 2``), ``NormalizeImage`` (``(x * float32(scale) - mean) /
std`` in float32) and ``ToCHWImage``. ``tests/test_preprocess_paddleclas.py`` holds the result to PaddleClas's
own classes on real images.

Two pipelines per family (``PIPELINES``): ``eval``, the config PaddleClas's published top-1 was measured with
(the default), and ``infer``, its deployment config. They differ for MobileViT only: eval decodes BGR
(``to_rgb: False``) and resizes with Pillow's bilinear filter, infer is RGB with OpenCV's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PIPELINES = ("eval", "infer")
DEFAULT_PIPELINE = "eval"
FAMILIES = ("LeViT", "MobileViT")
_CV2_FILTERS = {"bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC", "nearest": "INTER_NEAREST",
                "area": "INTER_AREA", "lanczos": "INTER_LANCZOS4"}
_PIL_FILTERS = {"bilinear": 2, "bicubic": 3, "nearest": 0, "lanczos": 1}  # PIL.Image.Resampling values


class ImageError(ValueError):
    """One image cannot become a tensor (not decodable, or smaller than the crop after resizing)."""


def _cv2():
    import cv2

    return cv2


@dataclass(frozen=True)
class Preprocess:
    """Decode -> channel order -> resize short side -> centre crop -> scale, normalise -> CHW float32.

    Calling it turns an image file (path or bytes) into the ``(3, crop, crop)`` float32 array the model is fed.
    """

    resize_short: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"  # "RGB" | "BGR": the order of the channels fed to the model
    interpolation: str = "bilinear"
    resize_backend: str = "cv2"  # "cv2" (PaddleClas's default) | "pil" (a config's ``backend: pil``)
    decoder: str = "cv2"  # cv2.imdecode(..., IMREAD_COLOR), as PaddleClas's DecodeImage
    pipeline: str | None = None  # the PaddleClas config reproduced ("eval" | "infer"); None: custom

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel order must be RGB or BGR, got {self.channel_order!r}")
        if self.resize_backend not in ("cv2", "pil"):
            raise ValueError(f"resize backend must be cv2 or pil, got {self.resize_backend!r}")
        filters = _CV2_FILTERS if self.resize_backend == "cv2" else _PIL_FILTERS
        if self.interpolation not in filters:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {', '.join(filters)}")
        if self.decoder != "cv2":
            raise ValueError(f"decoder {self.decoder!r} is not supported (cv2)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    # --- the steps ------------------------------------------------------------------------------------------
    def decode(self, source: str | os.PathLike | bytes) -> np.ndarray:
        """HWC uint8 BGR, as ``cv2.imdecode(buffer, IMREAD_COLOR)``; ImageError when it cannot be read."""
        if isinstance(source, bytes):
            data = source
        else:
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise ImageError(f"cannot read ({exc.strerror or exc})") from None
        if not data:
            raise ImageError("empty file")
        cv2 = _cv2()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageError("not a decodable image (OpenCV imdecode failed)")
        return image

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after ``resize_short``, rounded as PaddleClas's ResizeImage rounds."""
        ratio = float(self.resize_short) / min(width, height)
        return int(round(width * ratio)), int(round(height * ratio))

    def crop_of(self, bgr: np.ndarray) -> np.ndarray:
        """The HWC uint8 crop in ``channel_order``: what PaddleClas hands to NormalizeImage."""
        image = bgr[:, :, ::-1] if self.channel_order == "RGB" else bgr
        height, width = image.shape[:2]
        size = self.resized_size(width, height)
        if self.resize_backend == "cv2":
            cv2 = _cv2()
            image = cv2.resize(image, size, interpolation=getattr(cv2, _CV2_FILTERS[self.interpolation]))
        else:
            from PIL import Image

            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
                size, _PIL_FILTERS[self.interpolation]))
        height, width = image.shape[:2]
        if height < self.crop or width < self.crop:
            # PaddleClas's CropImage would slice a smaller (or wrapped) patch; no model can take it.
            raise ImageError(f"{width}x{height} after resizing is smaller than the {self.crop} crop")
        top, left = (height - self.crop) // 2, (width - self.crop) // 2
        return image[top:top + self.crop, left:left + self.crop]

    def normalise(self, crop: np.ndarray) -> np.ndarray:
        """``(crop * float32(scale) - mean) / std`` in float32, as CHW (NormalizeImage + ToCHWImage)."""
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        array = (crop.astype(np.float32) * np.float32(self.scale) - mean) / std
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def __call__(self, source: str | os.PathLike | bytes) -> np.ndarray:
        """An image file (path or bytes) as the ``(3, crop, crop)`` float32 array the model is fed."""
        return self.normalise(self.crop_of(self.decode(source)))

    def enlarges(self, width: int, height: int) -> bool:
        """Whether an image of this size is smaller than the crop, so resize_short scales it up."""
        return min(width, height) < self.crop


_LEVIT = dict(resize_short=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
_MOBILEVIT = dict(resize_short=292, crop=256, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

# ppcls/configs/ImageNet/{LeViT,MobileViT}/*.yaml of PaddleClas 2.6.0: DataLoader.Eval and Infer transforms.
PREPROCESS_BY_PIPELINE: dict[tuple[str, str], Preprocess] = {
    # LeViT: ResizeImage without a backend (OpenCV INTER_LINEAR), RGB; its eval and infer configs agree.
    ("LeViT", "eval"): Preprocess(**_LEVIT, pipeline="eval"),
    ("LeViT", "infer"): Preprocess(**_LEVIT, pipeline="infer"),
    # MobileViT eval: DecodeImage to_rgb: False (BGR), ResizeImage interpolation: bilinear, backend: pil.
    ("MobileViT", "eval"): Preprocess(**_MOBILEVIT, channel_order="BGR", resize_backend="pil", pipeline="eval"),
    # MobileViT infer: RGB, ResizeImage without a backend (OpenCV).
    ("MobileViT", "infer"): Preprocess(**_MOBILEVIT, pipeline="infer"),
}


def check_pipeline(pipeline: str) -> str:
    if pipeline not in PIPELINES:
        raise ValueError(f"preprocessing pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
    return pipeline


def for_family(family: str, pipeline: str = DEFAULT_PIPELINE) -> Preprocess:
    """The PaddleClas pipeline of a model family (``LeViT`` | ``MobileViT``)."""
    check_pipeline(pipeline)
    if family not in FAMILIES:
        raise ValueError(f"no PaddleClas preprocessing for family {family!r}; known: {', '.join(FAMILIES)}")
    return PREPROCESS_BY_PIPELINE[family, pipeline]


def family_of(model_name: str) -> str:
    """``LeViT`` for ``LeViT_*``, ``MobileViT`` for ``MobileViT_*``; ValueError otherwise."""
    for family in FAMILIES:
        if model_name.startswith(f"{family}_"):
            return family
    raise ValueError(f"no PaddleClas preprocessing for model {model_name!r}: only {', '.join(FAMILIES)} models "
                     "have one (a brought model brings its own tensors)")


def for_model(model_name: str, pipeline: str = DEFAULT_PIPELINE) -> Preprocess:
    """The callable from an image path to the CHW float32 array ``model_name`` is fed, as PaddleClas's
    ``pipeline`` config (``eval``: what its published top-1 was measured with; ``infer``: its deployment)."""
    return for_family(family_of(model_name), pipeline)
