"""The drift pass of a benchmark cell: after timing, run the same open runtime over a data set and compare
its logits with Paddle's FP32 logits for the same preprocessed tensors.

Reference logits come from the export's stored reference when the data set is the export's evaluation
images (no Paddle needed), otherwise from Paddle Inference (plain FP32 CPU kernels) on the exported Paddle
model, cached per model + weights + data set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data import DataError, Dataset, open_dataset
from bench.drift import Logits, collect_logits, compare_logits, evaluate_gates, reference_logits
from export.preprocess import Preprocess
from runtimes.base import Artifact, Runtime

log = logging.getLogger(__name__)

EXPORT_IMAGES = "export"  # --data value: the images the export stored Paddle's logits for


@dataclass
class DriftSettings:
    data: str = EXPORT_IMAGES  # "export" | "synthetic" | a folder or list file
    labels: str | None = None
    channel_order: str | None = None
    synthetic_count: int = 32
    gates: dict = field(default_factory=dict)
    cache_dir: str = "artifacts/reference-cache"  # the CLI puts it under --artifacts


def preprocess_of(artifact: Artifact) -> Preprocess | None:
    settings = artifact.manifest.get("preprocess")
    if not settings:
        return None
    return Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


def open_drift_dataset(settings: DriftSettings, artifact: Artifact) -> Dataset:
    preprocess = preprocess_of(artifact)
    data = settings.data
    if data == EXPORT_IMAGES:
        folder = (artifact.manifest.get("reference") or {}).get("images", {}).get("folder")
        if folder and Path(folder).is_dir():
            return open_dataset(folder, preprocess=preprocess, channel_order=settings.channel_order)
        log.info("%s: the export stored no reference images; using the synthetic set", artifact.model)
        data = "synthetic"  # recorded in the drift figures' data description
    if data != "synthetic" and preprocess is None:
        raise DataError(f"{artifact.model}: the manifest has no preprocessing settings for images; "
                         "use --data synthetic")
    shape = artifact.manifest.get("input_shape") or artifact.input_shape[1:]  # C, H, W
    return open_dataset(data, preprocess=preprocess, labels=settings.labels,
                        channel_order=settings.channel_order, count=settings.synthetic_count,
                        input_shape=tuple(shape) if shape else None)


def stored_reference(artifact: Artifact, dataset: Dataset) -> Logits | None:
    """The export's reference logits, if they cover exactly this data set's images with the same tensors."""
    reference = artifact.manifest.get("reference") or {}
    if json.loads(json.dumps(dataset.describe().get("preprocess"))) != artifact.manifest.get("preprocess"):
        return None  # e.g. another channel order: Paddle must see the same tensors
    path = artifact.onnx_path.parent / reference.get("file", "reference.npz")
    if not path.is_file():
        return None
    with np.load(path) as stored:
        names = stored["image_names"].tolist()
        if sorted(names) != sorted(dataset.names()):
            return None
        return Logits(stored["images"], names, stored["labels"])


def paddle_reference(artifact: Artifact, dataset: Dataset, cache_dir: Path) -> Logits:
    """Paddle Inference FP32 logits for ``dataset``, computed once and cached."""
    if artifact.paddle_model_file is None:
        raise DataError(f"{artifact.model}: no Paddle model beside the export to compute the reference with")

    def compute(data: Dataset) -> Logits:
        from export.source import inference_model_source

        source = inference_model_source(artifact.paddle_model_file, artifact.model, tuple(data.input_shape))
        values, names, labels = [], [], []
        for images, batch_labels, batch_names in data.batches(16):
            values.append(source.logits(images))
            names.extend(batch_names)
            if batch_labels is not None:
                labels.append(batch_labels)
        return Logits(np.concatenate(values), names, np.concatenate(labels) if labels else None)

    key = {"model": artifact.model, "weights": (artifact.manifest.get("weights") or {}).get("sha256")
           or (artifact.manifest.get("weights") or {}).get("location"),
           "paddle_params": _file_id(artifact.paddle_params_file), "producer": "paddle-inference-fp32"}
    return reference_logits(dataset, compute, cache_dir, key)


def _file_id(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def run_drift(runtime: Runtime, artifact: Artifact, batch: int, precision: str,
              settings: DriftSettings) -> tuple[dict, dict]:
    """Drift figures and gate verdicts for one open runtime; raises on unusable data."""
    dataset = open_drift_dataset(settings, artifact)
    candidate = collect_logits(runtime, dataset, batch)
    reference = stored_reference(artifact, dataset)
    source = "export reference (paddle dygraph fp32)"
    if reference is None:
        reference = paddle_reference(artifact, dataset, Path(settings.cache_dir))
        source = "paddle inference fp32 (cached)"
    result = compare_logits(reference, candidate).to_dict()
    result["reference_source"] = source
    result["data"] = dataset.describe()
    gates = evaluate_gates(result, precision, settings.gates) if settings.gates else None
    return result, gates
