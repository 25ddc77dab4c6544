"""PaddleClas transform ops (a config's list of ``{OpName: {argument: value}}``) read into preprocessing settings.

PaddleClas 2.6.0 runs these ops with its own classes (``ppcls/data/preprocess/ops/operators.py``, and
``deploy/python/preprocess.py`` for deployment). The reader accepts the ops and arguments whose effect
``core.preprocess.Preprocess`` reproduces exactly, and refuses anything else with one error that names the
config, the line and the op:

- ``DecodeImage``: ``to_rgb`` (channel order), ``backend`` cv2 | pil (the decoder), ``channel_first: False``,
  ``to_np: True``.
- ``ResizeImage``: ``resize_short`` or ``size`` (an int or ``[w, h]``), ``interpolation``, ``backend`` cv2 | pil.
- ``CropImage``: ``size`` (centre crop, square).
- ``NormalizeImage``: ``scale`` (a number or PaddleClas's arithmetic string such as ``1.0/255.0``, which it
  ``eval``s: only arithmetic on numbers is read here), ``mean``, ``std`` (3 each), ``order`` (``chw`` only on a
  CHW image, as PaddleClas's broadcasting allows), ``channel_num: 3``, ``output_fp16: False``.
- ``ToCHWImage``.

Where a PaddleClas model's preprocessing is written down (``SECTIONS``):

- a training config's ``DataLoader.Eval.dataset.transform_ops`` (what ``tools/eval.py`` measured; pipeline
  ``eval``): the ops get the file's bytes, and the data set transposes their HWC result to CHW itself;
- a training config's ``Infer.transforms`` (``tools/infer.py``; pipeline ``infer``): bytes in, CHW out;
- a deploy config's ``PreProcess.transform_ops`` (``deploy/python/predict_cls.py``; pipeline ``infer``): the
  predictor decodes with ``cv2.imread`` and flips to RGB before the ops, which must end CHW.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.yamlio import ConfigError, load_yaml

SUPPORTED_OPS = ("DecodeImage", "ResizeImage", "CropImage", "NormalizeImage", "ToCHWImage")
CV2_INTERPOLATIONS = ("nearest", "bilinear", "area", "bicubic", "lanczos")
PIL_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "lanczos", "hamming")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # NormalizeImage's defaults
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class TransformError(ConfigError):
    """A transform list core.preprocess cannot reproduce exactly; the message names the config, line and op."""


@dataclass(frozen=True)
class Section:
    """One place of a PaddleClas config that lists transform ops, and how PaddleClas runs them."""

    key: str  # dotted path in the YAML
    pipeline: str  # "eval" | "infer"
    decoded: bool  # the image reaches the ops decoded (cv2.imread, RGB) rather than as the file's bytes
    transposed_after: bool  # the caller transposes the ops' HWC result to CHW (the ops must end HWC)


SECTIONS = (
    Section("DataLoader.Eval.dataset.transform_ops", "eval", decoded=False, transposed_after=True),
    Section("PreProcess.transform_ops", "infer", decoded=True, transposed_after=False),
    Section("Infer.transforms", "infer", decoded=False, transposed_after=False),
)


def config_settings(path: Path, pipeline: str | None = None) -> tuple[dict, Section, str]:
    """(Preprocess settings, the section read, ``"<file>: <section>"``) of a PaddleClas training or deploy config.

    ``pipeline`` None: its eval ops when it has them, else its deploy or infer ops; ``eval`` | ``infer``: that one.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise TransformError(f"PaddleClas config {path} not found")
    data, lines = load_yaml(path)
    present = [s for s in SECTIONS if _lookup(data, s.key) is not None]
    chosen = [s for s in present if pipeline in (None, s.pipeline)]
    if not chosen:
        wanted = [s.key for s in SECTIONS if pipeline in (None, s.pipeline)]
        raise TransformError(f"{path}: no {' nor '.join(wanted)} (a PaddleClas training config has "
                             f"{SECTIONS[0].key} and {SECTIONS[2].key}, a deploy config {SECTIONS[1].key})")
    section = chosen[0]
    settings = settings_from_ops(_lookup(data, section.key), section, path.name, lines)
    return settings, section, f"{path}: {section.key}"


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def settings_from_ops(ops: Any, section: Section, source: str, lines: dict[str, int] | None = None) -> dict:
    """The ``Preprocess`` keyword arguments equal to PaddleClas running ``ops`` as ``section`` runs them."""
    reader = _OpsReader(section, source, lines or {})
    if not isinstance(ops, list) or not ops:
        raise reader.fail(None, None, "expected a non-empty list of transform ops")
    for index, op in enumerate(ops):
        if not isinstance(op, dict) or len(op) != 1:
            raise reader.fail(index, None, f"expected one {{OpName: arguments}} mapping, got {op!r}")
        (name, arguments), = op.items()
        reader.read(index, name, arguments)
    return reader.finish()


