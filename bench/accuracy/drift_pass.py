"""The drift pass of a benchmark cell: after timing, run the same open runtime over a data set and compare
its logits with Paddle's FP32 logits for the same preprocessed tensors.

Reference logits come from the export's stored reference when the data set is the export's evaluation
images (no Paddle needed), otherwise from Paddle Inference (plain FP32 CPU kernels) on the exported Paddle
model, cached per model + weights + data set.

``prepare_drift`` runs before the runtime is loaded: it opens the data set (so a wrong folder or list file
fails before any time is spent measuring) and checks that the reference cache can be written when it will
be needed. ``run_drift`` then runs after timing on the still-open runtime.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.accuracy.gates import evaluate_gates
from bench.accuracy.reference import collect_logits, reference_logits
from core.artifact import Artifact
from core.datasets import DataError, Dataset, ImageDataset, open_dataset
from core.files import check_writable_dir
from core.image_stream import default_workers
from core.logits import Logits
from core.metrics import compare_logits
from core.preprocess import FAMILIES, PIPELINES, Preprocess, for_family, from_config
from core.progress import image_bar
from runtimes.base import Runtime

log = logging.getLogger(__name__)

EXPORT_IMAGES = "export"  # --data value: the images the export stored Paddle's logits for


@dataclass
class DriftSettings:
    data: str = EXPORT_IMAGES  # "export" | "synthetic" | a folder or list file
    labels: str | None = None
    pipeline: str | None = None  # PaddleClas's "eval" | "infer", or a config's path; None: the export's
    workers: int | None = None  # image worker processes; None: one per core
    synthetic_count: int = 32
    gates: dict = field(default_factory=dict)
    cache_dir: str = "artifacts/reference-cache"  # the request puts it under --artifacts

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PreparedDrift:
    """The data set of a cell's drift pass and its stored reference (None: Paddle computes one)."""

    settings: DriftSettings
    dataset: Dataset
    stored: Logits | None


def pipeline_preprocess(artifact: Artifact, pipeline: str | None) -> Preprocess | None:
    """The preprocessing of ``pipeline`` for the artifact's model: None, the one its manifest records; ``eval`` |
    ``infer``, a built-in model's PaddleClas pipeline (a brought model has only the one it records); else the
    path of a PaddleClas config (``core.preprocess.from_config``)."""
    recorded = artifact.preprocess
    if pipeline is None or (recorded is not None and recorded.pipeline == pipeline):
        return recorded
    if pipeline not in PIPELINES:
        try:
            return from_config(pipeline)
        except ValueError as exc:  # checked when the request was made; the file changed since
            raise DataError(str(exc)) from None
    family = artifact.manifest.family
    if family in FAMILIES:
        return for_family(family, pipeline)
    if recorded is None:
        raise DataError(f"{artifact.model}: --preprocess {pipeline} names a built-in PaddleClas pipeline of "
                        f"{' or '.join(FAMILIES)}, and its manifest records no preprocessing: pass --preprocess "
                        "CONFIG.yaml (its PaddleClas config), or export it with --preprocess")
    if recorded.pipeline is not None:
        log.warning("%s has only the preprocessing its manifest records (%s pipeline, %s), not a built-in %s "
                    "pipeline: using it", artifact.model, recorded.pipeline, recorded.source, pipeline)
    return recorded


def open_drift_dataset(settings: DriftSettings, artifact: Artifact) -> Dataset:
    workers = settings.workers or default_workers()
    shape = tuple(artifact.manifest.input_shape or artifact.input_shape[1:])  # C, H, W
    data = settings.data
    if data == EXPORT_IMAGES:
        folder = ((artifact.manifest.reference or {}).get("images") or {}).get("folder")
        if folder and Path(folder).is_dir():
            return open_dataset(folder, preprocess=_fitting(artifact, settings.pipeline, shape), workers=workers)
        log.info("%s: the export stored no reference images; using the synthetic set", artifact.model)
        data = "synthetic"  # recorded in the drift figures' data description
    if data == "synthetic":
        return open_dataset(data, count=settings.synthetic_count, input_shape=shape or None)
    return open_dataset(data, preprocess=_fitting(artifact, settings.pipeline, shape), labels=settings.labels,
                        workers=workers, num_classes=artifact.manifest.num_classes or 1000)


