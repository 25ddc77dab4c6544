"""Per-image results of an accuracy pass: what one runtime predicted for each image of one shard of a data set.

The seam between measuring and judging: a shard (a whole data set here; a slice of it on each worker of a
cluster) yields an ``ImageResults``; shards are merged with :func:`merge`, and the statistics are computed once
on the merged results (``bench.accuracy.statistics``). Nothing but the top-5 classes, the label and the name is
kept per image, so a pass over 50,000 images holds a few MB whatever the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from core.datasets import Dataset
from runtimes.base import Runtime

TOP_K = 5


@dataclass
class ImageResults:
    """Per image, in data set order: name, label, the top-``TOP_K`` classes (best first; -1 for a row with NaN
    or Inf) and whether its logits were finite; plus the images that could not be read, and those enlarged."""

    names: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    top: np.ndarray = field(default_factory=lambda: np.empty((0, TOP_K), np.int32))
    finite: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    unreadable: list[dict] = field(default_factory=list)  # {"name", "path", "reason"}
    enlarged: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def top_classes(logits: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """(the ``k`` best classes per row, best first; whether the row is finite). A non-finite row has no
    prediction: its classes are -1, so it is never right."""
    logits = np.asarray(logits, np.float32).reshape(len(logits), -1)
    finite = np.isfinite(logits).all(axis=1)
    k = min(k, logits.shape[1])
    best = np.argpartition(-np.nan_to_num(logits, nan=-np.inf), k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(logits, best, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(best, order, axis=1).astype(np.int32)
    top[~finite] = -1
    if k < TOP_K:
        top = np.pad(top, ((0, 0), (0, TOP_K - k)), constant_values=-1)
    return top, finite


def run_shard(runtime: Runtime, dataset: Dataset, batch: int, input_name: str, output_name: str | None = None,
              progress: Callable[[int], None] | None = None) -> ImageResults:
    """Feed every readable image of ``dataset`` to a loaded runtime at ``batch`` (the last batch padded with
    copies of its last image) and keep each image's top classes."""
    if not dataset.has_labels:
        raise ValueError("an accuracy pass needs labels")
    names, labels, tops, finites = [], [], [], []
    for images, batch_labels, batch_names in dataset.batches(batch):
        count = images.shape[0]
        if count < batch:
            images = np.concatenate([images, np.repeat(images[-1:], batch - count, axis=0)])
        runtime.prepare({input_name: np.ascontiguousarray(images, dtype=np.float32)})
        runtime.run()
        outputs = runtime.outputs()
        logits = outputs[output_name] if output_name in outputs else next(iter(outputs.values()))
        top, finite = top_classes(np.asarray(logits)[:count])
        names.extend(batch_names)
        labels.append(batch_labels)
        tops.append(top)
        finites.append(finite)
        if progress is not None:
            progress(count)
    described = dataset.describe()
    return ImageResults(names, np.concatenate(labels).astype(np.int64), np.concatenate(tops),
                        np.concatenate(finites), list(described.get("skipped") or []),
                        list((described.get("enlarged") or {}).get("names") or []))


def merge(shards: Iterable[ImageResults]) -> ImageResults:
    """One ``ImageResults`` of several shards, in the order given; an image in two shards is an error."""
    shards = list(shards)
    merged = ImageResults(
        [n for s in shards for n in s.names],
        np.concatenate([s.labels for s in shards]) if shards else np.empty(0, np.int64),
        np.concatenate([s.top for s in shards]) if shards else np.empty((0, TOP_K), np.int32),
        np.concatenate([s.finite for s in shards]) if shards else np.empty(0, bool),
        [u for s in shards for u in s.unreadable],
        [e for s in shards for e in s.enlarged],
    )
    if len(set(merged.names)) != len(merged.names):
        raise ValueError("the shards overlap: an image was measured twice")
    return merged
