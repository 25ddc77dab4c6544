"""Finding the images of a data set on disk and their labels: PaddleClas list files, ImageFolder trees (class
index from folder names or a class map), plain folders."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
LIST_FILE_NAMES = ("val_list.txt", "test_list.txt", "label_list.txt", "list.txt")
_SYNSET = re.compile(r"n\d{8}")


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


def image_folder_samples(root: Path, class_dirs: list[Path], num_classes: int,
                  class_map: Path | None) -> tuple[list[Sample], dict]:
    names = [d.name for d in class_dirs]
    if class_map is not None:
        mapping = _read_class_map(class_map)
        for name in names:
            if name not in mapping:
                raise DataError(f"{root / name}: class folder not listed in class map {class_map}")
        source = "class_map"
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


