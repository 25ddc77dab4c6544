"""One derived model, cached like an export: fp32 manifest + request -> (cache hit | build in a temporary folder
-> publish) -> manifest path.

The cache key covers the fp32 model (its sha256 and its own cache key), the variant and its parameters, the
calibration set (file-list hash and size, overlap allowed or not), ``reduce_range`` where it follows the CPU,
the installed package versions and the code (``export/`` and ``core/``). The folder is built beside its final
place and renamed into place when complete (``export.layout``), so an interrupted or failed build leaves
nothing in ``artifacts/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.files import check_writable_dir, sha256_of
from core.logits import Logits
from core.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    ModelFile,
    load_manifest,
    package_versions,
    save_manifest,
)
from core.progress import expect_stages, stage_done
from export.build import load_eval_images, seeded_inputs
from export.layout import derived_dir, discard_unfinished, make_work_dir, publish
from export.pipeline import ExportResult, code_digest, is_fresh
from export.quantize import PrecisionUsageError, QuantizeError, variant_of
from export.quantize.calibration import CalibrationSet, check_overlap, open_calibration, split_for_validation

log = logging.getLogger(__name__)

MODEL_FILES = {"int8-ov": "model.xml", "int8-ort": "model.onnx", "int8-ort-cuda": "model.onnx", "fp16": "model.onnx"}


@dataclass(frozen=True)
class DerivedRequest:
    """A reduced-precision model asked of an fp32 export (``python -m export --precision ...``)."""

    precision: str  # "int8" | "fp16"
    runtime: str | None = None  # int8: "ov" | "ort"
    calibration: str | None = None  # folder, list file or .npy; None: the bundled calibration images
    calibration_size: int | None = None
    max_drop: float | None = None  # accuracy-aware (OpenVINO, NNCF): absolute top-1 agreement drop allowed
    allow_eval_overlap: bool = False
    force: bool = False

    @property
    def variant(self) -> str:
        return variant_of(self.precision, self.runtime)

    @property
    def int8(self) -> bool:
        return self.precision == "int8"


def check_derived_request(request: DerivedRequest) -> CalibrationSet | None:
    """What can be refused before any export runs (flags, the calibration set's presence and size)."""
    request.variant  # noqa: B018 - raises PrecisionUsageError for an impossible precision/runtime
    if not request.int8 and (request.calibration or request.calibration_size or request.max_drop is not None
                             or request.allow_eval_overlap):
        raise PrecisionUsageError("--calibration, --calibration-size, --max-drop and --allow-eval-overlap apply "
                                  "to --precision int8 only")
    if request.max_drop is not None:
        if request.runtime != "ov":
            raise PrecisionUsageError("--max-drop (accuracy-aware quantization, NNCF's accuracy control) builds "
                                      "the OpenVINO int8 model: add --runtime ov")
        if not 0 <= request.max_drop < 1:
            raise PrecisionUsageError(f"--max-drop is an absolute top-1 agreement drop in [0, 1), got "
                                      f"{request.max_drop}")
    return open_calibration(request.calibration, request.calibration_size) if request.int8 else None


def derive(fp32_manifest_path: Path, request: DerivedRequest) -> ExportResult:
    """Make (or reuse) the derived model of one fp32 export."""
    fp32_manifest_path = Path(fp32_manifest_path)
    try:
        fp32 = load_manifest(fp32_manifest_path)
    except ManifestError as exc:
        raise QuantizeError(str(exc)) from None
    if fp32.precision != "fp32" or fp32.graph.format != "onnx":
        raise PrecisionUsageError(f"{fp32_manifest_path} is a {fp32.precision} {fp32.graph.format} model; "
                                  f"reduced precision is derived from an fp32 ONNX export")
    calibration = check_derived_request(request)
    if calibration is not None:
        images_entry = (fp32.reference or {}).get("images") or {}
        check_overlap(calibration, images_entry.get("folder"), request.allow_eval_overlap)
    manifest_path, key = derived_cache(fp32_manifest_path, fp32, request, calibration)
    out_dir = manifest_path.parent
    if not request.force and is_fresh(manifest_path, key):
        log.info("%s %s: cache hit (%s)", fp32.model, request.variant, out_dir)
        return ExportResult(manifest_path, True)
    try:
        check_writable_dir(out_dir.parent)
    except OSError as exc:
        raise QuantizeError(f"output folder {out_dir.parent} is not writable ({exc.strerror or exc})") from None
    expect_stages(1)
    work = make_work_dir(out_dir)
    try:
        build(fp32_manifest_path, fp32, request, calibration, work, key)
        publish(work, out_dir)
    except BaseException:
        discard_unfinished()
        raise
    stage_done(request.variant)
    return ExportResult(manifest_path, False)


def derived_cache(fp32_manifest_path: Path, fp32: Manifest, request: DerivedRequest,
                  calibration: CalibrationSet | None) -> tuple[Path, str]:
    """The manifest path of ``request``'s derived model and the cache key a current one carries."""
    folder = derived_dir(Path(fp32_manifest_path).parent, request.variant)
    return folder / MANIFEST_NAME, derived_key(fp32, request, calibration)


def derived_key(fp32: Manifest, request: DerivedRequest, calibration: CalibrationSet | None) -> str:
    parts: dict[str, Any] = {
        "fp32_sha256": fp32.graph.sha256, "fp32_cache_key": fp32.cache_key, "variant": request.variant,
        "max_drop": request.max_drop, "code": code_digest(), "versions": package_versions(),
    }
    if calibration is not None:
        parts["calibration"] = {"files_sha256": calibration.files_sha256, "size": calibration.size,
                                "overlap_allowed": request.allow_eval_overlap}
    if request.variant == "int8-ort":
        from export.quantize.ort_int8 import reduce_range_here

        parts["reduce_range"] = reduce_range_here()[0]  # the model follows the CPU it is built on
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def build(fp32_path: Path, fp32: Manifest, request: DerivedRequest, calibration: CalibrationSet | None,
          work: Path, key: str) -> Manifest:
    """Quantize or convert into ``work``, copy the references, measure, write the manifest."""
    started = time.perf_counter()
    fp32_dir = fp32_path.parent
    onnx_path = fp32_dir / fp32.graph.file
    out = work / MODEL_FILES[request.variant]
    described = _quantize(request, fp32, onnx_path, calibration, out)
    inputs = evaluation_inputs(fp32)
    copied = copy_references(fp32, fp32_dir, work)
    from export.quantize.accuracy import measure

    described["accuracy"] = measure(out, _format(out), fp32, fp32_dir, inputs)
    described["seconds"] = round(time.perf_counter() - started, 2)
    described["versions"] = package_versions(("nncf", "openvino", "onnxruntime", "onnx", "onnxconverter-common",
                                              "numpy"))
    if calibration is not None:
        described["calibration"] = calibration.describe()
    manifest = describe(fp32, fp32_path, request, out, described, copied, key)
    save_manifest(work / MANIFEST_NAME, manifest)
    return manifest


def _format(path: Path) -> str:
    return "openvino-ir" if path.suffix == ".xml" else "onnx"


def _quantize(request: DerivedRequest, fp32: Manifest, onnx_path: Path, calibration: CalibrationSet | None,
              out: Path) -> dict[str, Any]:
    if request.variant == "fp16":
        from export.quantize.fp16 import fp16_onnx

        return fp16_onnx(onnx_path, out, seeded_inputs(tuple(fp32.input_shape), 1))
    images = calibration.load(fp32.preprocess, fp32.input_shape)
    log.info("%s: %s from %d calibration images", fp32.model, request.variant, len(images))
    if request.variant in ("int8-ort", "int8-ort-cuda"):
        from export.quantize.ort_int8 import ort_int8

        return ort_int8(onnx_path, images, out, for_cuda=request.variant == "int8-ort-cuda")
    from export.quantize.ov_int8 import ov_int8

    validation = None
    if request.max_drop is not None:
        images, validation = split_for_validation(images)
    return ov_int8(onnx_path, images, fp32.family, fp32.batch, out, max_drop=request.max_drop,
                   validation=validation)


def evaluation_inputs(fp32: Manifest) -> dict[str, Any]:
    """The tensors the fp32 export stored Paddle's logits for: its evaluation images and seeded inputs."""
    inputs: dict[str, Any] = {"seeded": seeded_inputs(tuple(fp32.input_shape))}
    folder = ((fp32.reference or {}).get("images") or {}).get("folder")
    if folder and Path(folder).is_dir() and fp32.preprocess is not None:
        images, _, _ = load_eval_images(Path(folder), fp32.preprocess)
        inputs["images"] = images
    return inputs


def copy_references(fp32: Manifest, fp32_dir: Path, work: Path) -> dict[str, Any] | None:
    """The fp32 export's reference logits, copied so drift needs neither Paddle nor the fp32 folder."""
    reference = json.loads(json.dumps(fp32.reference)) if fp32.reference else None
    for entry in (reference or {}).values():
        if isinstance(entry, dict) and entry.get("file"):
            source = fp32_dir / entry["file"]
            if source.is_file():
                Logits.load(source)  # a corrupt file fails the build here, not a drift pass later
                shutil.copy2(source, work / entry["file"])
                entry["sha256"] = sha256_of(work / entry["file"])
    return reference


def _graph(out: Path, fp32: Manifest) -> ModelFile:
    if out.suffix == ".xml":
        import openvino as ov

        model = ov.Core().read_model(str(out))
        census: dict[str, int] = {}
        for op in model.get_ops():
            census[op.get_type_name()] = census.get(op.get_type_name(), 0) + 1
        size = out.stat().st_size + out.with_suffix(".bin").stat().st_size
        return ModelFile(file=out.name, sha256=sha256_of(out), format="openvino-ir", bytes=size,
                         node_count=len(model.get_ops()), op_census=dict(sorted(census.items())),
                         inputs=fp32.graph.inputs, outputs=fp32.graph.outputs)
    import onnx

    from export.quantize.census import op_census

    model = onnx.load(str(out))
    return ModelFile(file=out.name, sha256=sha256_of(out), format="onnx", bytes=out.stat().st_size,
                     ir_version=model.ir_version, node_count=len(model.graph.node), op_census=op_census(model),
                     inputs=fp32.graph.inputs, outputs=fp32.graph.outputs)


def describe(fp32: Manifest, fp32_path: Path, request: DerivedRequest, out: Path, described: dict[str, Any],
             reference: dict[str, Any] | None, key: str) -> Manifest:
    """The derived manifest: the fp32 one's identity, this file, how it was made and what from. Paths to the fp32
    export are relative: the derived folder is its sibling."""
    sibling = f"../{fp32_path.parent.name}"
    if out.suffix == ".xml":
        described["files"] = {"weights": {"file": out.with_suffix(".bin").name,
                                          "sha256": sha256_of(out.with_suffix(".bin"))}}
    paddle = {k: f"{sibling}/{v}" for k, v in fp32.paddle_model.items()} if fp32.paddle_model else None
    return Manifest(
        model=fp32.model, opset_requested=fp32.opset_requested, opset_written=fp32.opset_written,
        graph=_graph(out, fp32), batch=fp32.batch, family=fp32.family, input_shape=list(fp32.input_shape),
        num_classes=fp32.num_classes, precision=request.precision, weights=dict(fp32.weights), paddle_model=paddle,
        preprocess=fp32.preprocess, reference=reference, parity={}, reduced_precision=described,
        optimization=fp32.optimization,  # the graph passes of the fp32 export this model was made from
        source={"manifest": f"{sibling}/{fp32_path.name}", "sha256": fp32.graph.sha256},
        versions=package_versions(), export_seconds=described["seconds"],
        stage_seconds={"quantize_s": described.get("quantize_seconds", 0.0)}, cache_key=key,
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
