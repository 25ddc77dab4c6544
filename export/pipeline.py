"""One export, cached: request -> (cache hit | build in a temporary folder -> publish) -> manifest path.

The cache key covers every input: model, opset, batch, weights (by content), the evaluation images, the
installed package versions and the source of every module the export runs (``export/`` and ``core/``), so
the same request is a cache hit and any change rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from core.files import check_writable_dir, sha256_of
from core.manifest import MANIFEST_NAME, ManifestError, load_manifest, package_versions
from export.calibrated_weights import calibration_digest
from export.convert import ExportError, check_opset
from export.layout import SEEDED, discard_unfinished, make_work_dir, publish
from export.models import get_spec
from export.optimize.levels import LevelError, check_level
from export.parity import ParityError
from export.request import ExportRequest
from export.source import inference_model_digest
from export.weights import CALIBRATED, check_source

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("export", "core")  # everything an export executes besides the installed packages
DERIVED_CODE = ("export/quantize",)  # runs only for reduced-precision models, which key on it themselves
PARITY_FAILED = ".parity-failed"  # suffix of the folder a parity failure leaves for bench explain


@dataclass
class ExportResult:
    manifest_path: Path
    cache_hit: bool


def check_request(request: ExportRequest) -> None:
    """Everything that can be checked before minutes of work (model, opset, inputs)."""
    check_opset(request.opset)
    try:
        check_level(request.optimize)
    except LevelError as exc:
        raise ExportError(str(exc)) from None
    if request.paddle_model is None:
        get_spec(request.model)
        check_source(request.weights)
        if request.images:
            _check_images(request.images)
        return
    if request.input_shape is None:
        raise ExportError("a brought inference model needs --input-shape C,H,W (e.g. 3,224,224)")
    if not Path(request.paddle_model).with_suffix(".pdiparams").is_file():
        raise ExportError(f"{request.paddle_model}: expected NAME.json with NAME.pdiparams beside it")
    if request.preprocess is not None and request.images:
        _check_images(request.images)


def _check_images(folder: Path) -> None:
    if not (Path(folder) / "val_list.txt").is_file():
        raise ExportError(f"evaluation images: {folder}/val_list.txt not found; pass --images FOLDER with a "
                          "val_list.txt")


def run_export(request: ExportRequest) -> ExportResult:
    """Run (or reuse) one export."""
    check_request(request)
    key = cache_key(request)
    out_dir = request.out_dir
    manifest_path = out_dir / MANIFEST_NAME
    if not request.force and is_fresh(manifest_path, key):
        log.info("%s opset %s: cache hit (%s)", request.model, request.opset, out_dir)
        return ExportResult(manifest_path, True)
    try:  # only a build needs to write: a cached export is usable from a read-only folder
        check_writable_dir(request.root)
    except OSError as exc:
        raise ExportError(f"output folder {request.root} is not writable ({exc.strerror or exc})") from None

    from export.build import build

    work = make_work_dir(out_dir)
    try:
        build(request, work, key)
        publish(work, out_dir)
    except ParityError as exc:
        kept = out_dir.with_name(f"{out_dir.name}{PARITY_FAILED}")  # never a cache hit: its manifest has no key
        publish(work, kept)
        raise ExportError(f"{exc}; the failed export is kept in {kept}: python -m bench explain --runtime ort "
                          f"--manifest {kept / MANIFEST_NAME} --against paddle names the first Paddle op whose "
                          "output diverges") from None
    except BaseException:
        discard_unfinished()
        raise
    return ExportResult(manifest_path, False)


def code_digest(packages: tuple[str, ...] = CODE_PACKAGES, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over the source of every module in ``packages``, but those under the ``exclude`` folders."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if any(path.is_relative_to(REPO_ROOT / folder) for folder in exclude):
                continue
            digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(request: ExportRequest) -> str:
    weights = request.weights or SEEDED  # None and "seeded" are the same weights
    if weights == CALIBRATED:
        weights = f"{CALIBRATED}:{calibration_digest()}"
    elif request.paddle_model:
        weights = inference_model_digest(request.paddle_model)
    elif weights == "official":  # another mirror or pin is other weights
        spec = get_spec(request.model)
        weights = f"official:{spec.weights_url}:{spec.weights_sha256}"
    elif weights not in (SEEDED, "official") and Path(weights).expanduser().is_file():
        weights = sha256_of(Path(weights).expanduser())
    images = ""
    if request.images and (request.paddle_model is None or request.preprocess is not None) and (
            Path(request.images) / "val_list.txt").is_file():
        images = sha256_of(Path(request.images) / "val_list.txt")
    parts = {
        "model": request.model,
        "input_shape": request.input_shape,
        "opset": request.opset,
        "batch": request.batch,
        "weights": weights,
        "code": code_digest(exclude=DERIVED_CODE),
        "versions": package_versions(),
        "images": images,
        "optimize": request.optimize,
    }
    if request.preprocess is not None:  # a brought model's: other preprocessing, other references
        parts["preprocess"] = request.preprocess.to_dict()
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def is_fresh(manifest_path: Path, key: str) -> bool:
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError:
        return False
    model_path = manifest_path.parent / manifest.graph.file
    return manifest.cache_key == key and model_path.is_file() and sha256_of(model_path) == manifest.graph.sha256
