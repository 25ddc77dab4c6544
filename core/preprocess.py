"""Image preprocessing: PaddleClas 2.6.0's transform ops, step by step.

The steps are PaddleClas's transform classes (``ppcls/data/preprocess/ops/operators.py``), with the same
libraries: ``DecodeImage`` (``cv2.imdecode(..., IMREAD_COLOR)``: 3 channels in BGR order, grayscale
replicated, alpha dropped, EXIF orientation applied; or with ``backend: pil``, Pillow's ``convert("RGB")``),
``to_rgb``, ``ResizeImage`` (``resize_short``, sides ``int(round(side * resize_short / short))``, or a fixed
``size``; OpenCV ``INTER_LINEAR`` unless the config names another filter or ``backend: pil``), ``CropImage``
(centre, start ``(side - crop) // 2``), ``NormalizeImage`` (``(x * float32(scale) - mean) / std`` in float32)
and ``ToCHWImage``. ``tests/test_preprocess_paddleclas.py`` holds the result to PaddleClas's own classes on real
images.

Every pipeline is a PaddleClas transform list read by ``core.paddleclas_ops``: the built-in models' (their
PaddleClas configs' ops, below) and a brought model's (``from_config``: its training or deploy config) alike.
Two pipelines per built-in family (``PIPELINES``): ``eval``, the config PaddleClas's published top-1 was measured
with (the default), and ``infer``, its deployment config. They differ for MobileViT only: eval decodes BGR
(``to_rgb: False``) and resizes with Pillow's bilinear filter, infer is RGB with OpenCV's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from core.paddleclas_ops import SECTIONS, config_settings, settings_from_ops

PIPELINES = ("eval", "infer")
DEFAULT_PIPELINE = "eval"
FAMILIES = ("LeViT", "MobileViT")
_CV2_FILTERS = {"bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC", "nearest": "INTER_NEAREST",
                "area": "INTER_AREA", "lanczos": "INTER_LANCZOS4"}
_PIL_FILTERS = {"bilinear": 2, "bicubic": 3, "nearest": 0, "lanczos": 1, "box": 4,
                "hamming": 5}  # PIL.Image.Resampling values


class ImageError(ValueError):
    """One image cannot become a tensor (not decodable, or smaller than the crop after resizing)."""


def _cv2():
    import cv2

    return cv2


@dataclass(frozen=True)
class Preprocess:
    """Decode -> channel order -> resize (short side, or a fixed size) -> centre crop -> scale, normalise -> CHW.

    Calling it turns an image file (path or bytes) into the ``output_shape`` float32 array the model is fed.
    """

    resize_short: int | None  # ResizeImage(resize_short=...); None: a fixed ``resize``, or no ResizeImage
    crop: int | None  # CropImage(size=...), square; None: no CropImage (then ``resize`` fixes the size)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"  # "RGB" | "BGR": the order of the channels fed to the model
    interpolation: str = "bilinear"
    resize_backend: str = "cv2"  # "cv2" (PaddleClas's default) | "pil" (a config's ``backend: pil``)
    decoder: str = "cv2"  # cv2.imdecode(..., IMREAD_COLOR), as PaddleClas's DecodeImage; "pil": backend: pil
    pipeline: str | None = None  # the PaddleClas config section reproduced ("eval" | "infer"); None: custom
    resize: tuple[int, int] | None = None  # ResizeImage(size=[w, h]): a fixed (width, height)
    source: str | None = None  # "<config file>: <section>" the ops were read from; None: built in

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel order must be RGB or BGR, got {self.channel_order!r}")
        if self.resize_backend not in ("cv2", "pil"):
            raise ValueError(f"resize backend must be cv2 or pil, got {self.resize_backend!r}")
        filters = _CV2_FILTERS if self.resize_backend == "cv2" else _PIL_FILTERS
        if self.interpolation not in filters:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {', '.join(filters)}")
        if self.decoder not in ("cv2", "pil"):
            raise ValueError(f"decoder {self.decoder!r} is not supported (cv2, pil)")
        if self.resize_short is not None and self.resize is not None:
            raise ValueError("resize_short and a fixed resize exclude each other (PaddleClas's ResizeImage)")
        if self.crop is None and self.resize is None:
            raise ValueError("no fixed output size: a crop or a fixed resize is needed")
        for name in ("resize_short", "crop"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the tensors it makes."""
        if self.crop is not None:
            return (3, self.crop, self.crop)
        width, height = self.resize
        return (3, height, width)

    # --- the steps ------------------------------------------------------------------------------------------
    def decode(self, source: str | os.PathLike | bytes) -> np.ndarray:
        """HWC uint8 BGR, as ``cv2.imdecode(buffer, IMREAD_COLOR)`` (or Pillow's RGB, reversed, for ``pil``);
        ImageError when it cannot be read."""
        if isinstance(source, bytes):
            data = source
        else:
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise ImageError(f"cannot read ({exc.strerror or exc})") from None
        if not data:
            raise ImageError("empty file")
        if self.decoder == "pil":
            return _pil_decode(data)
        cv2 = _cv2()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageError("not a decodable image (OpenCV imdecode failed)")
        return image

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after ResizeImage, rounded as PaddleClas's ResizeImage rounds."""
        if self.resize is not None:
            return self.resize
        if self.resize_short is None:
            return width, height
        ratio = float(self.resize_short) / min(width, height)
        return int(round(width * ratio)), int(round(height * ratio))

    def crop_of(self, bgr: np.ndarray) -> np.ndarray:
        """The HWC uint8 crop in ``channel_order``: what PaddleClas hands to NormalizeImage."""
        # OpenCV's channel swap, not a reversed view: the resize would first copy the view (3x the resize's time)
        image = _cv2().cvtColor(bgr, _cv2().COLOR_BGR2RGB) if self.channel_order == "RGB" else bgr
        height, width = image.shape[:2]
        size = self.resized_size(width, height)
        if self.resize_short is not None or self.resize is not None:  # a ResizeImage op
            image = self._resized(image, size)
        if self.crop is None:
            return image
        height, width = image.shape[:2]
        if height < self.crop or width < self.crop:
            # PaddleClas's CropImage would slice a smaller (or wrapped) patch; no model can take it.
            raise ImageError(f"{width}x{height} after resizing is smaller than the {self.crop} crop")
        top, left = (height - self.crop) // 2, (width - self.crop) // 2
        return image[top:top + self.crop, left:left + self.crop]

    def _resized(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if self.resize_backend == "cv2":
            cv2 = _cv2()
            return cv2.resize(image, size, interpolation=getattr(cv2, _CV2_FILTERS[self.interpolation]))
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, _PIL_FILTERS[self.interpolation]))

    def normalise(self, crop: np.ndarray) -> np.ndarray:
        """``(crop * float32(scale) - mean) / std`` in float32, as CHW (NormalizeImage + ToCHWImage), read from
        ``value_table``: one lookup per pixel written straight into CHW, instead of four float passes and a
        transposing copy (the pass's preprocessing runs on the cores the runtime needs)."""
        if crop.dtype != np.uint8:
            raise ValueError(f"normalise takes the uint8 crop PaddleClas normalises, got {crop.dtype}")
        table = self.value_table
        height, width = crop.shape[:2]
        chw = np.empty((3, height, width), np.float32)
        for channel in range(3):
            np.take(table[channel], crop[:, :, channel], out=chw[channel])
        return chw

    @cached_property
    def value_table(self) -> np.ndarray:
        """(3, 256) float32: NormalizeImage's float32 arithmetic on each of the 256 values a uint8 channel can
        hold, the same operations in the same order, so a lookup equals the per-pixel formula bit for bit (tested
        on every value)."""
        values = np.arange(256, dtype=np.uint8).astype(np.float32)[None, :]
        mean = np.asarray(self.mean, np.float32)[:, None]
        std = np.asarray(self.std, np.float32)[:, None]
        return (values * np.float32(self.scale) - mean) / std

    def __call__(self, source: str | os.PathLike | bytes) -> np.ndarray:
        """An image file (path or bytes) as the ``output_shape`` float32 array the model is fed."""
        return self.normalise(self.crop_of(self.decode(source)))

    def enlarges(self, width: int, height: int) -> bool:
        """Whether an image of this size is smaller than the crop, so resize_short scales it up."""
        return self.resize_short is not None and self.crop is not None and min(width, height) < self.crop