class _OpsReader:
    """Walks the ops in order, tracking what PaddleClas would hold between them (file bytes, HWC, CHW)."""

    def __init__(self, section: Section, source: str, lines: dict[str, int]) -> None:
        self.section, self.source, self.lines = section, source, lines
        self.layout = "hwc" if section.decoded else "bytes"
        self.seen: list[str] = []
        self.index: int | None = None
        self.settings: dict[str, Any] = {"resize_short": None, "resize": None, "crop": None, "decoder": "cv2",
                                         "channel_order": "RGB", "interpolation": "bilinear", "resize_backend": "cv2"}

    def fail(self, index: int | None, op: str | None, message: str) -> TransformError:
        key = self.section.key + (f"[{index}]" if index is not None else "")
        line = self.lines.get(key)
        where = f"{self.source}:{line}" if line else self.source
        return TransformError(f"{where}: {key}: " + (f"{op}: " if op else "") + message)

    def read(self, index: int, name: Any, arguments: Any) -> None:
        self.index = index
        if name not in SUPPORTED_OPS:
            raise self.fail(index, None, f"op {name!r} is not supported (supported: {', '.join(SUPPORTED_OPS)}); "
                                         "its effect could not be reproduced exactly")
        if name in self.seen:
            raise self.fail(index, name, "appears twice; each op is supported once")
        if arguments is not None and not isinstance(arguments, dict):
            raise self.fail(index, name, f"expected a mapping of arguments, got {arguments!r}")
        if self.layout == "bytes" and name != "DecodeImage":
            raise self.fail(index, name, "the ops receive the image file's bytes here: DecodeImage must come first")
        getattr(self, f"_{name}")(name, dict(arguments or {}))
        self.seen.append(name)

    # --- helpers --------------------------------------------------------------------------------------------
    def _arguments(self, op: str, given: dict, allowed: dict[str, Any]) -> dict:
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise self.fail(self.index, op, f"unknown argument {unknown[0]!r} (PaddleClas's {op} takes "
                                            f"{', '.join(allowed) or 'none'})")
        return {**allowed, **given}

    def _need(self, op: str, ok: bool, message: str) -> None:
        if not ok:
            raise self.fail(self.index, op, message)

    def _size(self, op: str, value: Any) -> tuple[int, int]:
        """(w, h) of an int or ``[w, h]`` size argument (PaddleClas reads ``size[0]`` as the width)."""
        sizes = [value, value] if isinstance(value, int) else value
        valid = isinstance(sizes, list | tuple) and len(sizes) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes)
        self._need(op, valid, f"size must be a positive integer or [width, height], got {value!r}")
        return int(sizes[0]), int(sizes[1])

    def _flag(self, op: str, arguments: dict, name: str) -> bool:
        value = arguments[name]
        self._need(op, isinstance(value, bool), f"{name} must be True or False, got {value!r}")
        return value

    # --- the ops --------------------------------------------------------------------------------------------
    def _DecodeImage(self, op: str, given: dict) -> None:  # named after the PaddleClas op it reads
        self._need(op, not self.section.decoded, "PaddleClas's deploy predictor decodes the image itself "
                   "(cv2.imread, then RGB) before these ops; a DecodeImage here would get an array, not bytes")
        arguments = self._arguments(op, given, {"to_rgb": True, "to_np": True, "channel_first": False,
                                                "backend": "cv2"})
        self._need(op, self._flag(op, arguments, "to_np"), "to_np: False hands a non-array to the next op; "
                   "only to_np: True is supported")
        self._need(op, not self._flag(op, arguments, "channel_first"), "channel_first: True hands a CHW image to "
                   "ops that expect HWC; only channel_first: False is supported")
        backend = str(arguments["backend"]).lower()
        self._need(op, backend in ("cv2", "pil"), f"backend {arguments['backend']!r} is not cv2 or pil")
        self.settings["decoder"] = backend
        self.settings["channel_order"] = "RGB" if self._flag(op, arguments, "to_rgb") else "BGR"
        self.layout = "hwc"

    def _ResizeImage(self, op: str, given: dict) -> None:
        self._need(op, self.layout == "hwc", "expects an HWC image, but ToCHWImage came before it")
        self._need(op, "CropImage" not in self.seen and "NormalizeImage" not in self.seen,
                   "resizing after CropImage or NormalizeImage is not supported (decode, resize, crop, normalise)")
        arguments = self._arguments(op, given, {"size": None, "resize_short": None, "interpolation": None,
                                                "backend": "cv2", "return_numpy": True})
        short = arguments["resize_short"]
        if short is not None and not (isinstance(short, int) and not isinstance(short, bool)):
            raise self.fail(self.index, op, f"resize_short must be an integer, got {short!r}")
        if short is not None and short > 0:  # PaddleClas: resize_short wins when positive, else size
            self.settings["resize_short"] = short
        elif arguments["size"] is not None:
            self.settings["resize"] = self._size(op, arguments["size"])
        else:
            raise self.fail(self.index, op, "needs resize_short or size")
        backend = str(arguments["backend"]).lower()
        self._need(op, backend in ("cv2", "pil"), f"backend {arguments['backend']!r} is not cv2 or pil "
                   "(PaddleClas would fall back to cv2's default filter, ignoring the interpolation)")
        self._need(op, backend == "cv2" or arguments["return_numpy"] is True,
                   "return_numpy: False hands a Pillow image to the next op; only True is supported")
        names = CV2_INTERPOLATIONS if backend == "cv2" else PIL_INTERPOLATIONS
        interpolation = arguments["interpolation"] or "bilinear"  # None: INTER_LINEAR or Image.BILINEAR
        self._need(op, isinstance(interpolation, str) and interpolation.lower() in names,
                   f"interpolation {interpolation!r} is not one of {', '.join(names)} for backend {backend}"
                   + (" ('random' draws a filter per image: not reproducible)" if interpolation == "random" else ""))
        self.settings.update(interpolation=interpolation.lower(), resize_backend=backend)

    def _CropImage(self, op: str, given: dict) -> None:
        self._need(op, self.layout == "hwc", "expects an HWC image, but ToCHWImage came before it")
        self._need(op, "NormalizeImage" not in self.seen, "cropping after NormalizeImage is not supported")
        width, height = self._size(op, self._arguments(op, given, {"size": None})["size"])
        self._need(op, width == height, f"a {width}x{height} crop: only square crops are supported")
        self.settings["crop"] = width

    def _NormalizeImage(self, op: str, given: dict) -> None:
        arguments = self._arguments(op, given, {"scale": None, "mean": None, "std": None, "order": "chw",
                                                "output_fp16": False, "channel_num": 3})
        order = "chw" if arguments["order"] == "chw" else "hwc"  # PaddleClas: anything but 'chw' broadcasts HWC
        self._need(op, order == self.layout, f"order {arguments['order']!r} normalises a {order.upper()} image, but "
                   f"the image is {self.layout.upper()} here (PaddleClas's broadcasting fails); write order: "
                   + ("'chw'" if self.layout == "chw" else "''"))
        self._need(op, not self._flag(op, arguments, "output_fp16"), "output_fp16: True is not supported")
        self._need(op, arguments["channel_num"] == 3, "channel_num 4 pads a zero channel: only 3 is supported")
        scale = arguments["scale"]
        self.settings["scale"] = 1.0 / 255.0 if scale is None else self._scale(op, scale)
        for name, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            self.settings[name] = self._triple(op, name, arguments[name], default)
        self._need(op, all(s != 0 for s in self.settings["std"]), "std must not contain 0")

    def _ToCHWImage(self, op: str, given: dict) -> None:
        self._arguments(op, given, {})
        self._need(op, self.layout == "hwc", "expects an HWC image")
        self.layout = "chw"

    def _triple(self, op: str, name: str, value: Any, default: tuple) -> tuple[float, float, float]:
        value = default if value is None else value
        valid = isinstance(value, list | tuple) and len(value) == 3 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        self._need(op, valid, f"{name} must be 3 numbers, got {value!r}")
        return tuple(float(v) for v in value)

    def _scale(self, op: str, value: Any) -> float:
        """A number, or an arithmetic string PaddleClas ``eval``s (``1.0/255.0``): numbers and + - * / only."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            result = _arithmetic(ast.parse(str(value), mode="eval").body)
        except (SyntaxError, ValueError, ZeroDivisionError):
            raise self.fail(self.index, op, f"scale {value!r} is not a number or arithmetic on numbers") from None
        self._need(op, result > 0, f"scale must be positive, got {value!r}")
        return result

    # --- the end --------------------------------------------------------------------------------------------
    def finish(self) -> dict:
        self.index = None
        if "NormalizeImage" not in self.seen:
            raise self.fail(None, None, "no NormalizeImage: the model would be fed uint8 pixels, which is not "
                                        "supported")
        if self.section.transposed_after:
            self._need("ToCHWImage", self.layout == "hwc", "the eval data set transposes the ops' HWC result to "
                       "CHW itself (ppcls ImageNetDataset), so a ToCHWImage here would feed a transposed array")
        else:
            self._need("end", self.layout == "chw", "the ops end with an HWC image: add ToCHWImage")
        s = self.settings
        self._need("end", s["crop"] is not None or s["resize"] is not None,
                   "neither CropImage nor a fixed ResizeImage size: images would reach the model at their own sizes")
        return s


def _arithmetic(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _arithmetic(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    raise ValueError("not arithmetic on numbers")
