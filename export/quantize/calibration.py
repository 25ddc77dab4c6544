"""Calibration data for int8: real images kept apart from the evaluation images, identified by content.

A calibration set is a folder (a PaddleClas list file in it is used when there is one, else every image below
it), a list file, or a ``.npy`` of preprocessed ``[N, C, H, W]`` inputs (for a model whose manifest records no
image preprocessing). Images are preprocessed as the fp32 manifest records (a brought model's from its
PaddleClas config). The default is the bundled ``data/imagenet-calib-125``: 125 ImageNet images, one per
class 0, 8, 16, ..., none of them among the 44 evaluation images.

- ``--calibration-size N`` takes N images spread evenly over the sorted list (the bundled set is sorted by class,
  so a prefix would be a few classes only); fewer than ``MIN_IMAGES`` is refused, as are a missing or empty set.
- Identity: ``files_sha256`` hashes every selected file's name and content, so a changed image changes the cache
  key of every model calibrated on it.
- Overlap: an image whose content equals one of the evaluation images (the fp32 export's ``reference.images``)
  makes agreement measured on those images optimistic. It is refused unless asked for
  (``--allow-eval-overlap``), and then the manifest (and so every benchmark record of that model) says which.
- Accuracy-aware quantization validates on every ``VALIDATION_EVERY``-th calibration image, held out of
  calibration, against the fp32 model's own top-1: no labels are needed and the evaluation images stay unseen.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.datasets import CALIBRATION_IMAGES
from core.files import sha256_of
from core.listing import DataError, find_list_file, images_below, read_list_file
from core.preprocess import Preprocess
from export.quantize import MIN_IMAGES, PrecisionUsageError

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION = CALIBRATION_IMAGES
VALIDATION_EVERY = 5


class CalibrationError(PrecisionUsageError):
    """Calibration data that cannot be used as given: missing, empty, too small, unreadable, or evaluated."""


@dataclass(frozen=True)
class CalibrationFile:
    name: str  # relative to the set's root (or the .npy's row index)
    path: Path
    sha256: str


@dataclass
class CalibrationSet:
    """The selected calibration images, their identity, and their overlap with the evaluation images."""

    source: Path  # folder, list file or .npy, as resolved
    kind: str  # "list" | "folder" | "npy"
    files: list[CalibrationFile]
    available: int  # images in the source before selection
    overlap: list[str] = field(default_factory=list)  # selected names whose content is an evaluation image
    overlap_allowed: bool = False

    @property
    def size(self) -> int:
        return len(self.files)

    @property
    def files_sha256(self) -> str:
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f"{f.name}\0{f.sha256}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """The manifest's ``reduced_precision.calibration``."""
        return {
            "folder": str(self.source), "kind": self.kind, "size": self.size, "available": self.available,
            "selection": "all" if self.size == self.available else
                         f"{self.size} of {self.available}, evenly spaced over the sorted list",
            "files_sha256": self.files_sha256,
            "overlaps_evaluation": {"count": len(self.overlap), "names": list(self.overlap),
                                    "allowed": self.overlap_allowed},
        }

    def load(self, preprocess: Preprocess | None, input_shape: list[int]) -> np.ndarray:
        """The selected images as float32 ``[N, C, H, W]``, preprocessed as the model expects."""
        if self.kind == "npy":
            array = np.load(self.source, mmap_mode="r")
            rows = [int(f.name) for f in self.files]
            images = np.ascontiguousarray(array[rows], dtype=np.float32)
        else:
            if preprocess is None:
                raise CalibrationError("the fp32 manifest records no image preprocessing (a model brought without "
                                       "--preprocess): export it with --preprocess CONFIG.yaml (its PaddleClas "
                                       "config), or pass --calibration FILE.npy of preprocessed [N, C, H, W] "
                                       "inputs")
            images = np.stack([_decode(f.path, preprocess) for f in self.files])
        expected = tuple(input_shape)
        if images.shape[1:] != expected:
            raise CalibrationError(f"calibration inputs are {list(images.shape[1:])} but the model takes "
                                   f"{list(expected)}")
        if not np.isfinite(images).all():
            raise CalibrationError(f"calibration inputs from {self.source} contain NaN or inf")
        return images


