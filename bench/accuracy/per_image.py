"""Per-image results of an accuracy pass: what one runtime predicted for each image of one shard of a data set.

The seam between measuring and judging: a shard (a whole data set here; a slice of it on each worker of a
cluster) yields an ``ImageResults``; shards are merged with :func:`merge`, and the statistics are computed once
on the merged results (``bench.accuracy.statistics``). Nothing but the top-5 classes, the label and the name is
kept per image (and, against a reference, the per-image drift figures of ``core.metrics.DriftRows``), so a pass
over 50,000 images holds a few MB whatever the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from core.datasets import Dataset
from core.metrics import DriftRows
from runtimes.base import Runtime

TOP_K = 5


@dataclass
class ImageResults:
    """Per image, in data set order: name, label, the top-``TOP_K`` classes (best first; -1 for a row with NaN
    or Inf) and whether its logits were finite; plus the images that could not be read, and those enlarged; and
    against a reference run on the same tensors, each image's drift figures."""

    names: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    top: np.ndarray = field(default_factory=lambda: np.empty((0, TOP_K), np.int32))
    finite: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    unreadable: list[dict] = field(default_factory=list)  # {"name", "path", "reason"}
    enlarged: list[str] = field(default_factory=list)
    drift: DriftRows | None = None  # against the reference (None: no reference ran)

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


def aligned_batches(dataset: Dataset, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """The readable images of each block of ``batch`` listed images, as one batch (fewer where a block holds an
    unreadable image). Batches then never depend on what was unreadable before them: a shard cut at a multiple
    of ``batch`` of the list meets the runtime in the batches the whole set would, image for image (a runtime
    may round an image's logits differently beside other images)."""
    position = {name: i for i, name in enumerate(dataset.names())}
    images, labels, names, block = [], [], [], None
    for batch_images, batch_labels, batch_names in dataset.batches(batch):
        for image, label, name in zip(batch_images, batch_labels, batch_names, strict=True):
            if names and position[name] // batch != block:
                yield np.stack(images), np.array(labels, np.int64), names
                images, labels, names = [], [], []
            block = position[name] // batch
            images.append(image)
            labels.append(label)
            names.append(name)
    if names:
        yield np.stack(images), np.array(labels, np.int64), names


def run_shard(runtime: Runtime, dataset: Dataset, batch: int, input_name: str, output_name: str | None = None,
              progress: Callable[[int], None] | None = None,
              reference: Callable[[np.ndarray], np.ndarray] | None = None) -> ImageResults:
    """Feed every readable image of ``dataset`` to a loaded runtime at ``batch`` (``aligned_batches``; a short
    batch padded with copies of its last image) and keep each image's top classes. ``reference``: logits of the
    same padded batch from another model (Paddle's), compared image by image as they come (each image is decoded
    once for both)."""
    if not dataset.has_labels:
        raise ValueError("an accuracy pass needs labels")
    names, labels, tops, finites, rows = [], [], [], [], []
    for images, batch_labels, batch_names in aligned_batches(dataset, batch):
        count = images.shape[0]
        if count < batch:
            images = np.concatenate([images, np.repeat(images[-1:], batch - count, axis=0)])
        images = np.ascontiguousarray(images, dtype=np.float32)
        runtime.prepare({input_name: images})
        runtime.run()
        outputs = runtime.outputs()
        logits = np.asarray(outputs[output_name] if output_name in outputs else next(iter(outputs.values())))
        top, finite = top_classes(logits[:count])
        if reference is not None:
            expected = np.asarray(reference(images))[:count].reshape(count, -1)
            rows.append(DriftRows.of(expected, logits[:count].reshape(count, -1), batch_labels))
        names.extend(batch_names)
        labels.append(batch_labels)
        tops.append(top)
        finites.append(finite)
        if progress is not None:
            progress(count)
    described = dataset.describe()
    return ImageResults(names, np.concatenate(labels).astype(np.int64), np.concatenate(tops),
                        np.concatenate(finites), list(described.get("skipped") or []),
                        list((described.get("enlarged") or {}).get("names") or []),
                        DriftRows.concatenate(rows) if rows else None)


def merge(shards: Iterable[ImageResults], order: list[str] | None = None) -> ImageResults:
    """One ``ImageResults`` of several shards, by image name: in ``order`` (the data set's names, unreadable ones
    included) when given, else in the order of the shards. An image in two shards is an error, and so is one
    missing from ``order``; shards with drift figures and shards without do not mix."""
    shards = [s for s in shards if len(s) or s.unreadable]
    if not shards:
        return ImageResults()
    parts = [s for s in shards if len(s)]  # a shard with only unreadable images has no figures
    if len({s.drift is None for s in parts}) > 1:
        raise ValueError("some shards ran the reference and some did not")
    names = [n for s in shards for n in s.names]
    if len(set(names)) != len(names):
        raise ValueError("the shards overlap: an image was measured twice")
    index = np.arange(len(names))
    unreadable = [u for s in shards for u in s.unreadable]
    enlarged = [e for s in shards for e in s.enlarged]
    if order is not None:
        position = {name: i for i, name in enumerate(order)}
        missing = [n for n in names + [u["name"] for u in unreadable] if n not in position]
        if missing:
            raise ValueError(f"{len(missing)} image(s) the data set does not list, e.g. {missing[0]}")
        index = np.argsort([position[n] for n in names], kind="stable")
        names = [names[i] for i in index]
        unreadable.sort(key=lambda u: position[u["name"]])
        enlarged.sort(key=position.__getitem__)
    drift = DriftRows.concatenate([s.drift for s in parts]).take(index) if parts and parts[0].drift else None
    return ImageResults(
        names,
        np.concatenate([s.labels for s in shards])[index],
        np.concatenate([s.top for s in shards])[index],
        np.concatenate([s.finite for s in shards])[index],
        unreadable, enlarged, drift)
