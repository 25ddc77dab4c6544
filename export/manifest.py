"""The JSON manifest written beside each ``model.onnx``: everything needed to trust and reuse the export."""

from __future__ import annotations

import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

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


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
