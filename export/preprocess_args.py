"""``python -m export``'s preprocessing flags for a brought model: ``--preprocess CONFIG.yaml`` (its PaddleClas
training or deploy config) or, without a config, ``--resize-short --crop --mean --std ...``.

Either way the settings go through ``core.paddleclas_ops``, the reader of the built-in models' PaddleClas
configs: the flags are written as the transform ops they stand for. The result is the brought model's recorded
preprocessing (the manifest's ``preprocess``): real-image parity, drift, int8 calibration and explain use it.
"""

from __future__ import annotations

import argparse

from core.paddleclas_ops import CV2_INTERPOLATIONS, PIL_INTERPOLATIONS, SECTIONS, settings_from_ops
from core.preprocess import PIPELINES, Preprocess, from_config
from core.yamlio import ConfigError

FLAGS = ("resize_short", "crop", "mean", "std", "scale", "channel_order", "interpolation", "resize_backend")
FROM_FLAGS = "python -m export flags"  # the recorded source of flag-made settings


def add_preprocess_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a brought model's preprocessing (recorded in its manifest; needs --paddle-model)")
    g.add_argument("--preprocess", metavar="CONFIG.yaml[:eval|:infer]",
                   help="its PaddleClas config: a training config (DataLoader.Eval.dataset.transform_ops; ':infer' "
                        "reads Infer.transforms) or a deploy config (PreProcess.transform_ops)")
    g.add_argument("--resize-short", type=int, metavar="N", help="without a config: ResizeImage resize_short")
    g.add_argument("--crop", type=int, metavar="N", help="without a config: CropImage size (square)")
    g.add_argument("--mean", metavar="R,G,B", help="NormalizeImage mean (default: ImageNet's, as PaddleClas)")
    g.add_argument("--std", metavar="R,G,B", help="NormalizeImage std (default: ImageNet's, as PaddleClas)")
    g.add_argument("--scale", help="NormalizeImage scale (default 1.0/255.0)")
    g.add_argument("--channel-order", choices=("RGB", "BGR"), help="DecodeImage to_rgb (RGB, default) or not (BGR)")
    g.add_argument("--interpolation", choices=sorted(set(CV2_INTERPOLATIONS) | set(PIL_INTERPOLATIONS)),
                   help="ResizeImage interpolation (default bilinear)")
    g.add_argument("--resize-backend", choices=("cv2", "pil"), help="ResizeImage backend (default cv2)")


def preprocess_from_args(args: argparse.Namespace) -> Preprocess | None:
    """The brought model's preprocessing asked, or None; ConfigError (a usage error) when asked wrongly."""
    flags = [f"--{name.replace('_', '-')}" for name in FLAGS if getattr(args, name) is not None]
    if args.preprocess is None and not flags:
        return None
    if not args.paddle_model:
        what = "--preprocess" if args.preprocess is not None else ", ".join(flags)
        raise ConfigError(f"{what} sets a brought model's "
                          "preprocessing (with --paddle-model); a zoo model's export records PaddleClas's eval "
                          "pipeline, and python -m bench --preprocess eval|infer picks the one its drift uses")
    if args.preprocess is not None:
        if flags:
            raise ConfigError(f"--preprocess CONFIG.yaml and {', '.join(flags)} exclude each other: the config "
                              "says it all")
        if args.preprocess in PIPELINES:
            raise ConfigError(f"--preprocess {args.preprocess} names a built-in pipeline of the zoo models; a "
                              "brought model takes its PaddleClas config: --preprocess CONFIG.yaml")
        return from_config(args.preprocess)
    if args.crop is None:
        raise ConfigError(f"{', '.join(flags)} without --crop N: the images need a fixed size (or pass "
                          "--preprocess CONFIG.yaml)")
    if args.resize_short is None and (args.interpolation or args.resize_backend):
        raise ConfigError("--interpolation and --resize-backend shape the resize: add --resize-short N")
    return Preprocess(**settings_from_ops(ops_of_flags(args), SECTIONS[0], "command line"), source=FROM_FLAGS)


def ops_of_flags(args: argparse.Namespace) -> list[dict]:
    """The PaddleClas transform ops the flags stand for (an eval transform list)."""
    resize = {"resize_short": args.resize_short, "interpolation": args.interpolation,
              "backend": args.resize_backend or "cv2"}
    normalize = {"mean": _triple(args.mean, "--mean"), "std": _triple(args.std, "--std"), "order": ""}
    if args.scale is not None:
        normalize["scale"] = args.scale
    return [{"DecodeImage": {"to_rgb": args.channel_order != "BGR"}},
            *([{"ResizeImage": resize}] if args.resize_short is not None else []),
            {"CropImage": {"size": args.crop}}, {"NormalizeImage": normalize}]


def _triple(value: str | None, flag: str) -> list[float] | None:
    if value is None:
        return None
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 3:
        raise ConfigError(f"{flag} expects three comma-separated numbers (R,G,B), got {value!r}")
    return numbers
