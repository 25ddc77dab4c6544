"""The ``--precision`` flags of ``python -m export`` and the rows it prints for derived models."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.manifest import load_manifest
from export.pipeline import ExportResult
from export.quantize import INT8_RUNTIMES, INT8_TARGETS, MIN_IMAGES, Int8Recipe, PrecisionUsageError
from export.quantize.build import DerivedRequest, check_derived_request, derive
from export.quantize.calibration import DEFAULT_CALIBRATION


def add_precision_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reduced precision (a model derived from each fp32 export, in a sibling folder)")
    g.add_argument("--precision", default="fp32", choices=("fp32", "int8", "fp16"),
                   help="int8: quantized for --runtime (default: both ov and ort); fp16: fp16 ONNX for ORT GPU "
                        "providers and TensorRT")
    g.add_argument("--runtime", choices=INT8_TARGETS,
                   help="int8 for OpenVINO (NNCF, an IR), ONNX Runtime on CPU (static QDQ ONNX, per-channel "
                        "weights) or ort-cuda (biases kept float: ORT's CUDA provider cannot dequantize int32 biases)")
    g.add_argument("--calibration", metavar="DIR|LIST|NPY",
                   help=f"calibration images (default: the bundled {DEFAULT_CALIBRATION.name}); never the "
                        "evaluation images")
    g.add_argument("--calibration-size", type=int, metavar="N",
                   help=f"calibrate on N images spread over the set (at least {MIN_IMAGES}; default: all)")
    g.add_argument("--max-drop", type=float, metavar="X",
                   help="accuracy-aware (ov): keep in float the layers that cost more than X top-1 agreement "
                        "with fp32 on a validation split of the calibration images")
    g.add_argument("--allow-eval-overlap", action="store_true",
                   help="calibrate even on images that are evaluated too (recorded in every record)")


def derived_request(args: argparse.Namespace) -> list[DerivedRequest]:
    """The derived models asked for, checked (flags, calibration set), before any export runs."""
    if args.precision == "fp32":
        recipe = Int8Recipe(args.calibration, args.calibration_size, args.max_drop)
        flags = ["--runtime"] * (args.runtime is not None) + list(recipe.flags())
        if flags or args.allow_eval_overlap:
            raise PrecisionUsageError(f"{', '.join(flags) or '--allow-eval-overlap'} needs --precision int8 "
                                      f"(or fp16 for --runtime ort)")
        return []
    if args.precision == "fp16":
        runtimes: tuple[str | None, ...] = (args.runtime,)
    elif args.runtime:
        runtimes = (args.runtime,)
    elif args.max_drop is not None:
        raise PrecisionUsageError("--max-drop (NNCF's accuracy control) builds the OpenVINO model: add --runtime ov")
    else:
        runtimes = INT8_RUNTIMES
    requests = [DerivedRequest(args.precision, runtime, args.calibration, args.calibration_size, args.max_drop,
                               args.allow_eval_overlap, args.force) for runtime in runtimes]
    for request in requests:
        check_derived_request(request)
    return requests


def derive_all(fp32_manifest: Path, requests: list[DerivedRequest]) -> list[ExportResult]:
    return [derive(fp32_manifest, request) for request in requests]


def format_derived_row(result: ExportResult) -> str:
    """``  -> int8-ov    agree 44/44  min cos 0.99999  max|d| 1.3e-03  int8 72/73 MatMul/Conv  17.2 s  built``."""
    manifest = load_manifest(result.manifest_path)
    described = manifest.reduced_precision or {}
    fp32_folder = Path((manifest.source or {}).get("manifest", "")).parent.name
    variant = result.manifest_path.parent.name.removeprefix(f"{fp32_folder}-")
    images = (described.get("accuracy") or {}).get("images") or {}
    if images:
        figures = (f"agree {round(images['top1_agreement'] * images['n'])}/{images['n']}  "
                   f"min cos {images['cosine_min']:.5f}  max|d| {images['max_abs_diff']:.1e}")
    else:
        figures = "no evaluation images"
    return (f"  -> {variant:<9} {figures}  {census_line(described)}  {manifest.export_seconds:.1f} s  "
            f"{'hit' if result.cache_hit else 'built'}  {result.manifest_path}")


def census_line(described: dict) -> str:
    """What was quantized, in a few words, for tables."""
    runtime = described.get("runtime_precisions") or {}
    census = described.get("census") or {}
    if runtime:
        return f"int8 {runtime.get('matmul_conv_int8')}/{runtime.get('matmul_conv_layers')} MatMul/Conv"
    if "ort_cpu_int8_kernels" in census:
        return f"ORT int8 kernels {sum(census['ort_cpu_int8_kernels'].values())}, Q {census['quantize_linear']}"
    if "cast_nodes" in census:
        return f"{census['cast_nodes']} Casts ({census.get('ort_cpu_cast_nodes')} on ORT CPU)"
    return "-"
