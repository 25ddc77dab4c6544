"""The JSON manifest written beside each ``model.onnx``: everything needed to trust and reuse the export."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import IO

SCHEMA_VERSION = 1
MANIFEST_NAME = "model.onnx.json"
PACKAGES = ("paddlepaddle", "paddle2onnx", "onnx", "onnxruntime", "polygraphy", "numpy")


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    A reader sees the old file or the whole new one, never half of it; a failure leaves no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


def load_manifest(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read export manifest {path}: {exc}") from None
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: manifest schema {data.get('schema_version')} is not {SCHEMA_VERSION}; re-export"
        )
    return data