def _decode(path: Path, preprocess: Preprocess) -> np.ndarray:
    try:
        return preprocess(path)
    except Exception as exc:  # any decoder failure: a calibration set must be read whole
        raise CalibrationError(f"cannot decode calibration image {path}: {type(exc).__name__}: {exc}") from None


def _listed(source: Path) -> tuple[str, list[tuple[str, Path]]]:
    """(kind, [(name, path)]) of every image the source names, sorted by name."""
    if source.suffix == ".npy":
        count = np.load(source, mmap_mode="r").shape[0]
        return "npy", [(str(i), source) for i in range(count)]
    try:
        list_file = find_list_file(source, None, "auto")
        if list_file is not None:
            root = source if source.is_dir() else source.parent
            return "list", sorted((s.name, s.path) for s in read_list_file(list_file, root))
    except DataError as exc:
        raise CalibrationError(f"calibration set: {exc}") from None
    if source.is_file():
        raise CalibrationError(f"calibration set {source}: expected a folder of images, a list file or a .npy")
    return "folder", [(p.relative_to(source).as_posix(), p) for p in images_below(source)]


def select(count: int, size: int | None) -> list[int]:
    """Indices of ``size`` items spread evenly over ``count`` (all when ``size`` is None)."""
    if size is None or size >= count:
        return list(range(count))
    return [int(i * count / size) for i in range(size)]


def open_calibration(source: Path | str | None, size: int | None = None) -> CalibrationSet:
    """Check and select a calibration set (no decoding, no overlap check yet); CalibrationError if unusable."""
    path = Path(source or DEFAULT_CALIBRATION).expanduser().resolve()
    if not path.exists():
        raise CalibrationError(f"calibration set {path} not found; pass --calibration DIR|LIST|FILE.npy "
                               f"(default: the bundled {DEFAULT_CALIBRATION.name})")
    if size is not None and (isinstance(size, bool) or size < MIN_IMAGES):
        raise CalibrationError(f"--calibration-size must be at least {MIN_IMAGES}, got {size}")
    kind, listed = _listed(path)
    if not listed:
        raise CalibrationError(f"calibration set {path} holds no images")
    if len(listed) < MIN_IMAGES or (size is not None and len(listed) < size):
        wanted = max(MIN_IMAGES, size or 0)
        raise CalibrationError(f"calibration set {path} has {len(listed)} image(s); {wanted} needed "
                               f"(--calibration-size, at least {MIN_IMAGES})")
    chosen = [listed[i] for i in select(len(listed), size)]
    files = [CalibrationFile(name, p, sha256_of(p) if kind != "npy" else "") for name, p in chosen]
    if kind == "npy":  # one file: its content identifies every row
        digest = sha256_of(path)
        files = [CalibrationFile(f.name, f.path, digest) for f in files]
    return CalibrationSet(path, kind, files, len(listed))


def check_overlap(calibration: CalibrationSet, evaluation_folder: Path | str | None, allow: bool) -> None:
    """Refuse (or, when allowed, record) calibration images that are also evaluation images, by content."""
    calibration.overlap_allowed = allow
    if calibration.kind == "npy" or not evaluation_folder or not Path(evaluation_folder).is_dir():
        return
    try:
        _, evaluated = _listed(Path(evaluation_folder).resolve())
    except CalibrationError:
        return
    evaluated_hashes = {sha256_of(p) for _, p in evaluated}
    calibration.overlap = [f.name for f in calibration.files if f.sha256 in evaluated_hashes]
    if calibration.overlap and not allow:
        shown = ", ".join(calibration.overlap[:3]) + (" ..." if len(calibration.overlap) > 3 else "")
        raise CalibrationError(f"{len(calibration.overlap)} calibration image(s) of {calibration.source} are "
                               f"evaluation images ({shown}): agreement measured on them would be optimistic; "
                               f"calibrate on other images, or pass --allow-eval-overlap (every record of the "
                               f"model will say so)")
    if calibration.overlap:
        log.warning("calibrating on %d evaluation image(s), as asked (--allow-eval-overlap)",
                    len(calibration.overlap))


def split_for_validation(images: np.ndarray, every: int = VALIDATION_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """(calibration part, validation part): every ``every``-th image is held out for validation."""
    held = np.arange(every - 1, len(images), every)
    kept = np.setdiff1d(np.arange(len(images)), held)
    return images[kept], images[held]
