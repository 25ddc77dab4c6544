"""An export on its way to the nodes of a cluster sweep: packed once by the driver into Ray's object store,
unpacked once per node into the node's cache, every file checked by sha256 on arrival.

A bundle is the export's folder (model, manifest, Paddle files, stored reference logits) and, when the sweep's
drift pass reads the export's own images, that image folder too: the manifest names it by a path on the driver,
which a node may not have, and a missing folder would quietly turn the drift pass synthetic. The node's copy of
the manifest then names the node's copy of the images.

The same way, with ``pack_files``, an accuracy pass ships a shard's images (``--ship-images``, ``shards``).

Node cache: ``$PADDLE_ONNX_BENCH_NODE_CACHE`` or ``<tmp>/paddle-onnx-bench-cluster``, one folder per bundle
digest (delete it to reclaim the space). A node never exports: it runs what the driver shipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.files import write_json_atomic

CACHE_ENV = "PADDLE_ONNX_BENCH_NODE_CACHE"
IMAGES_DIR = "reference-images"
COMPLETE = ".complete"  # written last: a folder without it is unfinished


class ArtifactCorrupt(RuntimeError):
    """A shipped file did not arrive as the driver packed it."""


@dataclass(frozen=True)
class Bundle:
    digest: str  # of the files' names, sizes and sha256: the node's cache folder
    manifest: str  # the manifest's path inside the bundle ("": a bundle of other files, e.g. a shard's images)
    files: tuple[tuple[str, str, int], ...]  # (path inside the bundle, sha256, bytes)
    data: list  # [ObjectRef of {path: bytes}]: in a list, so a task gets the reference and fetches only if needed

    @property
    def size(self) -> int:
        return sum(size for _, _, size in self.files)


def node_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "paddle-onnx-bench-cluster")


def reference_images(manifest_path: Path) -> Path | None:
    """The image folder the export stored Paddle's logits for, when it is there."""
    reference = json.loads(manifest_path.read_text()).get("reference") or {}
    folder = (reference.get("images") or {}).get("folder")
    return Path(folder) if folder and Path(folder).is_dir() else None


def pack(manifest_path: Path, with_images: bool) -> Bundle:
    """Driver side: read the export's files (and its reference images when ``with_images``) into the object store."""
    folder = manifest_path.parent
    contents = _files_of(folder, "")
    images = reference_images(manifest_path) if with_images else None
    if images is not None:
        contents.update(_files_of(images, IMAGES_DIR + "/"))
    return pack_files(contents, manifest_path.name)


def pack_files(contents: dict[str, bytes], entry: str = "") -> Bundle:
    """Driver side: files by their path inside the bundle, into the object store; ``entry`` is the file whose
    path ``unpack`` returns on the node ("": the bundle's folder)."""
    import ray

    files = tuple((name, hashlib.sha256(data).hexdigest(), len(data)) for name, data in sorted(contents.items()))
    digest = hashlib.sha256(json.dumps([entry, files]).encode()).hexdigest()
    return Bundle(digest, entry, files, [ray.put(contents)])


def _files_of(folder: Path, prefix: str) -> dict[str, bytes]:
    return {prefix + path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def unpack(bundle: Bundle, cache: Path) -> tuple[Path, str]:
    """Node side: the bundle's manifest in this node's cache, and how it got there (``object store``, or ``node
    cache`` when an earlier cell on this machine unpacked it). ``ArtifactCorrupt`` when a file does not match."""
    done = cache / bundle.digest
    if _complete(done, bundle):
        return done / bundle.manifest, "node cache"
    import ray

    return write_verified(bundle, ray.get(bundle.data[0]), cache), "object store"


def write_verified(bundle: Bundle, contents: dict[str, bytes], cache: Path) -> Path:
    """Write the bundle's files into ``cache/<digest>``, each checked against the sha256 the driver packed, all
    or nothing (a folder is renamed into place once complete); the manifest's path there."""
    done = cache / bundle.digest
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{bundle.digest[:16]}-", dir=cache))
    try:
        for name, sha256, size in bundle.files:
            data = contents.get(name, b"")
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
                raise ArtifactCorrupt(f"{name} of bundle {bundle.digest[:12]} arrived with {len(data)} bytes and "
                                      f"another sha256 than the driver packed ({size} bytes, {sha256[:12]}...)")
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if (work / IMAGES_DIR).is_dir():
            _name_images(work / bundle.manifest, done / IMAGES_DIR)
        (work / COMPLETE).write_text(bundle.digest)
        try:
            os.rename(work, done)
        except OSError:  # another process of this machine unpacked it first
            if not _complete(done, bundle):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done / bundle.manifest


def _name_images(manifest: Path, folder: Path) -> None:
    """Point the node's copy of the manifest at the node's copy of the images (``folder``, where they end up)."""
    data = json.loads(manifest.read_text())
    data["reference"]["images"]["folder"] = str(folder)
    write_json_atomic(manifest, data)


def _complete(folder: Path, bundle: Bundle) -> bool:
    """Unpacked in full: the marker is there and every file has its size (the cell checks the model's sha256; the
    manifest's size changes when it is pointed at the node's images)."""
    try:
        if (folder / COMPLETE).read_text() != bundle.digest:
            return False
        return all((folder / name).stat().st_size == size for name, _, size in bundle.files
                   if name != bundle.manifest)
    except OSError:
        return False
