"""Where exports live on disk, and how a folder is built beside its final place and swapped in.

``<root>/<model>/<weights>/opset<N>-b<batch>[-<variant>]/`` holds one export. It is built in a hidden
temporary sibling named after the building process (``.opset17-bdyn.tmp-<pid>-<random>``) and renamed into
place when complete, so a reader never sees half an export. An export stopped by a signal removes its folders
in the signal handler itself (``discard_unfinished``), before it unwinds: paddle can crash (SIGSEGV) when an
exception is raised inside one of its callbacks, and then no ``finally`` would run. A temporary folder whose
process is gone anyway (SIGKILL, a crash, a machine reset) is removed by the next export that looks at the
same parent folder, and by the launcher of an export child once the child has exited.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from core.files import missing_folders, sha256_of
from core.proc import pid_alive
from export.weights import CALIBRATED, SEEDED

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("artifacts")
_TEMP = re.compile(r"^\..+\.(tmp|old)-(\d+)-?.*$")


class LayoutError(ValueError):
    """An export request names an impossible place or batch."""


def parse_batch(value: str | int | None) -> str | int:
    """``"dynamic"`` (also for None) or a positive integer batch."""
    if value in (None, "dynamic"):
        return "dynamic"
    try:
        batch = int(value)
    except (TypeError, ValueError):
        batch = 0
    if batch < 1 or isinstance(value, bool):
        raise LayoutError(f"--batch must be 'dynamic' or a positive integer, got {value!r}")
    return batch


def weights_tag(weights: str | None) -> str:
    """A short, stable folder name for a weights choice (a file is named by its content)."""
    if weights in (None, SEEDED):
        return SEEDED
    if weights in ("official", CALIBRATED):
        return weights
    path = Path(weights).expanduser()
    if not weights.startswith(("http://", "https://")) and path.is_file():
        return "file-" + sha256_of(path)[:12]
    return "url-" + hashlib.sha256(weights.encode()).hexdigest()[:12]


def export_dir(model: str, opset: int, batch: str | int, weights_folder: str, root: Path = DEFAULT_ROOT,
               variant: str = "") -> Path:
    """The folder of one export; ``variant`` names a derived model (``int8-ov``, ``fp16``, ``opt-none``)."""
    batch_tag = "bdyn" if batch == "dynamic" else f"b{int(batch)}"
    name = f"opset{opset}-{batch_tag}" + (f"-{variant}" if variant else "")
    return Path(root) / model / weights_folder / name


def derived_dir(export_folder: Path, variant: str) -> Path:
    """The folder of a model derived from the export in ``export_folder`` (``int8-ov``, ``int8-ort``, ``fp16``):
    its sibling ``<export folder name>-<variant>``, the name ``export_dir`` gives with ``variant``."""
    folder = Path(export_folder)
    return folder.parent / f"{folder.name}-{variant}"


# Folders being built by this process, and the parent folders each one created: what a signal discards.
_UNFINISHED: dict[Path, list[Path]] = {}


def make_work_dir(final: Path) -> Path:
    """A fresh temporary sibling of ``final``, named after this process so a later export can tell whether
    its owner is still alive."""
    created = missing_folders(final.parent)  # up to the artifacts root: a failed first export leaves none
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(final.parent)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-{os.getpid()}-"))
    _UNFINISHED[work] = created
    return work


def discard_unfinished() -> None:
    """Remove every folder this process is still building (from a signal handler, before unwinding)."""
    for work, created in list(_UNFINISHED.items()):
        discard(work, created)


def remove_stale_temp(folder: Path) -> list[Path]:
    """Remove temporary export folders in ``folder`` whose building process no longer runs."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or not entry.is_dir() or pid_alive(int(match.group(2))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            log.warning("removed %s, left by an export that was killed", entry)
            removed.append(entry)
    return removed


def publish(work: Path, final: Path) -> None:
    """Swap the finished folder into place; an old export is removed only after the new one is there."""
    work.chmod(0o755)  # mkdtemp/mkstemp create owner-only entries
    for path in work.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(work, final)
    _UNFINISHED.pop(work, None)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(work: Path, created: list[Path]) -> None:
    """Remove an unfinished build and the empty parent folders it created. It stays listed until it is gone, so
    a discard cut short (a signal while removing) is completed by the next one."""
    shutil.rmtree(work, ignore_errors=True)
    _UNFINISHED.pop(work, None)
    for folder in created:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
