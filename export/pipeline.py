"""The export pipeline: build -> weights -> inference model -> ONNX -> validate -> parity -> manifest.

Each export lands in its own folder, written into a temporary sibling and renamed into place, so an
interrupted export leaves nothing half-written. The cache key covers every input: the same request is a
cache hit, and a change of weights, code, versions or evaluation images rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import convert, parity
from export.convert import ExportError
from export.manifest import MANIFEST_NAME, SCHEMA_VERSION, load_manifest, package_versions, write_json_atomic
from export.models import get_spec
from export.source import inference_model_digest
from export.weights import SEEDED, sha256_of

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path("artifacts")
DEFAULT_IMAGES = REPO_ROOT / "data" / "imagenet-val-44"
SEEDED_INPUTS = 4  # seeded N(0, 1) images checked besides the real ones
REFERENCE_NAME = "reference.npz"
_CODE_FILES = (
    "convert.py",
    "_p2o_worker.py",
    "parity.py",
    "pipeline.py",
    "validate.py",
    "weights.py",
    "preprocess.py",
    "source.py",
)


@dataclass(frozen=True)
class ExportRequest:
    model: str
    opset: int
    batch: str | int = "dynamic"
    weights: str | None = None  # None/"seeded", "official", a .pdparams path or URL
    root: Path = DEFAULT_ROOT
    images: Path | None = DEFAULT_IMAGES
    force: bool = False
    paddle_model: Path | None = None  # a brought Paddle inference model (.json) instead of a zoo model
    input_shape: tuple[int, int, int] | None = None  # C, H, W of a brought model

    @property
    def fixed_batch(self) -> int | None:
        return None if self.batch == "dynamic" else int(self.batch)


def parse_batch(value: str | int) -> str | int:
    if value == "dynamic":
        return value
    try:
        batch = int(value)
    except (TypeError, ValueError):
        batch = 0
    if batch < 1:
        raise ExportError(f"--batch must be 'dynamic' or a positive integer, got {value!r}")
    return batch


def weights_tag(weights: str | None) -> str:
    """A short, stable folder name for a weights choice (a file is named by its content)."""
    if weights in (None, SEEDED):
        return SEEDED
    if weights == "official":
        return "official"
    path = Path(weights).expanduser()
    if not weights.startswith(("http://", "https://")) and path.is_file():
        return "file-" + sha256_of(path)[:12]
    return "url-" + hashlib.sha256(weights.encode()).hexdigest()[:12]


def artifact_dir(
    model: str,
    opset: int,
    batch: str | int = "dynamic",
    weights: str | None = None,
    root: Path = DEFAULT_ROOT,
    paddle_model: Path | None = None,
) -> Path:
    """Where an export lives; computing it imports nothing heavy. A brought model is named by its digest."""
    batch_tag = "bdyn" if batch == "dynamic" else f"b{int(batch)}"
    tag = f"model-{inference_model_digest(paddle_model)[:12]}" if paddle_model else weights_tag(weights)
    return Path(root) / model / tag / f"opset{opset}-{batch_tag}"


def ensure_export(
    model: str,
    opset: int,
    batch: str | int = "dynamic",
    weights: str | None = None,
    root: Path = DEFAULT_ROOT,
    images: Path | None = DEFAULT_IMAGES,
    force: bool = False,
) -> Path:
    """Export unless an up-to-date export exists; returns the manifest path."""
    request = ExportRequest(model, opset, parse_batch(batch), weights, Path(root), images, force)
    return run_export(request)["manifest_path"]


def run_export(request: ExportRequest) -> dict:
    """Run (or reuse) one export; returns a summary with the manifest path and whether the cache hit."""
    convert.check_opset(request.opset)
    if request.paddle_model is None:
        family = get_spec(request.model).family
        out_dir = artifact_dir(request.model, request.opset, request.batch, request.weights, request.root)
    else:
        if request.input_shape is None:
            raise ExportError("a brought inference model needs --input-shape C,H,W (e.g. 3,224,224)")
        if not Path(request.paddle_model).with_suffix(".pdiparams").is_file():
            raise ExportError(f"{request.paddle_model}: expected NAME.json with NAME.pdiparams beside it")
        family = None
        out_dir = artifact_dir(
            request.model, request.opset, request.batch, None, request.root, paddle_model=request.paddle_model
        )
    if (
        request.paddle_model is None
        and request.images
        and not (Path(request.images) / "val_list.txt").is_file()
    ):
        raise ExportError(f"evaluation images: {request.images}/val_list.txt not found; pass --images FOLDER")
    _check_writable(request.root)
    key = _cache_key(request, family)
    manifest_path = out_dir / MANIFEST_NAME
    if not request.force and _is_fresh(manifest_path, key):
        log.info("%s opset %s: cache hit (%s)", request.model, request.opset, out_dir)
        return {"manifest_path": manifest_path, "cache_hit": True, "manifest": load_manifest(manifest_path)}

    created = [p for p in (out_dir.parent, out_dir.parent.parent) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        manifest = _build(request, work, key)
        _publish(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for folder in created:  # leave no empty model/weights folders behind a failed first export
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return {"manifest_path": manifest_path, "cache_hit": False, "manifest": manifest}


def _build(request: ExportRequest, work: Path, key: str) -> dict:
    import onnx

    from export.source import inference_model_source, zoo_source
    from export.validate import validate

    started = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str, t0: float) -> float:
        now = time.perf_counter()
        stages[name] = round(now - t0, 3)
        return now

    t = time.perf_counter()
    if request.paddle_model is None:
        source = zoo_source(request.model, request.weights)
    else:
        source = inference_model_source(request.paddle_model, request.model, request.input_shape)
    t = stage("build_and_weights_s", t)

    paddle_dir = work / "paddle"
    paddle_dir.mkdir()
    model_file, params_file = source.save(paddle_dir, request.fixed_batch)
    t = stage("paddle_inference_model_s", t)

    raw_path, onnx_path = work / "raw.onnx", work / "model.onnx"
    convert.onnx_from_paddle(model_file, params_file, request.opset, raw_path)
    raw = onnx.load(str(raw_path))
    raw_nodes = len(raw.graph.node)
    onnx.save(convert.fold_constants(raw), str(onnx_path))
    raw_path.unlink()
    t = stage("paddle2onnx_and_fold_s", t)

    graph = validate(onnx_path, request.opset)
    t = stage("validate_s", t)

    seeded = np.random.default_rng(0).standard_normal((SEEDED_INPUTS, *source.input_shape)).astype(np.float32)
    ref_seeded = source.logits(seeded)
    parity_figures = {
        "seeded": parity.check(
            "seeded inputs", ref_seeded, parity.ort_logits(onnx_path, seeded, request.fixed_batch)
        )
    }
    images, names, labels = load_eval_images(request.images if source.preprocess else None, source.preprocess)
    ref_images = np.zeros((0, ref_seeded.shape[1]), np.float32)
    if len(images):
        ref_images = source.logits(images)
        parity_figures["images"] = parity.check(
            f"{len(images)} images", ref_images, parity.ort_logits(onnx_path, images, request.fixed_batch)
        )
    t = stage("parity_s", t)

    np.savez_compressed(
        work / REFERENCE_NAME,
        seeded_inputs=ref_seeded,
        images=ref_images,
        image_names=np.asarray(names),
        labels=np.asarray(labels, dtype=np.int64),
    )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "cache_key": key,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": source.name,
        "family": source.family,
        "input_size": source.input_shape[-1],
        "input_shape": list(source.input_shape),
        "num_classes": int(ref_seeded.shape[1]),
        "weights": source.weights,
        "opset": {"requested": request.opset, "written": graph["opset_written"]},
        "batch": request.batch,
        "onnx": {
            "file": onnx_path.name,
            "sha256": sha256_of(onnx_path),
            "bytes": onnx_path.stat().st_size,
            "ir_version": graph["ir_version"],
            "node_count": graph["node_count"],
            "node_count_before_folding": raw_nodes,
            "op_census": graph["op_census"],
            "inputs": graph["inputs"],
            "outputs": graph["outputs"],
        },
        "paddle_model": {
            "model_file": f"paddle/{model_file.name}",
            "params_file": f"paddle/{params_file.name}",
        },
        "preprocess": source.preprocess.to_dict() if source.preprocess else None,
        "reference": {
            "file": REFERENCE_NAME,
            "producer": source.info["reference"],
            "seeded_inputs": {"count": SEEDED_INPUTS, "rng": "numpy default_rng(0).standard_normal"},
            "images": {"folder": str(request.images) if len(images) else None, "count": len(images)},
        },
        "parity": parity_figures,
        "versions": package_versions(),
        "export_seconds": round(time.perf_counter() - started, 3),
        "stage_seconds": stages,
    }
    write_json_atomic(work / MANIFEST_NAME, manifest)
    return manifest


def load_eval_images(folder: Path | None, preprocess) -> tuple[np.ndarray, list[str], list[int]]:
    """The default evaluation images (PaddleClas list format ``val_list.txt``), preprocessed.

    Read with the bench stage's loader, so the drift pass sees the same names and tensors this stored.
    Parity needs every listed image: one that cannot be decoded fails the export.
    """
    if folder is None:
        return np.zeros((0,), np.float32), [], []
    from bench.data import DataError, open_dataset

    list_file = Path(folder) / "val_list.txt"
    if not list_file.is_file():
        raise ExportError(
            f"evaluation images: {list_file} not found; pass --images FOLDER with a val_list.txt"
        )
    try:
        dataset = open_dataset(folder, preprocess=preprocess, labels=list_file, layout="list")
        batches = list(dataset.batches(len(dataset)))
    except DataError as exc:
        raise ExportError(f"evaluation images: {exc}") from None
    if dataset.skipped:
        first = dataset.skipped[0]
        raise ExportError(f"evaluation images: cannot decode {first['path']}: {first['reason']}")
    images, labels, names = batches[0]
    return images, list(names), [int(label) for label in labels]


def _cache_key(request: ExportRequest, family: str | None) -> str:
    code = hashlib.sha256()
    model_code = (f"models/{family.lower()}.py", "models/__init__.py") if family else ()
    for name in (*_CODE_FILES, *model_code):
        path = Path(__file__).parent / name
        code.update(path.read_bytes() if path.is_file() else b"")
    weights = request.weights or SEEDED  # None and "seeded" are the same weights
    if request.paddle_model:
        weights = inference_model_digest(request.paddle_model)
    elif weights not in (SEEDED, "official") and Path(weights).expanduser().is_file():
        weights = sha256_of(Path(weights).expanduser())
    images = ""
    if request.images and (Path(request.images) / "val_list.txt").is_file():
        images = hashlib.sha256((Path(request.images) / "val_list.txt").read_bytes()).hexdigest()
    parts = {
        "model": request.model,
        "input_shape": request.input_shape,
        "opset": request.opset,
        "batch": request.batch,
        "weights": weights,
        "code": code.hexdigest(),
        "versions": package_versions(),
        "images": images,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _is_fresh(manifest_path: Path, key: str) -> bool:
    try:
        manifest = load_manifest(manifest_path)
    except ValueError:
        return False
    onnx_path = manifest_path.parent / manifest["onnx"]["file"]
    return (
        manifest.get("cache_key") == key
        and onnx_path.is_file()
        and sha256_of(onnx_path) == manifest["onnx"]["sha256"]
    )


def _check_writable(root: Path) -> None:
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise ExportError(f"output folder {root} is not writable ({exc.strerror}); pass --out DIR") from None


def _publish(work: Path, out_dir: Path) -> None:
    """Swap the finished folder into place; an old export is removed only after the new one is there."""
    work.chmod(0o755)  # mkdtemp/mkstemp create owner-only entries
    for path in work.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(work, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