def _fitting(artifact: Artifact, pipeline: str | None, shape: tuple) -> Preprocess:
    """The images' preprocessing, which must make the tensors the model takes."""
    preprocess = pipeline_preprocess(artifact, pipeline)
    if preprocess is None:
        raise DataError(f"{artifact.model}: its manifest records no image preprocessing: pass --preprocess "
                        "CONFIG.yaml (its PaddleClas config), or use --data synthetic")
    if shape and tuple(preprocess.output_shape) != shape:
        raise DataError(f"{artifact.model} takes {list(shape)} inputs, but the preprocessing makes "
                        f"{list(preprocess.output_shape)}")
    return preprocess


def stored_reference(artifact: Artifact, dataset: Dataset) -> Logits | None:
    """The export's reference logits, if they cover exactly this data set's images with the same tensors."""
    described = dataset.describe().get("preprocess")
    expected = artifact.preprocess.to_dict() if artifact.preprocess else None
    if described is not None and expected is not None and _plain(described) != _plain(expected):
        return None  # e.g. the infer pipeline: Paddle must see the same tensors
    path = artifact.reference_file("images")
    if path is None or not path.is_file():
        return None
    logits, _ = Logits.load(path)
    if sorted(logits.names) != sorted(dataset.names()):
        return None
    return logits


def _plain(settings: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def prepare_drift(settings: DriftSettings, artifact: Artifact) -> PreparedDrift:
    """Open the data set, decode every image once and check the reference can be had, before the runtime
    loads (fail fast: a set with no readable image is refused before any timing)."""
    dataset = open_drift_dataset(settings, artifact)
    if isinstance(dataset, ImageDataset):
        with image_bar(len(dataset), "checking images") as bar:
            dataset.check(bar.update)
    stored = stored_reference(artifact, dataset)
    if stored is None:
        if artifact.paddle_files is None:
            raise DataError(f"{artifact.model}: the export stored no reference logits for this data set and "
                            "has no Paddle model beside it to compute them; drift cannot be measured")
        try:
            check_writable_dir(Path(settings.cache_dir))
        except OSError as exc:
            raise DataError(f"reference cache {settings.cache_dir} is not writable "
                            f"({exc.strerror or exc}); pass --artifacts DIR") from None
    return PreparedDrift(settings, dataset, stored)


def paddle_reference(artifact: Artifact, dataset: Dataset, cache_dir: Path) -> tuple[Logits, bool]:
    """Paddle Inference FP32 logits for ``dataset``, computed once and cached; (logits, cache hit)."""
    model_file, params_file = artifact.paddle_files

    def compute(data: Dataset) -> Logits:
        from export.source import inference_model_source

        source = inference_model_source(model_file, artifact.model, tuple(data.input_shape))
        values, names, labels = [], [], []
        for images, batch_labels, batch_names in data.batches(16):
            values.append(source.logits(images))
            names.extend(batch_names)
            if batch_labels is not None:
                labels.append(batch_labels)
        import numpy as np

        return Logits(np.concatenate(values), names, np.concatenate(labels) if labels else None)

    key = {"model": artifact.model, "weights": artifact.manifest.weights.get("sha256")
           or artifact.manifest.weights.get("location"),
           "paddle_params": _file_id(params_file), "producer": "paddle-inference-fp32"}
    return reference_logits(dataset, compute, cache_dir, key)


def _file_id(path: Path) -> str | None:
    if not path.is_file():
        return None
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def run_drift(runtime: Runtime, artifact: Artifact, batch: int, precision: str,
              prepared: PreparedDrift) -> tuple[dict, dict | None]:
    """Drift figures and gate verdicts for one open runtime."""
    settings, dataset = prepared.settings, prepared.dataset
    with image_bar(len(dataset), f"drift {runtime.name}") as bar:
        candidate = collect_logits(runtime, dataset, batch, progress=bar.update)
    # who computed the stored logits: Paddle dygraph for a zoo model, Paddle Inference for a brought one
    producer = (artifact.manifest.reference or {}).get("producer") or "paddle fp32"
    reference, source = prepared.stored, f"export reference ({producer})"
    if reference is None:
        reference, hit = paddle_reference(artifact, dataset, Path(settings.cache_dir))
        source = "paddle inference fp32" + (" (cached)" if hit else "")
    result = compare_logits(reference, candidate).to_dict()
    result["reference_source"] = source
    result["data"] = dataset.describe()
    result["unreadable_images"] = len(dataset.skipped)
    gates = evaluate_gates(result, precision, settings.gates) if settings.gates else None
    return result, gates