def _pil_decode(data: bytes) -> np.ndarray:
    """PaddleClas's DecodeImage(backend="pil"): ``Image.open(...).convert("RGB")``, as a BGR array."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"not a decodable image (Pillow: {exc})") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _normalize(mean: list[float], std: list[float]) -> dict:
    return {"NormalizeImage": {"scale": "1.0/255.0", "mean": mean, "std": std, "order": ""}}


def _ops(to_rgb: bool, resize: dict, crop: int, normalize: dict, infer: bool) -> list[dict]:
    ops = [{"DecodeImage": {"to_rgb": to_rgb, "channel_first": False}}, {"ResizeImage": resize},
           {"CropImage": {"size": crop}}, normalize]
    return ops + [{"ToCHWImage": None}] if infer else ops


_LEVIT_NORMALIZE = _normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
_MOBILEVIT_NORMALIZE = _normalize([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
# ppcls/configs/ImageNet/{LeViT,MobileViT}/*.yaml of PaddleClas 2.6.0, as written there: DataLoader.Eval's
# transform_ops (eval; the data set transposes to CHW after them) and Infer's transforms (infer).
CONFIG_OPS: dict[tuple[str, str], list[dict]] = {
    # LeViT: ResizeImage without a backend (OpenCV INTER_LINEAR), RGB; its eval and infer configs agree.
    ("LeViT", "eval"): _ops(True, {"resize_short": 256}, 224, _LEVIT_NORMALIZE, infer=False),
    ("LeViT", "infer"): _ops(True, {"resize_short": 256}, 224, _LEVIT_NORMALIZE, infer=True),
    # MobileViT eval: DecodeImage to_rgb: False (BGR), ResizeImage interpolation: bilinear, backend: pil.
    ("MobileViT", "eval"): _ops(False, {"resize_short": 292, "interpolation": "bilinear", "backend": "pil"}, 256,
                                _MOBILEVIT_NORMALIZE, infer=False),
    # MobileViT infer: RGB, ResizeImage without a backend (OpenCV).
    ("MobileViT", "infer"): _ops(True, {"resize_short": 292}, 256, _MOBILEVIT_NORMALIZE, infer=True),
}
_SECTION_OF = {"eval": SECTIONS[0], "infer": SECTIONS[2]}  # DataLoader.Eval, Infer.transforms
PREPROCESS_BY_PIPELINE: dict[tuple[str, str], Preprocess] = {
    (family, pipeline): Preprocess(**settings_from_ops(ops, _SECTION_OF[pipeline], f"PaddleClas {family}"),
                                   pipeline=pipeline)
    for (family, pipeline), ops in CONFIG_OPS.items()
}


def _split_choice(value: str) -> tuple[Path, str | None]:
    """``PATH[:eval|:infer]`` -> (path, section pipeline or None)."""
    head, sep, tail = value.rpartition(":")
    if sep and tail in PIPELINES and not Path(value).expanduser().exists():
        return Path(head).expanduser(), tail
    return Path(value).expanduser(), None


def from_config(value: str | os.PathLike) -> Preprocess:
    """The preprocessing a PaddleClas config writes down (``PATH``, or ``PATH:eval`` / ``PATH:infer`` for one
    section of a training config): ``core.paddleclas_ops.config_settings``; TransformError names what is wrong."""
    path, pipeline = _split_choice(str(value))
    settings, section, source = config_settings(path, pipeline)
    return Preprocess(**settings, pipeline=section.pipeline, source=source)


def preprocess_choice(value: str) -> str:
    """A ``--preprocess`` value checked: ``eval`` | ``infer`` as they are, a config read (TransformError when it
    cannot be) and made absolute, since cells and exports run in other processes and folders."""
    if value in PIPELINES:
        return value
    path, pipeline = _split_choice(value)
    from_config(value)
    return str(path.resolve()) + (f":{pipeline}" if pipeline else "")


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
                     "have built-in pipelines (a brought model's comes from its PaddleClas config: --preprocess "
                     "CONFIG.yaml)")


def for_model(model_name: str, pipeline: str = DEFAULT_PIPELINE) -> Preprocess:
    """The callable from an image path to the CHW float32 array ``model_name`` is fed, as PaddleClas's
    ``pipeline`` config (``eval``: what its published top-1 was measured with; ``infer``: its deployment)."""
    return for_family(family_of(model_name), pipeline)
