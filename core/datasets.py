"""Image data sets for accuracy/drift runs, streamed batch by batch.

Layouts (``open_dataset`` picks one, or ``layout=`` forces it):

- ``list``: PaddleClas list format, one ``relative/path label`` per line, paths relative to the data root.
  The list is ``labels=FILE``, a list file in the root (``LIST_FILE_NAMES``), or ``source`` itself when it
  is a file (its folder is then the root).
- ``imagefolder``: one subfolder per class, images anywhere below it. Class index: the folder name itself when
  every folder name is an integer (``0``..``999``); else the line of the folder name in ``class_map`` (a
  synset-per-line file such as ``LOC_synset_mapping.txt``; first token of each line); else the rank of the
  folder in sorted order, which equals the ImageNet index only when all 1000 synset folders are present.
- ``folder``: images anywhere below the root, no labels; except when every file is named
  ``<wnid>_<anything>.<ext>`` (the ImageNet sample sets): labelled by its synset's ImageNet-1k index.
- ``synthetic`` (default, needs nothing): seeded standard-normal tensors, no labels.

Only paths and labels are held in memory; images are decoded when their batch is built (in worker processes
when ``workers`` > 1). An unreadable image is logged, named in ``dataset.skipped`` and counted in
``describe()["unreadable_images"]``, and left out; the run goes on. Settings that shape the tensors
(preprocessing pipeline, seed) are recorded by ``describe()``, whose ``sha256`` fingerprints the set.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np

from core.image_stream import checked, preprocessed
from core.listing import (
    IMAGE_EXTENSIONS,
    DataError,
    Sample,
    find_list_file,
    image_folder_samples,
    images_below,
    is_image,
    read_list_file,
    synset_named_samples,
)
from core.preprocess import Preprocess

__all__ = ["Batch", "DataError", "Dataset", "ImageDataset", "SyntheticDataset", "open_dataset", "read_list_file"]

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "list", "imagefolder", "folder", "synthetic")
# The bundled calibration images (125 ImageNet images, one per 8th class, none among the evaluation images): what
# every int8 path calibrates on by default (export.quantize for OpenVINO and ONNX Runtime, TensorRT's calibrator).
CALIBRATION_IMAGES = Path(__file__).resolve().parents[1] / "data" / "imagenet-calib-125"


class Batch(NamedTuple):
    images: np.ndarray  # [N, 3, H, W] float32
    labels: np.ndarray | None  # [N] int64, or None for unlabelled sets
    names: list[str]


def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Dataset(abc.ABC):
    """A finite, ordered set of preprocessed images; ``batches`` streams it."""

    kind: ClassVar[str]

    def __init__(self) -> None:
        self.skipped: list[dict] = []  # {"name", "path", "reason"} per image left out

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, int, int]: ...

    @property
    @abc.abstractmethod
    def has_labels(self) -> bool: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Names of the listed images in iteration order (skipped ones included)."""

    @abc.abstractmethod
    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Yield full batches of ``batch_size`` images, the last one possibly smaller."""

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """sha256 over what determines the tensors; the cache key for reference logits."""

    def describe(self) -> dict:
        return {"kind": self.kind, "count": len(self), "sha256": self.fingerprint,
                "input_shape": list(self.input_shape), "skipped": list(self.skipped)}


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")


class SyntheticDataset(Dataset):
    """``count`` standard-normal tensors; image ``i`` comes from seed ``(seed, i)``, so the tensors do not
    depend on the batch size a runtime uses (reference and candidate may batch differently)."""

    kind = "synthetic"

    def __init__(self, count: int = 32, input_shape: Sequence[int] = (3, 224, 224), seed: int = 0) -> None:
        super().__init__()
        if count < 1:
            raise DataError(f"synthetic data set needs at least one image, got count={count}")
        self.count = int(count)
        self._shape = tuple(int(s) for s in input_shape)
        self.seed = int(seed)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def has_labels(self) -> bool:
        return False

    def __len__(self) -> int:
        return self.count

    def names(self) -> list[str]:
        return [f"synthetic_{i:06d}" for i in range(self.count)]

    def image(self, index: int) -> np.ndarray:
        return np.random.default_rng([self.seed, index]).standard_normal(self._shape, dtype=np.float32)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        _check_batch_size(batch_size)
        for start in range(0, self.count, batch_size):
            idx = range(start, min(start + batch_size, self.count))
            yield Batch(np.stack([self.image(i) for i in idx]), None, [f"synthetic_{i:06d}" for i in idx])

    @property
    def fingerprint(self) -> str:
        return _fingerprint({"synthetic": {"count": self.count, "shape": list(self._shape), "seed": self.seed,
                                           "distribution": "standard_normal", "dtype": "float32"}})

    def describe(self) -> dict:
        return {**super().describe(), "root": None, "seed": self.seed,
                "distribution": "standard_normal", "preprocess": None}


class ImageDataset(Dataset):
    """Image files on disk with optional labels, preprocessed as PaddleClas does (``core.preprocess``).

    Decoded lazily, in ``workers`` processes (``core.image_stream``) when more than one. ``check()`` decodes
    every image once before a runtime is loaded: unreadable files are then known, named and counted before
    any timing, and a set with no readable image is refused.
    """

    MAX_NAMED = 100  # enlarged images named in describe(); all unreadable ones are

    def __init__(self, kind: str, root: Path, samples: list[Sample], preprocess: Preprocess,
                 workers: int = 1, extra: dict | None = None) -> None:
        super().__init__()
        self.kind = kind  # instance attribute: one class serves the three on-disk layouts
        self.root = root
        self.samples = samples
        self.preprocess = preprocess
        self.workers = max(1, int(workers))
        self.decoded = 0  # images decoded so far (successfully or not): shows decoding is lazy
        self.unreadable: dict[str, str] = {}  # name -> reason, found by check()
        self.enlarged: list[str] = []  # images smaller than the crop, enlarged by resize_short
        self._warned: set[str] = set()  # a bad file is reported once, however many passes read the set
        self._extra = extra or {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocess.output_shape

    @property
    def has_labels(self) -> bool:
        return self.samples[0].label is not None

    def __len__(self) -> int:
        return len(self.samples)

    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def _bad(self, sample: Sample, reason: str) -> None:
        if sample.name not in self._warned:
            self._warned.add(sample.name)
            log.warning("skipping unreadable image %s (%s)", sample.path, reason)
        self.skipped.append({"name": sample.name, "path": str(sample.path), "reason": reason})

    def check(self, progress: Callable[[int], None] | None = None) -> int:
        """Decode every image once; returns how many cannot be read (named in ``skipped``).

        DataError when none can: such a set measures nothing. ``progress(n)`` is told of each image.
        """
        self.skipped.clear()
        self.unreadable.clear()
        enlarged = []
        outcomes = checked(self.preprocess, [str(s.path) for s in self.samples], self.workers)
        for sample, outcome in zip(self.samples, outcomes, strict=True):
            self.decoded += 1
            if outcome.reason is not None:
                self.unreadable[sample.name] = outcome.reason
                self._bad(sample, outcome.reason)
            elif outcome.enlarged:
                enlarged.append(sample.name)
            if progress is not None:
                progress(1)
        self.enlarged = enlarged
        if len(self.unreadable) == len(self.samples):
            first = self.skipped[0]
            raise DataError(f"{self.root}: none of the {len(self.samples)} images can be read "
                            f"(first: {first['path']}: {first['reason']})")
        return len(self.unreadable)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        _check_batch_size(batch_size)
        self.skipped = [s for s in self.skipped if s["name"] in self.unreadable]  # check()'s findings stay
        readable = [s for s in self.samples if s.name not in self.unreadable]
        enlarged: list[str] = []
        images: list[np.ndarray] = []
        taken: list[Sample] = []
        yielded = 0
        outcomes = preprocessed(self.preprocess, [str(s.path) for s in readable], self.workers,
                                window=2 * batch_size + 2 * self.workers)
        for sample, outcome in zip(readable, outcomes, strict=True):
            self.decoded += 1
            if outcome.array is None:
                self._bad(sample, outcome.reason)
                continue
            if outcome.enlarged:
                enlarged.append(sample.name)
            images.append(outcome.array)
            taken.append(sample)
            if len(images) == batch_size:
                yielded += len(images)
                yield self._batch(images, taken)
                images, taken = [], []
        if images:
            yielded += len(images)
            yield self._batch(images, taken)
        self.enlarged = enlarged
        if yielded == 0:
            first = self.skipped[0]
            raise DataError(f"{self.root}: none of the {len(self.samples)} images could be read "
                            f"(first: {first['path']}: {first['reason']})")

    def _batch(self, images: list[np.ndarray], samples: list[Sample]) -> Batch:
        labels = np.array([s.label for s in samples], dtype=np.int64) if self.has_labels else None
        return Batch(np.stack(images), labels, [s.name for s in samples])

    @property
    def fingerprint(self) -> str:
        # Names and labels, not file contents: hashing 50,000 images per run would cost more than the run.
        pairs = sorted([s.name, -1 if s.label is None else s.label] for s in self.samples)
        return _fingerprint({"samples": pairs, "preprocess": self.preprocess.to_dict()})

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root), "labelled": self.has_labels,
                "preprocess": self.preprocess.to_dict(), "unreadable_images": len(self.skipped),
                "enlarged": {"count": len(self.enlarged), "names": self.enlarged[:self.MAX_NAMED],
                             "policy": f"short side below the {self.preprocess.crop} crop: enlarged by "
                                       "resize_short, as PaddleClas's ResizeImage does"
                             if self.preprocess.resize_short and self.preprocess.crop else "no resize_short"},
                **self._extra}


def open_dataset(
    source: str | os.PathLike | None = None,
    *,
    preprocess: Preprocess | None = None,
    labels: str | os.PathLike | None = None,
    layout: str = "auto",
    num_classes: int = 1000,
    class_map: str | os.PathLike | None = None,
    count: int = 32,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    workers: int = 1,
) -> Dataset:
    """Open a data set.

    Args:
        source: data folder, list file, ``"synthetic"`` or None (synthetic).
        preprocess: image -> tensor settings (``get_spec(model).preprocess``); required for images.
        labels: PaddleClas list file; its paths are relative to ``source``.
        layout: ``auto`` | ``list`` | ``imagefolder`` | ``folder`` | ``synthetic``.
        num_classes: labels must lie in ``0..num_classes-1``.
        class_map: synset-per-line file giving ImageFolder class indices.
        count, input_shape, seed: synthetic set size, tensor shape (default: the crop) and seed.
        workers: worker processes decoding and preprocessing images (1: in this process).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if source is None or str(source) == "synthetic" or layout == "synthetic":
        if input_shape is None:
            input_shape = preprocess.output_shape if preprocess else (3, 224, 224)
        return SyntheticDataset(count, input_shape, seed)
    if preprocess is None:
        raise ValueError("an image data set needs preprocessing settings (get_spec(model).preprocess)")

    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{path}: data folder not found")
    list_file = find_list_file(path, labels, layout)
    if path.is_file():
        path = path.parent
    if list_file is not None and layout in ("auto", "list"):
        samples = read_list_file(list_file, path, num_classes)
        return ImageDataset("list", path, samples, preprocess, workers, {"list_file": str(list_file)})
    return _unlisted_dataset(path, preprocess, layout, num_classes, class_map, workers)


def _unlisted_dataset(path: Path, preprocess: Preprocess, layout: str, num_classes: int,
                      class_map: str | os.PathLike | None, workers: int) -> ImageDataset:
    """An ImageFolder tree (one folder per class) or a plain folder of images."""
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")
                        and any(is_image(p) for p in d.rglob("*")))
    top_level = [p for p in path.iterdir() if is_image(p)]
    if layout == "imagefolder" or (layout == "auto" and class_dirs and not top_level):
        if not class_dirs:
            raise DataError(f"{path}: no class subfolders with images")
        cmap = Path(class_map).expanduser().resolve() if class_map is not None else None
        samples, extra = image_folder_samples(path, class_dirs, num_classes, cmap)
        return ImageDataset("imagefolder", path, samples, preprocess, workers, extra)
    images = images_below(path)
    if not images:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    named = synset_named_samples(path, images, num_classes)
    if named is not None:
        return ImageDataset("folder", path, named[0], preprocess, workers, named[1])
    samples = [Sample(p.relative_to(path).as_posix(), p, None) for p in images]
    return ImageDataset("folder", path, samples, preprocess, workers)
