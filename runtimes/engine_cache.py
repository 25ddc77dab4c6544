"""A disk cache of compiled engines for runtimes that compile a model before running it (TensorRT today;
OpenVINO blobs or ORT's TensorRT-EP engines could use it the same way).

An entry is keyed by a sha256 over everything that makes a compiled engine valid (model hash, runtime
version, device, precision, shapes, build flags). Entries are written atomically with a JSON description
beside them, so a concurrent reader never sees half an engine and a human can tell what a file is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.cache import cache_root
from core.files import write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)


def engine_key(fields: dict[str, Any]) -> str:
    """sha256 over ``fields`` (JSON, sorted keys): equal fields give equal keys, any change another key."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class EngineCache:
    """Engines of one runtime (``namespace``) under ``root`` (default: the cache root)."""

    namespace: str
    root: Path | None = None

    @property
    def folder(self) -> Path:
        return Path(self.root) if self.root else cache_root() / f"{self.namespace}-engines"

    def path(self, label: str, key: str, suffix: str = ".engine") -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        return self.folder / f"{safe}-{key[:16]}{suffix}"

    def get(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def put(self, path: Path, blob: bytes, description: dict[str, Any]) -> None:
        write_bytes_atomic(path, blob)
        write_json_atomic(path.with_suffix(".json"), description)
        log.info("%s: cached engine %s (%.1f MB)", self.namespace, path, len(blob) / 1e6)
