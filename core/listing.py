"""Finding the images of a data set on disk and their labels: PaddleClas list files, ImageFolder trees (class
index from folder names or a class map), plain folders.

ImageNet synset ids (WordNet ids such as ``n01440764``) are mapped to class indices with the bundled list
``data/imagenet1k_synsets.txt`` (the 1000 ImageNet-1k ids in class-index order; see ``data/README.md``):
for ImageFolder trees whose folders are synset ids, and for plain folders whose files are all named
``<wnid>_<anything>.<ext>``, the layout of the 1000-image ImageNet sample sets.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
LIST_FILE_NAMES = ("val_list.txt", "test_list.txt", "label_list.txt", "list.txt")
_SYNSET = re.compile(r"n\d{8}")
_SYNSET_FILE_NAME = re.compile(r"^(n\d{8})_")
SYNSETS_FILE = Path(__file__).resolve().parents[1] / "data" / "imagenet1k_synsets.txt"


class DataError(ValueError):
    """The data set cannot be used as given; the message names the file (and line) at fault."""


@dataclass(frozen=True)
class Sample:
    name: str  # path relative to the data root, POSIX separators: stable across machines
    path: Path
    label: int | None


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def images_below(folder: Path) -> list[Path]:
    # Hidden folders (.ipynb_checkpoints, .git) hold copies or junk, never data.
    images = (p for p in folder.rglob("*")
              if is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return sorted(images, key=lambda p: p.relative_to(folder).as_posix())


def _check_label(label: int, num_classes: int, where: str) -> None:
    if not 0 <= label < num_classes:
        raise DataError(f"{where}: label {label} outside 0..{num_classes - 1}")


def read_list_file(list_file: Path, root: Path, num_classes: int = 1000) -> list[Sample]:
    """Parse a PaddleClas list file (``relative/path label`` per line; blank lines ignored)."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{list_file}: cannot read list file ({exc})") from None
    samples = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{list_file}:{lineno}"
        parts = line.strip().rsplit(maxsplit=1)  # rsplit: a path may contain spaces, the label cannot
        if len(parts) != 2 or not re.fullmatch(r"[+-]?\d+", parts[1]):
            raise DataError(f"{where}: malformed line {line.strip()!r}; expected '<relative/path> <label>'")
        name, label = parts[0], int(parts[1])
        _check_label(label, num_classes, where)
        path = root / name
        if not path.is_file():
            raise DataError(f"{where}: listed image {name} not found under {root}")
        samples.append(Sample(Path(name).as_posix(), path, label))
    if not samples:
        raise DataError(f"{list_file}: no entries")
    return samples


def _read_class_map(class_map: Path) -> dict[str, int]:
    try:
        lines = class_map.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{class_map}: cannot read class map ({exc})") from None
    names = [line.split()[0] for line in lines if line.strip()]
    return {name: index for index, name in enumerate(names)}


@functools.lru_cache(maxsize=1)
def imagenet_synsets() -> dict[str, int]:
    """ImageNet-1k synset id -> class index, from the bundled list."""
    return _read_class_map(SYNSETS_FILE)


def _imagenet_labels(num_classes: int) -> bool:
    """Do this model's class indices follow ImageNet-1k (so synset ids can be mapped to them)?"""
    return num_classes == len(imagenet_synsets())


def synset_named_samples(root: Path, images: list[Path], num_classes: int) -> tuple[list[Sample], dict] | None:
    """Samples labelled from ``<wnid>_*`` file names when every image is so named, else None."""
    matches = [_SYNSET_FILE_NAME.match(p.name) for p in images]
    if not images or not any(matches):
        return None
    if not all(matches):
        odd = next(p for p, m in zip(images, matches, strict=True) if not m)
        log.warning("%s: %d of %d images are named <wnid>_..., but not %s: no labels taken from file names",
                    root, sum(map(bool, matches)), len(images), odd.name)
        return None
    if not _imagenet_labels(num_classes):
        log.warning("%s: images named after ImageNet synsets, but the model has %d classes, not 1000: "
                    "no labels taken from file names", root, num_classes)
        return None
    index = imagenet_synsets()
    for path, match in zip(images, matches, strict=True):
        if match.group(1) not in index:
            raise DataError(f"{path}: {match.group(1)} is not one of the 1000 ImageNet-1k synsets "
                            f"({SYNSETS_FILE}); pass labels=FILE (a list file) instead")
    samples = [Sample(p.relative_to(root).as_posix(), p, index[m.group(1)])
               for p, m in zip(images, matches, strict=True)]
    return samples, {"label_source": "synset_file_names", "class_list": SYNSETS_FILE.name}


def image_folder_samples(root: Path, class_dirs: list[Path], num_classes: int,
                  class_map: Path | None) -> tuple[list[Sample], dict]:
    names = [d.name for d in class_dirs]
    if class_map is None and _imagenet_labels(num_classes) and all(n in imagenet_synsets() for n in names):
        class_map = SYNSETS_FILE  # synset folders: the bundled ImageNet-1k order, however many are present
    if class_map is not None:
        mapping = _read_class_map(class_map)
        for name in names:
            if name not in mapping:
                raise DataError(f"{root / name}: class folder not listed in class map {class_map}")
        source = "imagenet1k_synsets" if class_map == SYNSETS_FILE else "class_map"
    elif all(re.fullmatch(r"\d+", n) for n in names):
        mapping, source = {n: int(n) for n in names}, "folder_name"
    else:
        mapping, source = {n: i for i, n in enumerate(names)}, "sorted_order"
        if all(_SYNSET.fullmatch(n) for n in names) and len(names) != num_classes:
            log.warning("%s: %d synset folders, not %d: labels are ranks in this folder's sorted order, "
                        "not ImageNet indices; pass a class map to fix them", root, len(names), num_classes)
    samples = []
    for class_dir in class_dirs:
        label = mapping[class_dir.name]
        _check_label(label, num_classes, f"{class_dir}")
        samples.extend(Sample(p.relative_to(root).as_posix(), p, label) for p in images_below(class_dir))
    return samples, {"label_source": source, "classes": len(class_dirs)}


def find_list_file(path: Path, labels: str | os.PathLike | None, layout: str) -> Path | None:
    """The PaddleClas list file: ``labels``, ``path`` itself when it is a file, or one in the folder."""
    list_file = Path(labels).expanduser().resolve() if labels is not None else None
    if path.is_file():
        list_file = list_file or path
    if list_file is not None and not list_file.is_file():
        raise DataError(f"{list_file}: list file not found")
    if list_file is None and layout in ("auto", "list") and path.is_dir():
        list_file = next((path / n for n in LIST_FILE_NAMES if (path / n).is_file()), None)
        if list_file is None and layout == "list":
            raise DataError(f"{path}: no list file ({', '.join(LIST_FILE_NAMES)}); pass labels=FILE")
    return list_file


