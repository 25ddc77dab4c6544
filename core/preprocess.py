"""Evaluation preprocessing per model family, as in the PaddleClas eval configs.

Every setting is explicit and recorded with results, so nobody has to guess how an image became a tensor.
Pure numpy + Pillow: importing this never imports Paddle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

_PIL_FILTERS = {"bilinear": 2, "bicubic": 3, "nearest": 0, "lanczos": 1}  # PIL.Image.Resampling values


@dataclass(frozen=True)
class Preprocess:
    """Decode -> resize short side -> center crop -> scale -> normalise -> CHW float32."""

    resize_short: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"  # "RGB" | "BGR"
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def with_channel_order(self, order: str) -> Preprocess:
        if order not in ("RGB", "BGR"):
            raise ValueError(f"channel order must be RGB or BGR, got {order!r}")
        return replace(self, channel_order=order)

    def __call__(self, image) -> np.ndarray:
        """Turn a ``PIL.Image`` into a ``(3, crop, crop)`` float32 array."""
        image = image.convert("RGB")
        w, h = image.size
        ratio = self.resize_short / min(w, h)
        # PaddleClas ResizeImage(resize_short=...) rounds the scaled sides to the nearest integer.
        size = (int(round(w * ratio)), int(round(h * ratio)))
        image = image.resize(size, _PIL_FILTERS[self.interpolation])
        w, h = image.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2  # PaddleClas CropImage
        image = image.crop((left, top, left + self.crop, top + self.crop))
        array = np.asarray(image, dtype=np.float32)
        if self.channel_order == "BGR":
            array = array[:, :, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        array = (array * np.float32(self.scale) - mean) / std
        return np.ascontiguousarray(array.transpose(2, 0, 1))


PREPROCESS_BY_FAMILY = {
    "LeViT": Preprocess(resize_short=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    # MobileViT's PaddleClas *infer* config decodes RGB; its *eval* config says to_rgb: False (BGR).
    # We default to the infer config and make the order a recorded, overridable setting.
    "MobileViT": Preprocess(resize_short=292, crop=256, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
}
